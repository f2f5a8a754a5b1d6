//! Free-slot computation: weekly rules + exceptions − busy time, on a grid.
//!
//! Pure functions with an explicit `now`, so every DST corner can be unit
//! tested. The rules are wall-clock times in the clinic's zone; they become UTC
//! instants here and nowhere else:
//!
//! * A window that starts in a spring-forward gap starts when the gap ends
//!   (02:30 in New York on the spring change is 03:00 EDT), the way RFC 9557 /
//!   Temporal's "compatible" disambiguation does.
//! * An ambiguous wall-clock time at fall-back is read as the *earlier* instant
//!   for a window's start and the *later* instant for its end, so a doctor who
//!   works 00:00–03:00 on that night really works four hours.
//! * Slots are laid on a grid of real elapsed time from the window's start, so
//!   a 30-minute visit is 30 minutes long whatever the wall clock does.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::domain::{DoctorSchedule, ExceptionKind, Slot, TimeRange, VisitType};

/// Resolves a local wall-clock time to an instant.
///
/// `later` picks the second of two instants at a fall-back overlap; a time in
/// a spring-forward gap is shifted forward by the gap's length.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime, later: bool) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => {
            if later {
                b.with_timezone(&Utc)
            } else {
                a.with_timezone(&Utc)
            }
        }
        LocalResult::None => {
            // In a gap: read the wall time with the offset in force just
            // before the gap. Transitions are never 12 hours apart, so the
            // offset twelve hours earlier is the one before this gap.
            // Checked: a date at the edge of chrono's range must not panic.
            let Some(before) = local.checked_sub_signed(Duration::hours(12)) else {
                return local.and_utc();
            };
            let offset = match tz.from_local_datetime(&before) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => *t.offset(),
                LocalResult::None => tz.offset_from_utc_datetime(&before),
            };
            let secs = chrono::Offset::fix(&offset).local_minus_utc();
            local
                .checked_sub_signed(Duration::seconds(i64::from(secs)))
                .unwrap_or(local)
                .and_utc()
        }
    }
}

/// The doctor's working windows overlapping `range`, merged and sorted.
///
/// Windows are not clipped to `range`: the slot grid is anchored on a window's
/// real start, so asking for a narrower range never shifts the grid.
pub fn working_windows(schedule: &DoctorSchedule, range: TimeRange) -> Vec<TimeRange> {
    let tz = schedule.time_zone;
    // One day of margin on each side covers windows that cross midnight and
    // zones far from UTC.
    let first = range.start().with_timezone(&tz).date_naive() - Duration::days(1);
    let last = range.end().with_timezone(&tz).date_naive() + Duration::days(1);

    let mut windows: Vec<TimeRange> = Vec::new();
    let mut day = first;
    while day <= last {
        for rule in schedule.rules.iter().filter(|r| r.weekday == day.weekday()) {
            if rule.valid_from.is_some_and(|d| day < d) || rule.valid_until.is_some_and(|d| day > d)
            {
                continue;
            }
            let end_day: NaiveDate = if rule.end <= rule.start {
                day + Duration::days(1)
            } else {
                day
            };
            let start = local_to_utc(tz, day.and_time(rule.start), false);
            let end = local_to_utc(tz, end_day.and_time(rule.end), true);
            if let Ok(w) = TimeRange::new(start, end) {
                windows.push(w);
            }
        }
        day += Duration::days(1);
    }
    windows.extend(
        schedule
            .exceptions
            .iter()
            .filter(|e| e.kind == ExceptionKind::ExtraHours)
            .map(|e| e.range),
    );
    let merged = merge(windows);
    let off: Vec<TimeRange> = schedule
        .exceptions
        .iter()
        .filter(|e| e.kind == ExceptionKind::TimeOff)
        .map(|e| e.range)
        .collect();
    subtract(merged, &off)
        .into_iter()
        .filter(|w| w.overlaps(&range))
        .collect()
}

fn merge(mut ranges: Vec<TimeRange>) -> Vec<TimeRange> {
    ranges.sort_by_key(|r| r.start());
    let mut out: Vec<TimeRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start() <= last.end() => {
                if r.end() > last.end() {
                    *last = TimeRange::new(last.start(), r.end()).unwrap_or(*last);
                }
            }
            _ => out.push(r),
        }
    }
    out
}

fn subtract(windows: Vec<TimeRange>, holes: &[TimeRange]) -> Vec<TimeRange> {
    let mut out = windows;
    for hole in holes {
        let mut next = Vec::with_capacity(out.len() + 1);
        for w in out {
            if !w.overlaps(hole) {
                next.push(w);
                continue;
            }
            if let Ok(left) = TimeRange::new(w.start(), hole.start()) {
                next.push(left);
            }
            if let Ok(right) = TimeRange::new(hole.end(), w.end()) {
                next.push(right);
            }
        }
        out = next;
    }
    out
}

/// When a slot may be offered: not in the past (plus a minimum notice) and
/// not beyond the booking horizon.
#[derive(Debug, Clone, Copy)]
pub struct Bookable {
    /// Current instant.
    pub now: DateTime<Utc>,
    /// Earliest start offered, as a distance from `now`.
    pub min_notice: Duration,
}

impl Bookable {
    fn allows(&self, schedule: &DoctorSchedule, start: DateTime<Utc>) -> bool {
        start >= self.now + self.min_notice && start < self.now + schedule.booking_horizon
    }
}

/// Every slot of `visit` whose start lies in `range`, ignoring busy time.
pub fn candidate_slots(
    schedule: &DoctorSchedule,
    visit: &VisitType,
    range: TimeRange,
    bookable: Bookable,
) -> Vec<Slot> {
    let step = visit.step();
    let lead = Duration::minutes(i64::from(visit.buffer_before_minutes));
    let mut out = Vec::new();
    for window in working_windows(schedule, range) {
        // The first visit starts after its own preparation buffer.
        let mut start = window.start() + lead;
        while visit.block_at(start).end() <= window.end() {
            if start >= range.end() {
                break;
            }
            if start >= range.start() && bookable.allows(schedule, start) {
                out.push(visit.visit_at(start).into());
            }
            start += step;
        }
    }
    out
}

/// Whether `start` is one of the slots the schedule offers for `visit`.
pub fn is_offered(
    schedule: &DoctorSchedule,
    visit: &VisitType,
    start: DateTime<Utc>,
    bookable: Bookable,
) -> bool {
    let Ok(probe) = TimeRange::new(start, start + Duration::seconds(1)) else {
        return false;
    };
    candidate_slots(schedule, visit, probe, bookable)
        .iter()
        .any(|s| s.start == start)
}

/// The doctor's busy time: non-overlapping blocks indexed by start.
///
/// Because active blocks never overlap (the calendar only admits claims that
/// fit, and Postgres enforces the same), ends are sorted like starts and an
/// overlap test only walks back from the probe's end until blocks end before
/// the probe starts: O(log n) for the common case.
#[derive(Debug, Default, Clone)]
pub struct BusyIndex<K: Copy + Eq> {
    blocks: BTreeMap<DateTime<Utc>, (DateTime<Utc>, K)>,
    /// Bumped on every change, so answers derived from the index can be
    /// cached until it changes.
    version: u64,
}

impl<K: Copy + Eq> BusyIndex<K> {
    /// An empty index.
    pub fn new() -> Self {
        Self {
            blocks: BTreeMap::new(),
            version: 0,
        }
    }

    /// Changes with every insert, remove and clear.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Marks `range` busy on behalf of `key`.
    pub fn insert(&mut self, range: TimeRange, key: K) {
        self.version += 1;
        self.blocks.insert(range.start(), (range.end(), key));
    }

    /// Frees `range` if `key` holds it.
    pub fn remove(&mut self, range: TimeRange, key: K) {
        if self
            .blocks
            .get(&range.start())
            .is_some_and(|(end, k)| *end == range.end() && *k == key)
        {
            self.version += 1;
            self.blocks.remove(&range.start());
        }
    }

    /// The first block overlapping `range` that is not owned by `except`.
    pub fn conflict(&self, range: TimeRange, except: Option<K>) -> Option<K> {
        self.blocks
            .range(..range.end())
            .rev()
            .take_while(|(_, (end, _))| *end > range.start())
            .map(|(_, (_, k))| *k)
            .find(|k| Some(*k) != except)
    }

    /// Number of busy blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether nothing is busy.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.version += 1;
        self.blocks.clear();
    }
}

/// Free slots of `visit` in `range`: candidates whose block is not busy.
pub fn free_slots<K: Copy + Eq>(
    schedule: &DoctorSchedule,
    visit: &VisitType,
    range: TimeRange,
    busy: &BusyIndex<K>,
    bookable: Bookable,
) -> Vec<Slot> {
    candidate_slots(schedule, visit, range, bookable)
        .into_iter()
        .filter(|s| busy.conflict(visit.block_at(s.start), None).is_none())
        .collect()
}

/// Up to `n` free slots nearest to `wanted` (within a week either side),
/// nearest first, earlier first on ties.
///
/// Searches outward (half a day, two days, a week) and stops as soon as the
/// `n`-th nearest lies inside the searched radius: anything further out is
/// further away. A refused claim usually costs one small window, not a
/// fortnight of slots.
pub fn nearest_free<K: Copy + Eq>(
    schedule: &DoctorSchedule,
    visit: &VisitType,
    wanted: DateTime<Utc>,
    busy: &BusyIndex<K>,
    bookable: Bookable,
    n: usize,
) -> Vec<Slot> {
    let radii = [Duration::hours(12), Duration::days(2), Duration::days(7)];
    let mut free = Vec::new();
    for (i, radius) in radii.iter().enumerate() {
        let Ok(range) = TimeRange::new(wanted - *radius, wanted + *radius) else {
            return Vec::new();
        };
        free = free_slots(schedule, visit, range, busy, bookable);
        free.retain(|s| s.start != wanted);
        free.sort_by_key(|s| ((s.start - wanted).num_seconds().abs(), s.start));
        let settled = free
            .get(n.saturating_sub(1))
            .is_some_and(|s| (s.start - wanted).abs() <= *radius);
        if settled || i == radii.len() - 1 {
            break;
        }
    }
    free.truncate(n);
    free
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveTime, Weekday};

    use super::*;
    use crate::domain::{
        AvailabilityException, AvailabilityRule, ClinicId, DoctorId, VisitType, VisitTypeId,
    };

    fn visit(minutes: i32, before: i32, after: i32) -> VisitType {
        VisitType {
            id: VisitTypeId::new(),
            name: "visit".into(),
            duration_minutes: minutes,
            buffer_before_minutes: before,
            buffer_after_minutes: after,
            fee_cents: 0,
            currency: "USD".into(),
            is_default: true,
        }
    }

    fn rule(weekday: Weekday, start: &str, end: &str) -> AvailabilityRule {
        AvailabilityRule {
            weekday,
            start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
            end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
            valid_from: None,
            valid_until: None,
        }
    }

    fn schedule(tz: &str, rules: Vec<AvailabilityRule>) -> DoctorSchedule {
        DoctorSchedule {
            doctor_id: DoctorId::new(),
            clinic_id: ClinicId::new(),
            time_zone: tz.parse().unwrap(),
            rules,
            exceptions: vec![],
            visit_types: vec![visit(30, 0, 0)],
            booking_horizon: Duration::days(36_500),
            cancellation_cutoff: Duration::hours(24),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn range(a: &str, b: &str) -> TimeRange {
        TimeRange::new(utc(a), utc(b)).unwrap()
    }

    /// A `now` long before every test date, so nothing is "in the past".
    fn early() -> Bookable {
        Bookable {
            now: utc("2000-01-01T00:00:00Z"),
            min_notice: Duration::zero(),
        }
    }

    fn starts(slots: &[Slot]) -> Vec<String> {
        slots
            .iter()
            .map(|s| s.start.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect()
    }

    #[test]
    fn new_york_spring_forward_skips_the_missing_hour() {
        // 2026-03-08: clocks jump from 02:00 EST to 03:00 EDT.
        let s = schedule(
            "America/New_York",
            vec![rule(Weekday::Sun, "01:00", "04:00")],
        );
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"),
            early(),
        );
        // 01:00 EST = 06:00Z; 04:00 EDT = 08:00Z: two real hours, four slots.
        assert_eq!(
            starts(&slots),
            [
                "2026-03-08T06:00:00Z",
                "2026-03-08T06:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-08T07:30:00Z"
            ]
        );
        // Every visit lasts exactly 30 real minutes.
        assert!(
            slots
                .iter()
                .all(|s| s.end - s.start == Duration::minutes(30))
        );
    }

    #[test]
    fn window_starting_inside_the_gap_starts_when_the_gap_ends() {
        let s = schedule(
            "America/New_York",
            vec![rule(Weekday::Sun, "02:30", "04:00")],
        );
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z"),
            early(),
        );
        // 02:30 does not exist; the window opens at 03:30 EDT (07:30Z).
        assert_eq!(starts(&slots), ["2026-03-08T07:30:00Z"]);
    }

    #[test]
    fn new_york_fall_back_works_the_repeated_hour_twice() {
        // 2026-11-01: clocks fall back from 02:00 EDT to 01:00 EST.
        let s = schedule(
            "America/New_York",
            vec![rule(Weekday::Sun, "00:00", "03:00")],
        );
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"),
            early(),
        );
        // 00:00 EDT = 04:00Z to 03:00 EST = 08:00Z: four real hours.
        assert_eq!(slots.len(), 8);
        assert_eq!(slots[0].start, utc("2026-11-01T04:00:00Z"));
        assert_eq!(slots[7].start, utc("2026-11-01T07:30:00Z"));
        let locals: Vec<String> = slots
            .iter()
            .map(|s| {
                s.start
                    .with_timezone(&s_tz())
                    .format("%H:%M %Z")
                    .to_string()
            })
            .collect();
        assert_eq!(
            locals,
            [
                "00:00 EDT",
                "00:30 EDT",
                "01:00 EDT",
                "01:30 EDT",
                "01:00 EST",
                "01:30 EST",
                "02:00 EST",
                "02:30 EST"
            ]
        );
    }

    fn s_tz() -> Tz {
        "America/New_York".parse().unwrap()
    }

    #[test]
    fn berlin_spring_forward_and_fall_back() {
        // Europe/Berlin: 2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 CEST → 02:00 CET.
        let s = schedule("Europe/Berlin", vec![rule(Weekday::Sun, "01:00", "05:00")]);
        let spring = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z"),
            early(),
        );
        // 01:00 CET = 00:00Z to 05:00 CEST = 03:00Z: three real hours.
        assert_eq!(spring.len(), 6);
        assert_eq!(spring[0].start, utc("2026-03-29T00:00:00Z"));
        assert_eq!(spring[5].start, utc("2026-03-29T02:30:00Z"));

        let autumn = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-10-24T00:00:00Z", "2026-10-26T00:00:00Z"),
            early(),
        );
        // 01:00 CEST = 23:00Z (Saturday) to 05:00 CET = 04:00Z: five real hours.
        assert_eq!(autumn.len(), 10);
        assert_eq!(autumn[0].start, utc("2026-10-24T23:00:00Z"));
        assert_eq!(autumn[9].start, utc("2026-10-25T03:30:00Z"));
    }

    #[test]
    fn weekday_is_read_in_the_clinic_zone_not_utc() {
        // Monday 08:00 in Berlin is still Monday; in UTC it is 07:00 Monday.
        let s = schedule("Europe/Berlin", vec![rule(Weekday::Mon, "08:00", "09:00")]);
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-29T00:00:00Z", "2026-12-02T00:00:00Z"),
            early(),
        );
        assert_eq!(
            starts(&slots),
            ["2026-11-30T07:00:00Z", "2026-11-30T07:30:00Z"]
        );
    }

    #[test]
    fn kolkata_half_hour_offset() {
        // Asia/Kolkata is UTC+05:30 all year.
        let s = schedule("Asia/Kolkata", vec![rule(Weekday::Wed, "09:00", "10:00")]);
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"),
            early(),
        );
        assert_eq!(
            starts(&slots),
            ["2026-11-25T03:30:00Z", "2026-11-25T04:00:00Z"]
        );
    }

    #[test]
    fn night_shift_straddles_midnight() {
        // Friday 22:00 → Saturday 02:00 local, in Berlin (UTC+1 in winter).
        let s = schedule("Europe/Berlin", vec![rule(Weekday::Fri, "22:00", "02:00")]);
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-27T00:00:00Z", "2026-11-29T00:00:00Z"),
            early(),
        );
        assert_eq!(slots.len(), 8);
        assert_eq!(slots[0].start, utc("2026-11-27T21:00:00Z"));
        assert_eq!(slots[7].start, utc("2026-11-28T00:30:00Z"));
        // Asking only for Saturday still finds the part after midnight, on the
        // same grid as the window that began on Friday.
        let saturday = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-27T23:00:00Z", "2026-11-28T23:00:00Z"),
            early(),
        );
        assert_eq!(
            starts(&saturday),
            [
                "2026-11-27T23:00:00Z",
                "2026-11-27T23:30:00Z",
                "2026-11-28T00:00:00Z",
                "2026-11-28T00:30:00Z"
            ]
        );
    }

    #[test]
    fn buffers_space_the_grid_and_fit_inside_the_window() {
        let mut s = schedule("UTC", vec![rule(Weekday::Wed, "09:00", "11:00")]);
        s.visit_types = vec![visit(30, 10, 5)];
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z"),
            early(),
        );
        // Blocks of 45 minutes starting at 09:00: visits at 09:10, 09:55;
        // a third block would end at 11:15, past closing.
        assert_eq!(
            starts(&slots),
            ["2026-11-25T09:10:00Z", "2026-11-25T09:55:00Z"]
        );
    }

    #[test]
    fn exceptions_remove_and_add_time() {
        let mut s = schedule("UTC", vec![rule(Weekday::Wed, "09:00", "11:00")]);
        s.exceptions = vec![
            AvailabilityException {
                kind: ExceptionKind::TimeOff,
                range: range("2026-11-25T09:30:00Z", "2026-11-25T10:30:00Z"),
            },
            AvailabilityException {
                kind: ExceptionKind::ExtraHours,
                range: range("2026-11-26T14:00:00Z", "2026-11-26T15:00:00Z"),
            },
        ];
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-25T00:00:00Z", "2026-11-27T00:00:00Z"),
            early(),
        );
        assert_eq!(
            starts(&slots),
            [
                "2026-11-25T09:00:00Z",
                "2026-11-25T10:30:00Z",
                "2026-11-26T14:00:00Z",
                "2026-11-26T14:30:00Z"
            ]
        );
    }

    #[test]
    fn never_in_the_past_nor_beyond_the_horizon() {
        let mut s = schedule("UTC", vec![]);
        for d in [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ] {
            s.rules.push(rule(d, "09:00", "10:00"));
        }
        s.booking_horizon = Duration::days(2);
        let now = Bookable {
            now: utc("2026-11-25T09:15:00Z"),
            min_notice: Duration::zero(),
        };
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-20T00:00:00Z", "2026-12-20T00:00:00Z"),
            now,
        );
        assert_eq!(
            starts(&slots),
            [
                "2026-11-25T09:30:00Z",
                "2026-11-26T09:00:00Z",
                "2026-11-26T09:30:00Z",
                "2026-11-27T09:00:00Z"
            ]
        );
    }

    #[test]
    fn rule_validity_dates_are_honoured() {
        let mut r = rule(Weekday::Wed, "09:00", "10:00");
        r.valid_from = NaiveDate::from_ymd_opt(2026, 12, 1);
        let s = schedule("UTC", vec![r]);
        let slots = candidate_slots(
            &s,
            &s.visit_types[0],
            range("2026-11-25T00:00:00Z", "2026-12-03T00:00:00Z"),
            early(),
        );
        assert_eq!(
            starts(&slots),
            ["2026-12-02T09:00:00Z", "2026-12-02T09:30:00Z"]
        );
    }

    #[test]
    fn busy_blocks_hide_slots_and_alternatives_are_nearest() {
        let s = schedule("UTC", vec![rule(Weekday::Wed, "09:00", "12:00")]);
        let vt = &s.visit_types[0];
        let mut busy = BusyIndex::new();
        busy.insert(vt.block_at(utc("2026-11-25T10:00:00Z")), 1u32);
        busy.insert(vt.block_at(utc("2026-11-25T10:30:00Z")), 2u32);
        let r = range("2026-11-25T00:00:00Z", "2026-11-26T00:00:00Z");
        let free = free_slots(&s, vt, r, &busy, early());
        assert_eq!(free.len(), 4);
        let alt = nearest_free(&s, vt, utc("2026-11-25T10:00:00Z"), &busy, early(), 3);
        assert_eq!(
            starts(&alt),
            [
                "2026-11-25T09:30:00Z",
                "2026-11-25T09:00:00Z",
                "2026-11-25T11:00:00Z"
            ]
        );
        assert!(is_offered(&s, vt, utc("2026-11-25T10:30:00Z"), early()));
        assert!(!is_offered(&s, vt, utc("2026-11-25T10:15:00Z"), early()));
    }

    #[test]
    fn outward_search_finds_the_same_alternatives_as_a_full_scan() {
        let mut s = schedule("UTC", vec![]);
        for d in [Weekday::Mon, Weekday::Wed, Weekday::Fri] {
            s.rules.push(rule(d, "09:00", "10:00"));
        }
        let vt = s.visit_types[0].clone();
        let mut busy = BusyIndex::new();
        // Wednesday fully booked: the nearest free slots are days away.
        for h in ["2026-11-25T09:00:00Z", "2026-11-25T09:30:00Z"] {
            busy.insert(vt.block_at(utc(h)), 1u32);
        }
        let wanted = utc("2026-11-25T09:00:00Z");
        let alt = nearest_free(&s, &vt, wanted, &busy, early(), 3);
        let mut full = free_slots(
            &s,
            &vt,
            range("2026-11-18T09:00:00Z", "2026-12-02T09:00:00Z"),
            &busy,
            early(),
        );
        full.retain(|x| x.start != wanted);
        full.sort_by_key(|x| ((x.start - wanted).num_seconds().abs(), x.start));
        full.truncate(3);
        assert_eq!(alt, full);
        assert_eq!(
            starts(&alt),
            [
                "2026-11-23T09:30:00Z",
                "2026-11-23T09:00:00Z",
                "2026-11-27T09:00:00Z"
            ]
        );
    }

    #[test]
    fn busy_index_conflicts() {
        let mut busy = BusyIndex::new();
        let a = range("2026-11-25T09:00:00Z", "2026-11-25T10:00:00Z");
        let b = range("2026-11-25T11:00:00Z", "2026-11-25T12:00:00Z");
        busy.insert(a, 'a');
        busy.insert(b, 'b');
        let probe = |x: &str, y: &str| busy.conflict(range(x, y), None);
        assert_eq!(probe("2026-11-25T08:00:00Z", "2026-11-25T09:00:00Z"), None);
        assert_eq!(
            probe("2026-11-25T08:00:00Z", "2026-11-25T09:00:01Z"),
            Some('a')
        );
        assert_eq!(probe("2026-11-25T10:00:00Z", "2026-11-25T11:00:00Z"), None);
        assert_eq!(
            probe("2026-11-25T09:59:00Z", "2026-11-25T13:00:00Z"),
            Some('b')
        );
        assert_eq!(busy.conflict(a, Some('a')), None, "own block ignored");
        busy.remove(a, 'b');
        assert_eq!(busy.len(), 2, "only the owner frees a block");
        busy.remove(a, 'a');
        assert_eq!(busy.len(), 1);
    }
}
