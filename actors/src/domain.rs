//! Domain types shared by the actors, the store and the HTTP layer.
//!
//! Everything here is plain data with parsing at the edges ("parse, don't
//! validate"): once a [`TimeRange`] or an id exists, it is valid.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A malformed identifier, time range or enum value coming from outside.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why}")]
pub struct ParseError {
    /// Which kind of value failed to parse.
    pub what: &'static str,
    /// Why, in words a client can act on.
    pub why: String,
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id (UUIDv7: index-friendly).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Parses the textual UUID form.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseError {
                    what: $what,
                    why: format!("{s:?} is not a UUID"),
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }
    };
}

id_type!(/// A doctor.
    DoctorId, "doctor id");
id_type!(/// A clinic.
    ClinicId, "clinic id");
id_type!(/// A user account: patient, doctor or clinic admin.
    UserId, "user id");
id_type!(/// An appointment (a hold is an appointment in status `held`).
    AppointmentId, "appointment id");
id_type!(/// A visit type of one doctor.
    VisitTypeId, "visit type id");

/// A half-open interval `[start, end)` of UTC instants with `start < end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeRange {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl TimeRange {
    /// Builds a range, refusing empty or inverted ones.
    pub fn new(start: DateTime<Utc>, end: DateTime<Utc>) -> Result<Self, ParseError> {
        if start < end {
            Ok(Self { start, end })
        } else {
            Err(ParseError {
                what: "time range",
                why: format!("start {start} must be before end {end}"),
            })
        }
    }

    /// First instant inside the range.
    pub fn start(&self) -> DateTime<Utc> {
        self.start
    }

    /// First instant after the range.
    pub fn end(&self) -> DateTime<Utc> {
        self.end
    }

    /// Length of the range.
    pub fn duration(&self) -> Duration {
        self.end - self.start
    }

    /// Whether the two ranges share at least one instant.
    pub fn overlaps(&self, other: &TimeRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// Whether `other` lies entirely inside `self`.
    pub fn contains(&self, other: &TimeRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Lifecycle of an appointment. `held` and `booked` are *active*: they occupy
/// the doctor's time and may never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppointmentStatus {
    /// Reserved for a short time while the patient confirms.
    Held,
    /// Confirmed.
    Booked,
    /// Cancelled by someone, or a hold that expired.
    Cancelled,
    /// The visit took place.
    Completed,
    /// The patient did not come.
    NoShow,
}

impl AppointmentStatus {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Booked => "booked",
            Self::Cancelled => "cancelled",
            Self::Completed => "completed",
            Self::NoShow => "no_show",
        }
    }

    /// Whether the appointment occupies the doctor's time.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Held | Self::Booked)
    }
}

impl FromStr for AppointmentStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Ok(match s {
            "held" => Self::Held,
            "booked" => Self::Booked,
            "cancelled" => Self::Cancelled,
            "completed" => Self::Completed,
            "no_show" => Self::NoShow,
            other => {
                return Err(ParseError {
                    what: "appointment status",
                    why: format!("unknown status {other:?}"),
                });
            }
        })
    }
}

impl fmt::Display for AppointmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An appointment as the calendar and the store know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    /// Identity.
    pub id: AppointmentId,
    /// Whose calendar.
    pub doctor_id: DoctorId,
    /// Who is coming.
    pub patient_id: UserId,
    /// What kind of visit.
    pub visit_type_id: VisitTypeId,
    /// The visit itself.
    pub time: TimeRange,
    /// The doctor's busy time: the visit plus buffers. Never overlaps another
    /// active appointment's block.
    pub block: TimeRange,
    /// Lifecycle state.
    pub status: AppointmentStatus,
    /// When a hold lapses (only for `held`).
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// The client's `Idempotency-Key`, unique per patient.
    pub idempotency_key: Option<String>,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// A kind of visit with its own length and buffers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitType {
    /// Identity.
    pub id: VisitTypeId,
    /// Display name ("First consultation").
    pub name: String,
    /// Length of the visit.
    pub duration_minutes: i32,
    /// Preparation time the doctor needs before the visit.
    pub buffer_before_minutes: i32,
    /// Time the doctor needs after the visit.
    pub buffer_after_minutes: i32,
    /// Fee in the currency's minor unit.
    pub fee_cents: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Used when a request names no visit type.
    pub is_default: bool,
}

impl VisitType {
    /// The visit's own time range when it starts at `start`.
    pub fn visit_at(&self, start: DateTime<Utc>) -> TimeRange {
        let end = start + Duration::minutes(i64::from(self.duration_minutes.max(1)));
        TimeRange { start, end }
    }

    /// The time the doctor is busy for a visit starting at `start`.
    pub fn block_at(&self, start: DateTime<Utc>) -> TimeRange {
        let visit = self.visit_at(start);
        TimeRange {
            start: visit.start - Duration::minutes(i64::from(self.buffer_before_minutes)),
            end: visit.end + Duration::minutes(i64::from(self.buffer_after_minutes)),
        }
    }

    /// Distance between consecutive slot starts: one visit with its buffers.
    pub fn step(&self) -> Duration {
        self.block_at(DateTime::<Utc>::UNIX_EPOCH).duration()
    }
}

/// One weekly opening window in the clinic's local time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityRule {
    /// Day the window starts on.
    pub weekday: Weekday,
    /// Local start time.
    pub start: NaiveTime,
    /// Local end time; at or before `start` means it ends the next day.
    pub end: NaiveTime,
    /// First local date the rule applies to.
    pub valid_from: Option<NaiveDate>,
    /// Last local date the rule applies to.
    pub valid_until: Option<NaiveDate>,
}

/// Whether an exception adds or removes availability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// Removes availability (holiday, sick leave).
    TimeOff,
    /// Adds availability outside the weekly rules.
    ExtraHours,
}

impl ExceptionKind {
    /// The stored / wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TimeOff => "time_off",
            Self::ExtraHours => "extra_hours",
        }
    }
}

impl FromStr for ExceptionKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "time_off" => Ok(Self::TimeOff),
            "extra_hours" => Ok(Self::ExtraHours),
            other => Err(ParseError {
                what: "exception kind",
                why: format!("{other:?} is neither \"time_off\" nor \"extra_hours\""),
            }),
        }
    }
}

/// A one-off change to a doctor's availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvailabilityException {
    /// Adds or removes time.
    pub kind: ExceptionKind,
    /// When.
    pub range: TimeRange,
}

/// Everything needed to compute a doctor's slots, without I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct DoctorSchedule {
    /// The doctor.
    pub doctor_id: DoctorId,
    /// Their clinic.
    pub clinic_id: ClinicId,
    /// The clinic's IANA time zone: rules are read in it.
    pub time_zone: Tz,
    /// Weekly opening hours.
    pub rules: Vec<AvailabilityRule>,
    /// Time off and extra hours.
    pub exceptions: Vec<AvailabilityException>,
    /// Visit types this doctor offers.
    pub visit_types: Vec<VisitType>,
    /// How far ahead patients may book.
    pub booking_horizon: Duration,
    /// How late before the start patients may still cancel or reschedule.
    pub cancellation_cutoff: Duration,
}

impl DoctorSchedule {
    /// The requested visit type, or the doctor's default (else the first one).
    pub fn visit_type(&self, id: Option<VisitTypeId>) -> Option<&VisitType> {
        match id {
            Some(id) => self.visit_types.iter().find(|v| v.id == id),
            None => self
                .visit_types
                .iter()
                .find(|v| v.is_default)
                .or_else(|| self.visit_types.first()),
        }
    }
}

/// A bookable slot: the visit's start and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slot {
    /// Visit start (UTC).
    pub start: DateTime<Utc>,
    /// Visit end (UTC).
    pub end: DateTime<Utc>,
}

impl From<TimeRange> for Slot {
    fn from(r: TimeRange) -> Self {
        Slot {
            start: r.start,
            end: r.end,
        }
    }
}

/// Parses an ISO weekday number (1 = Monday … 7 = Sunday).
pub fn weekday_from_iso(n: i16) -> Result<Weekday, ParseError> {
    match n {
        1 => Ok(Weekday::Mon),
        2 => Ok(Weekday::Tue),
        3 => Ok(Weekday::Wed),
        4 => Ok(Weekday::Thu),
        5 => Ok(Weekday::Fri),
        6 => Ok(Weekday::Sat),
        7 => Ok(Weekday::Sun),
        _ => Err(ParseError {
            what: "weekday",
            why: format!("{n} is not an ISO weekday (1 = Monday … 7 = Sunday)"),
        }),
    }
}

/// Parses an IANA time zone name ("Europe/Berlin").
pub fn parse_time_zone(s: &str) -> Result<Tz, ParseError> {
    s.parse::<Tz>().map_err(|_| ParseError {
        what: "time zone",
        why: format!("{s:?} is not an IANA time zone name"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_refuse_empty_and_detect_overlap() {
        let t = |m: i64| DateTime::<Utc>::UNIX_EPOCH + Duration::minutes(m);
        assert!(TimeRange::new(t(5), t(5)).is_err());
        assert!(TimeRange::new(t(6), t(5)).is_err());
        let a = TimeRange::new(t(0), t(30)).unwrap();
        let b = TimeRange::new(t(30), t(60)).unwrap();
        let c = TimeRange::new(t(29), t(31)).unwrap();
        assert!(
            !a.overlaps(&b),
            "half-open ranges that touch do not overlap"
        );
        assert!(a.overlaps(&c) && b.overlaps(&c));
    }

    #[test]
    fn ids_parse_or_explain() {
        let id = DoctorId::new();
        assert_eq!(DoctorId::parse(&id.to_string()), Ok(id));
        let err = DoctorId::parse("nope").unwrap_err();
        assert_eq!(err.what, "doctor id");
    }

    #[test]
    fn block_includes_buffers() {
        let vt = VisitType {
            id: VisitTypeId::new(),
            name: "x".into(),
            duration_minutes: 30,
            buffer_before_minutes: 5,
            buffer_after_minutes: 10,
            fee_cents: 0,
            currency: "EUR".into(),
            is_default: true,
        };
        let s = DateTime::<Utc>::UNIX_EPOCH + Duration::hours(1);
        let b = vt.block_at(s);
        assert_eq!(b.start(), s - Duration::minutes(5));
        assert_eq!(b.end(), s + Duration::minutes(40));
        assert_eq!(vt.step(), Duration::minutes(45));
    }
}
