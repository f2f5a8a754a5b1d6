//! `GET /api/v1/doctors/{id}/stats`: the numbers behind the provider page's
//! charts — bookings per day, no-show rate per week, and how full each hour
//! of the day was — over the last few weeks.
//!
//! The arithmetic is a pure function of the appointments, the opening
//! windows and the clinic's time zone ([`compute`]), so it is unit-tested
//! without a database; the handler only loads those inputs.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc};
use chrono_tz::Tz;
use docspot_actors::{
    domain::{Appointment, AppointmentStatus, TimeRange, parse_time_zone},
    slots::{local_to_utc, working_windows},
};
use serde::{Deserialize, Serialize};

use crate::{
    auth::AuthUser,
    error::ApiError,
    routes::{State, doctor_id, managed_doctor},
};

/// Bookings on one local day (by the visit's date).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DayCount {
    /// Local date in the clinic's zone.
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    /// Visits booked, completed or missed that day.
    pub booked: u32,
    /// Visits that day that were cancelled.
    pub cancelled: u32,
}

/// Outcomes of one 7-day bucket (oldest first).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WeekOutcome {
    /// First local date of the bucket.
    #[schema(value_type = String, format = Date)]
    pub week_start: NaiveDate,
    /// Visits that took place.
    pub completed: u32,
    /// Visits the patient missed.
    pub no_show: u32,
    /// `no_show / (completed + no_show)`; absent without recorded outcomes.
    pub no_show_rate: Option<f64>,
}

/// How full one local hour of the day was.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HourFill {
    /// Local hour, 0–23.
    pub hour: u32,
    /// Minutes the doctor was open in this hour, summed over the period.
    pub open_minutes: u32,
    /// Of those, minutes taken by visits (booked, completed or missed).
    pub booked_minutes: u32,
    /// `booked / open`; absent for hours never open.
    pub fill_rate: Option<f64>,
}

/// The provider statistics.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ProviderStats {
    /// Period start (inclusive).
    pub from: DateTime<Utc>,
    /// Period end (exclusive).
    pub to: DateTime<Utc>,
    /// The clinic's IANA zone the days and hours are read in.
    pub time_zone: String,
    /// Every local day of the period, oldest first (zeros included).
    pub bookings_per_day: Vec<DayCount>,
    /// Completed visits in the period.
    pub completed: u32,
    /// Missed visits in the period.
    pub no_show: u32,
    /// Over the whole period; absent without recorded outcomes.
    pub no_show_rate: Option<f64>,
    /// Per 7-day bucket, oldest first.
    pub no_show_by_week: Vec<WeekOutcome>,
    /// Hours 0–23 of the local day.
    pub fill_by_hour: Vec<HourFill>,
}

fn ratio(part: u32, whole: u32) -> Option<f64> {
    (whole > 0).then(|| f64::from(part) / f64::from(whole))
}

/// A visit that took (or takes) doctor time: booked, completed or missed.
fn occupies(s: AppointmentStatus) -> bool {
    matches!(
        s,
        AppointmentStatus::Booked | AppointmentStatus::Completed | AppointmentStatus::NoShow
    )
}

/// Adds every minute of `range` to its local hour in `acc`.
fn add_minutes(acc: &mut [u32; 24], range: TimeRange, tz: Tz) {
    let mut t = range.start();
    while t < range.end() {
        acc[t.with_timezone(&tz).hour() as usize] += 1;
        t += Duration::minutes(1);
    }
}

fn clip(a: TimeRange, b: TimeRange) -> Option<TimeRange> {
    let start = a.start().max(b.start());
    let end = a.end().min(b.end());
    TimeRange::new(start, end).ok().filter(|_| start < end)
}

/// Computes the statistics of `period` from the doctor's appointments and
/// opening windows, reading days and hours in `tz`.
pub fn compute(
    appointments: &[Appointment],
    windows: &[TimeRange],
    tz: Tz,
    period: TimeRange,
) -> ProviderStats {
    let first_day = period.start().with_timezone(&tz).date_naive();
    // The end is exclusive: an end at local midnight adds no day.
    let last_day = (period.end() - Duration::nanoseconds(1))
        .with_timezone(&tz)
        .date_naive();
    let mut days: BTreeMap<NaiveDate, DayCount> = BTreeMap::new();
    let mut d = first_day;
    while d <= last_day {
        days.insert(
            d,
            DayCount {
                date: d,
                booked: 0,
                cancelled: 0,
            },
        );
        d = d.succ_opt().unwrap_or(d + Duration::days(1));
    }
    let weeks = ((last_day - first_day).num_days() / 7 + 1) as usize;
    let mut by_week = vec![(0u32, 0u32); weeks];
    let (mut completed, mut no_show) = (0u32, 0u32);
    let mut booked_minutes = [0u32; 24];

    for a in appointments {
        let start = a.time.start();
        if start < period.start() || start >= period.end() {
            continue;
        }
        let date = start.with_timezone(&tz).date_naive();
        let week = ((date - first_day).num_days() / 7) as usize;
        if let Some(day) = days.get_mut(&date) {
            if occupies(a.status) {
                day.booked += 1;
            } else if a.status == AppointmentStatus::Cancelled {
                day.cancelled += 1;
            }
        }
        match a.status {
            AppointmentStatus::Completed => {
                completed += 1;
                if let Some(w) = by_week.get_mut(week) {
                    w.0 += 1;
                }
            }
            AppointmentStatus::NoShow => {
                no_show += 1;
                if let Some(w) = by_week.get_mut(week) {
                    w.1 += 1;
                }
            }
            _ => {}
        }
        if occupies(a.status) {
            // Only time inside opening hours counts towards the fill rate,
            // so the rate stays within 0..=1 even for squeezed-in visits.
            for w in windows {
                if let Some(part) = clip(a.time, *w).and_then(|p| clip(p, period)) {
                    add_minutes(&mut booked_minutes, part, tz);
                }
            }
        }
    }

    let mut open_minutes = [0u32; 24];
    for w in windows {
        if let Some(part) = clip(*w, period) {
            add_minutes(&mut open_minutes, part, tz);
        }
    }

    ProviderStats {
        from: period.start(),
        to: period.end(),
        time_zone: tz.name().to_string(),
        bookings_per_day: days.into_values().collect(),
        completed,
        no_show,
        no_show_rate: ratio(no_show, completed + no_show),
        no_show_by_week: by_week
            .iter()
            .enumerate()
            .map(|(i, &(c, n))| WeekOutcome {
                week_start: first_day + Duration::days(7 * i as i64),
                completed: c,
                no_show: n,
                no_show_rate: ratio(n, c + n),
            })
            .collect(),
        fill_by_hour: (0..24)
            .map(|h| HourFill {
                hour: h as u32,
                open_minutes: open_minutes[h],
                booked_minutes: booked_minutes[h],
                fill_rate: ratio(booked_minutes[h], open_minutes[h]),
            })
            .collect(),
    }
}

/// `GET /api/v1/doctors/{id}/stats` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatsQuery {
    /// How many weeks back from now (1–26, default 4).
    pub weeks: Option<i64>,
}

/// Statistics of the last weeks for the provider page's charts (the doctor,
/// or an admin of their clinic).
#[utoipa::path(get, path = "/api/v1/doctors/{id}/stats", tag = "doctors", params(StatsQuery),
    security(("bearer" = [])),
    responses((status = 200, body = ProviderStats),
        (status = 401, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem, description = "invalid_weeks")))]
pub async fn doctor_stats(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    q: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    let weeks = q.weeks.unwrap_or(4);
    if !(1..=26).contains(&weeks) {
        return Err(ApiError::unprocessable(
            "invalid_weeks",
            "weeks must be between 1 and 26",
        ));
    }
    let tz = parse_time_zone(&doctor.time_zone)?;
    // "The last N weeks" is today and the 7N − 1 local days before it, from
    // local midnight: whole days, and exactly N week buckets.
    let now = Utc::now();
    let today = now.with_timezone(&tz).date_naive();
    let first = today - Duration::days(7 * weeks - 1);
    let from = local_to_utc(tz, first.and_time(NaiveTime::MIN), false);
    let period = TimeRange::new(from, now)?;
    let windows = match state.store.load_schedule(doctor.id).await? {
        Some(schedule) => working_windows(&schedule, period),
        None => Vec::new(),
    };
    let appointments = state.store.doctor_appointments(doctor.id, period).await?;
    Ok(HttpResponse::Ok().json(compute(&appointments, &windows, tz, period)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use docspot_actors::domain::{AppointmentId, DoctorId, UserId, VisitTypeId};

    use super::*;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn range(a: DateTime<Utc>, b: DateTime<Utc>) -> TimeRange {
        TimeRange::new(a, b).unwrap()
    }

    fn appt(start: DateTime<Utc>, minutes: i64, status: AppointmentStatus) -> Appointment {
        let time = range(start, start + Duration::minutes(minutes));
        Appointment {
            id: AppointmentId::new(),
            doctor_id: DoctorId::new(),
            patient_id: UserId::new(),
            visit_type_id: VisitTypeId::new(),
            time,
            block: time,
            status,
            hold_expires_at: None,
            idempotency_key: None,
            cancel_reason: None,
            created_at: start,
        }
    }

    #[test]
    fn counts_days_outcomes_and_fill_in_the_clinic_zone() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        // Two weeks, Mon 2 Nov 00:00 Berlin (23:00 UTC the day before) on.
        let period = range(
            Utc.with_ymd_and_hms(2026, 11, 1, 23, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 15, 23, 0, 0).unwrap(),
        );
        // Open 09:00–11:00 Berlin (08:00–10:00 UTC) on 3 and 10 November.
        let windows = vec![
            range(at(3, 8, 0), at(3, 10, 0)),
            range(at(10, 8, 0), at(10, 10, 0)),
        ];
        let list = vec![
            appt(at(3, 8, 0), 30, AppointmentStatus::Completed), // 09:00 local
            appt(at(3, 8, 30), 30, AppointmentStatus::NoShow),   // 09:30
            appt(at(3, 9, 0), 30, AppointmentStatus::Cancelled), // 10:00, frees time
            appt(at(10, 9, 30), 30, AppointmentStatus::Booked),  // 10:30
            appt(at(10, 8, 0), 30, AppointmentStatus::Held),     // a hold: ignored
            appt(at(20, 8, 0), 30, AppointmentStatus::Booked),   // outside the period
        ];
        let s = compute(&list, &windows, tz, period);
        assert_eq!(s.time_zone, "Europe/Berlin");
        assert_eq!(s.bookings_per_day.len(), 14, "every day, zeros included");
        assert_eq!(
            s.bookings_per_day[0].date,
            NaiveDate::from_ymd_opt(2026, 11, 2).unwrap()
        );
        let day3 = &s.bookings_per_day[1];
        assert_eq!((day3.booked, day3.cancelled), (2, 1));
        assert_eq!(s.bookings_per_day[8].booked, 1);
        assert_eq!((s.completed, s.no_show), (1, 1));
        assert_eq!(s.no_show_rate, Some(0.5));
        assert_eq!(s.no_show_by_week.len(), 2);
        assert_eq!(s.no_show_by_week[0].no_show_rate, Some(0.5));
        assert_eq!(s.no_show_by_week[1].no_show_rate, None);
        // 09:00 hour: open 2×60, booked 60 on the 3rd. 10:00 hour: open
        // 2×60, booked 30 (the 10th); the cancelled visit does not count.
        let h9 = &s.fill_by_hour[9];
        assert_eq!((h9.open_minutes, h9.booked_minutes), (120, 60));
        assert_eq!(h9.fill_rate, Some(0.5));
        let h10 = &s.fill_by_hour[10];
        assert_eq!((h10.open_minutes, h10.booked_minutes), (120, 30));
        assert_eq!(h10.fill_rate, Some(0.25));
        assert_eq!(s.fill_by_hour[8].fill_rate, None, "never open");
    }

    #[test]
    fn half_hour_zones_split_hours_locally() {
        // Kolkata is UTC+05:30: a 03:00–04:00 UTC window is 08:30–09:30 local.
        let tz: Tz = "Asia/Kolkata".parse().unwrap();
        let period = range(at(2, 0, 0), at(3, 0, 0));
        let windows = vec![range(at(2, 3, 0), at(2, 4, 0))];
        let list = vec![appt(at(2, 3, 0), 30, AppointmentStatus::Booked)];
        let s = compute(&list, &windows, tz, period);
        assert_eq!(s.fill_by_hour[8].open_minutes, 30);
        assert_eq!(s.fill_by_hour[9].open_minutes, 30);
        assert_eq!(s.fill_by_hour[8].fill_rate, Some(1.0));
        assert_eq!(s.fill_by_hour[9].fill_rate, Some(0.0));
    }

    #[test]
    fn visits_outside_opening_hours_never_push_fill_over_one() {
        let tz: Tz = "UTC".parse().unwrap();
        let period = range(at(2, 0, 0), at(3, 0, 0));
        let windows = vec![range(at(2, 9, 0), at(2, 9, 30))];
        let list = vec![appt(at(2, 9, 0), 60, AppointmentStatus::Booked)];
        let s = compute(&list, &windows, tz, period);
        assert_eq!(s.fill_by_hour[9].fill_rate, Some(1.0));
        assert!(s.no_show_rate.is_none());
        assert_eq!(s.bookings_per_day.len(), 1);
    }
}
