//! The one input record, [`PastAppointment`], and the local-time helpers every
//! feature is computed with.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One appointment from the booking history, with its outcome.
///
/// This is all the learning needs: the store (or a CSV export) maps its rows
/// to this shape. Times are UTC instants; local hour and weekday are derived
/// with the time zone passed to training and ranking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PastAppointment {
    /// Who booked. Opaque: only equality matters.
    pub patient_id: String,
    /// With whom, when known.
    pub doctor_id: Option<String>,
    /// What kind of visit, when known.
    pub visit_type: Option<String>,
    /// When the booking was made.
    pub booked_at: DateTime<Utc>,
    /// When the visit was (to) start.
    pub slot_start: DateTime<Utc>,
    /// Whether the patient came.
    pub attended: bool,
    /// Patient age in years at booking, when known.
    pub age: Option<f64>,
    /// Patient sex as recorded (free text, treated as a category).
    pub sex: Option<String>,
    /// Further patient feature columns, by name. A column is used as a number
    /// when every non-empty training value parses as one, otherwise as a
    /// category.
    pub extra: BTreeMap<String, String>,
    /// The alternatives that were offered when booking (may be empty). The
    /// chosen `slot_start` need not be repeated here.
    pub offered: Vec<DateTime<Utc>>,
}

impl PastAppointment {
    /// Days between booking and the visit, never negative.
    pub fn lead_days(&self) -> f64 {
        lead_days(self.booked_at, self.slot_start)
    }

    /// The options the patient chose among: `offered` plus the chosen slot,
    /// sorted, without duplicates. Empty when nothing was offered.
    pub(crate) fn choice_set(&self) -> Vec<DateTime<Utc>> {
        if self.offered.is_empty() {
            return Vec::new();
        }
        let mut set = self.offered.clone();
        set.push(self.slot_start);
        set.sort_unstable();
        set.dedup();
        set
    }
}

/// Days from `from` to `to`, clamped at zero.
pub(crate) fn lead_days(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_seconds() as f64 / 86_400.0).max(0.0)
}

/// Local hour of day (0–23) and weekday (0 = Monday) of an instant.
pub(crate) fn local_hour_weekday(t: DateTime<Utc>, tz: Tz) -> (usize, usize) {
    let local = t.with_timezone(&tz);
    (
        local.hour() as usize,
        local.weekday().num_days_from_monday() as usize,
    )
}

/// Number of coarse parts of the day, see [`band_of_hour`].
pub(crate) const BANDS: usize = 4;

/// Coarse part of the day: 0 morning (before 11), 1 midday (11–13),
/// 2 afternoon (14–16), 3 evening (17 on).
pub(crate) fn band_of_hour(hour: usize) -> usize {
    match hour {
        0..=10 => 0,
        11..=13 => 1,
        14..=16 => 2,
        _ => 3,
    }
}

/// How a reason names a part of the day ("you usually book …").
pub(crate) fn band_phrase(band: usize) -> &'static str {
    match band {
        0 => "mornings",
        1 => "around midday",
        2 => "afternoons",
        _ => "evenings",
    }
}

/// Weekday names for reasons, Monday first.
pub(crate) const WEEKDAY_NAMES: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
