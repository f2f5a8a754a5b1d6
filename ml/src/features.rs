//! Turning appointments into numbers.
//!
//! A [`FeatureSpec`] is learned once from the training rows (vocabularies,
//! column types, means, population habits, doctors' busy hours) and stored in
//! the [`Model`](crate::Model), so that ranking builds exactly the vectors the
//! model was trained on.
//!
//! Patient-history features (past no-show rate, number of visits, preferred
//! hours and weekdays) come from a [`History`]: the patient's appointments
//! that *started before* the moment of booking. Nothing that happened later,
//! and no other patient's record, can leak in.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, HashMap},
};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::data::{BANDS, PastAppointment, band_of_hour, lead_days, local_hour_weekday};

/// Pseudo-count pulling a patient's hour/weekday shares toward the population.
const SHARE_PRIOR: f64 = 2.0;
/// Pseudo-count pulling a patient's no-show rate toward the population rate.
const NO_SHOW_PRIOR: f64 = 3.0;
/// Lead times beyond this many days are treated alike.
const MAX_LEAD_DAYS: f64 = 365.0;
/// Largest vocabulary kept for doctors, visit types and sexes.
const MAX_VOCAB: usize = 64;
/// Largest vocabulary kept for a categorical extra column.
const MAX_EXTRA_VOCAB: usize = 32;

/// Summary of one patient's appointments that started before a cut-off.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct History {
    /// Appointments counted.
    pub n: f64,
    /// Of which missed.
    pub no_shows: f64,
    /// Counts by local hour of the slot.
    pub hours: [f64; 24],
    /// Counts by local weekday of the slot (Monday first).
    pub weekdays: [f64; 7],
    /// Counts by part of the day.
    pub bands: [f64; BANDS],
    /// Sum of the unit vectors of the slot hours on the 24 h circle.
    sin: f64,
    cos: f64,
    /// Their mean direction as an hour (0–24) and mean length (0–1).
    mean_hour: f64,
    concentration: f64,
}

impl Default for History {
    fn default() -> Self {
        Self {
            n: 0.0,
            no_shows: 0.0,
            hours: [0.0; 24],
            weekdays: [0.0; 7],
            bands: [0.0; BANDS],
            sin: 0.0,
            cos: 0.0,
            mean_hour: 0.0,
            concentration: 0.0,
        }
    }
}

impl History {
    /// Counts one past appointment.
    pub fn add(&mut self, a: &PastAppointment, tz: Tz) {
        let (hour, weekday) = local_hour_weekday(a.slot_start, tz);
        self.n += 1.0;
        if !a.attended {
            self.no_shows += 1.0;
        }
        self.hours[hour] += 1.0;
        self.weekdays[weekday] += 1.0;
        self.bands[band_of_hour(hour)] += 1.0;
        let angle = hour as f64 * std::f64::consts::TAU / 24.0;
        self.sin += angle.sin();
        self.cos += angle.cos();
        self.concentration = (self.sin * self.sin + self.cos * self.cos).sqrt() / self.n;
        self.mean_hour = self.sin.atan2(self.cos).rem_euclid(std::f64::consts::TAU) * 24.0
            / std::f64::consts::TAU;
    }

    /// The history of one patient as seen at `cutoff`: every appointment in
    /// `appointments` whose slot started strictly before it.
    pub fn before(appointments: &[PastAppointment], cutoff: DateTime<Utc>, tz: Tz) -> Self {
        let mut h = Self::default();
        for a in appointments.iter().filter(|a| a.slot_start < cutoff) {
            h.add(a, tz);
        }
        h
    }

    /// For every row, its patient's history at the row's `booked_at`, taken
    /// from the rows themselves. O(n log n). Accepts owned rows or
    /// references, so that several slices can be combined without cloning.
    pub fn snapshots<A: Borrow<PastAppointment>>(rows: &[A], tz: Tz) -> Vec<Self> {
        let rows: Vec<&PastAppointment> = rows.iter().map(Borrow::borrow).collect();
        let mut by_patient: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, r) in rows.iter().enumerate() {
            by_patient.entry(r.patient_id.as_str()).or_default().push(i);
        }
        let mut out = vec![Self::default(); rows.len()];
        for idx in by_patient.into_values() {
            let mut by_start = idx.clone();
            by_start.sort_by_key(|&i| rows[i].slot_start);
            let mut by_booked = idx;
            by_booked.sort_by_key(|&i| rows[i].booked_at);
            let mut h = Self::default();
            let mut next = 0;
            for i in by_booked {
                let cutoff = rows[i].booked_at;
                while next < by_start.len() && rows[by_start[next]].slot_start < cutoff {
                    h.add(rows[by_start[next]], tz);
                    next += 1;
                }
                out[i] = h.clone();
            }
        }
        out
    }

    /// Raw share of past appointments in a part of the day (0 without history).
    pub fn band_fraction(&self, band: usize) -> f64 {
        if self.n > 0.0 {
            self.bands[band] / self.n
        } else {
            0.0
        }
    }

    /// Raw share of past appointments on a weekday (0 without history).
    pub fn weekday_fraction(&self, weekday: usize) -> f64 {
        if self.n > 0.0 {
            self.weekdays[weekday] / self.n
        } else {
            0.0
        }
    }

    /// Distance of `hour` from the patient's mean hour, in half-days (0–1),
    /// weighted by how concentrated their hours are (0 without history).
    fn hour_distance(&self, hour: usize) -> f64 {
        let d = (hour as f64 - self.mean_hour).abs() % 24.0;
        self.concentration * d.min(24.0 - d) / 12.0
    }
}

/// Counts at `hour` plus half the counts at the neighbouring hours.
fn hour_kernel(counts: &[f64], hour: usize) -> f64 {
    counts[hour] + 0.5 * (counts[(hour + 23) % 24] + counts[(hour + 1) % 24])
}

/// A sorted list of known values of a categorical column; anything else
/// (including missing) maps to one extra "other" slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Vocab {
    values: Vec<String>,
}

impl Vocab {
    /// Keeps the `max` most frequent values.
    fn learn<'a>(values: impl Iterator<Item = &'a str>, max: usize) -> Self {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for v in values {
            *counts.entry(v).or_default() += 1;
        }
        let mut by_count: Vec<(&str, usize)> = counts.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let mut values: Vec<String> = by_count
            .into_iter()
            .take(max)
            .map(|(v, _)| v.to_owned())
            .collect();
        values.sort_unstable();
        Self { values }
    }

    /// Position of `v`, or the "other" slot.
    fn index(&self, v: Option<&str>) -> usize {
        v.and_then(|v| self.values.binary_search_by(|x| x.as_str().cmp(v)).ok())
            .unwrap_or(self.values.len())
    }

    /// Number of one-hot columns, "other" included.
    fn width(&self) -> usize {
        self.values.len() + 1
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        self.values
            .iter()
            .map(|v| format!("{prefix}={v}"))
            .chain(std::iter::once(format!("{prefix}=<other>")))
            .collect()
    }
}

/// An extra patient column used as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NumericColumn {
    pub name: String,
    mean: f64,
    std: f64,
}

/// An extra patient column used as a category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CategoricalColumn {
    pub name: String,
    vocab: Vocab,
}

/// Everything about a booking that does not depend on which slot is chosen.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub doctor_id: Option<&'a str>,
    pub visit_type: Option<&'a str>,
    pub age: Option<f64>,
    pub sex: Option<&'a str>,
    pub extra: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Context<'a> {
    /// The context of a recorded booking.
    pub fn of(a: &'a PastAppointment) -> Self {
        Self {
            doctor_id: a.doctor_id.as_deref(),
            visit_type: a.visit_type.as_deref(),
            age: a.age,
            sex: a.sex.as_deref(),
            extra: Some(&a.extra),
        }
    }
}

/// A slot with its local hour and weekday, computed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotTime {
    pub start: DateTime<Utc>,
    pub hour: usize,
    pub weekday: usize,
}

impl SlotTime {
    /// Local hour and weekday of `start` in `tz`.
    pub fn new(start: DateTime<Utc>, tz: Tz) -> Self {
        let (hour, weekday) = local_hour_weekday(start, tz);
        Self {
            start,
            hour,
            weekday,
        }
    }
}

/// Number of columns of the slot-dependent block of an attendance vector.
const DYNAMIC: usize = 41;
/// Index of the first hour one-hot column.
const HOUR_AT: usize = 2;
/// Index of the first weekday one-hot column.
const WEEKDAY_AT: usize = 26;
/// Number of age bands, "unknown" included.
const AGE_BANDS: usize = 6;

/// Length of a preference vector.
pub(crate) const PREFERENCE_DIM: usize = 12;

/// Names of the preference vector's columns.
pub(crate) const PREFERENCE_NAMES: [&str; PREFERENCE_DIM] = [
    "hour_affinity",
    "ln_hour_affinity",
    "band_share",
    "ln_band_share",
    "weekday_share",
    "ln_weekday_share",
    "hour_distance",
    "ln_lead_days",
    "days_after_earliest",
    "is_earliest",
    "ln_population_hour_share",
    "doctor_fill_rate",
];

/// How appointments become feature vectors; learned from the training rows
/// and stored in the model so inference builds identical vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureSpec {
    /// Name of the time zone hours and weekdays were computed in.
    tz: String,
    doctors: Vocab,
    visit_types: Vocab,
    sexes: Vocab,
    numeric: Vec<NumericColumn>,
    categorical: Vec<CategoricalColumn>,
    /// Population no-show rate.
    no_show_rate: f64,
    /// Population share of slots by local hour.
    hour_share: Vec<f64>,
    /// Population share of slots by weekday.
    weekday_share: Vec<f64>,
    /// Population share of slots by part of the day.
    band_share: Vec<f64>,
    /// Per doctor, bookings at each local hour relative to that doctor's
    /// busiest hour (0–1).
    fill_by_doctor: BTreeMap<String, Vec<f64>>,
    /// The same over all doctors, for unknown ones.
    fill_all: Vec<f64>,
    /// Column names of the attendance vector.
    pub(crate) names: Vec<String>,
}

/// A feature vector under construction: the booking-level part is filled once
/// and the slot-level part per candidate.
pub(crate) struct RowBuilder<'s> {
    spec: &'s FeatureSpec,
    fill: &'s [f64],
    pub row: Vec<f64>,
}

impl FeatureSpec {
    /// Learns vocabularies, column types and population statistics from the
    /// training rows; hours and weekdays are taken in `tz`.
    pub(crate) fn learn(rows: &[PastAppointment], tz: Tz) -> Self {
        let n = rows.len().max(1) as f64;
        let doctors = Vocab::learn(
            rows.iter().filter_map(|r| r.doctor_id.as_deref()),
            MAX_VOCAB,
        );
        let visit_types = Vocab::learn(
            rows.iter().filter_map(|r| r.visit_type.as_deref()),
            MAX_VOCAB,
        );
        let sexes = Vocab::learn(rows.iter().filter_map(|r| r.sex.as_deref()), MAX_VOCAB);

        // Extra columns: numeric when every non-empty value parses.
        let mut columns: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for r in rows {
            for (k, v) in &r.extra {
                let v = v.trim();
                if !v.is_empty() {
                    columns.entry(k.as_str()).or_default().push(v);
                }
            }
        }
        let mut numeric = Vec::new();
        let mut categorical = Vec::new();
        for (name, values) in columns {
            let parsed: Option<Vec<f64>> = values.iter().map(|v| parse_number(v)).collect();
            match parsed {
                Some(xs) => {
                    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
                    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
                    let std = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
                    numeric.push(NumericColumn {
                        name: name.to_owned(),
                        mean,
                        std,
                    });
                }
                None => categorical.push(CategoricalColumn {
                    name: name.to_owned(),
                    vocab: Vocab::learn(values.into_iter(), MAX_EXTRA_VOCAB),
                }),
            }
        }

        let mut hours = [0.0; 24];
        let mut weekdays = [0.0; 7];
        let mut bands = [0.0; BANDS];
        let mut per_doctor: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut no_shows = 0.0;
        for r in rows {
            let (h, d) = local_hour_weekday(r.slot_start, tz);
            hours[h] += 1.0;
            weekdays[d] += 1.0;
            bands[band_of_hour(h)] += 1.0;
            if let Some(doc) = &r.doctor_id {
                per_doctor
                    .entry(doc.clone())
                    .or_insert_with(|| vec![0.0; 24])[h] += 1.0;
            }
            if !r.attended {
                no_shows += 1.0;
            }
        }
        let relative = |counts: &[f64]| -> Vec<f64> {
            let max = counts.iter().copied().fold(0.0, f64::max);
            counts
                .iter()
                .map(|c| if max > 0.0 { c / max } else { 0.0 })
                .collect()
        };
        let fill_all = relative(&hours);
        let fill_by_doctor = per_doctor
            .into_iter()
            .map(|(k, v)| (k, relative(&v)))
            .collect();
        // Smoothed shares: an hour never seen still gets a little mass.
        let share = |counts: &[f64]| -> Vec<f64> {
            let k = counts.len() as f64;
            counts.iter().map(|c| (c + 1.0) / (n + k)).collect()
        };

        let mut spec = Self {
            tz: tz.name().to_owned(),
            doctors,
            visit_types,
            sexes,
            numeric,
            categorical,
            no_show_rate: if rows.is_empty() { 0.1 } else { no_shows / n },
            hour_share: share(&hours),
            weekday_share: share(&weekdays),
            band_share: share(&bands),
            fill_by_doctor,
            fill_all,
            names: Vec::new(),
        };
        spec.names = spec.build_names();
        spec
    }

    /// Length of an attendance feature vector.
    pub fn dim(&self) -> usize {
        self.names.len()
    }

    /// Column names of the attendance feature vector, in order.
    pub fn feature_names(&self) -> &[String] {
        &self.names
    }

    /// Name of the time zone the model was trained with.
    pub fn time_zone(&self) -> &str {
        &self.tz
    }

    /// The time zone the model was trained with. Always parses for a trained
    /// model or one accepted by [`check`](Self::check); UTC otherwise.
    pub(crate) fn tz(&self) -> Tz {
        self.tz.parse().unwrap_or(Tz::UTC)
    }

    /// Names of the extra columns used as numbers.
    pub fn numeric_columns(&self) -> impl Iterator<Item = &str> {
        self.numeric.iter().map(|c| c.name.as_str())
    }

    /// Names of the extra columns used as categories.
    pub fn categorical_columns(&self) -> impl Iterator<Item = &str> {
        self.categorical.iter().map(|c| c.name.as_str())
    }

    /// Checks the invariants inference relies on (for a decoded model file).
    pub(crate) fn check(&self) -> Result<(), String> {
        let lengths = [
            ("hour shares", self.hour_share.len(), 24),
            ("weekday shares", self.weekday_share.len(), 7),
            ("part-of-day shares", self.band_share.len(), BANDS),
            ("fill rates", self.fill_all.len(), 24),
        ];
        for (what, found, expected) in lengths {
            if found != expected {
                return Err(format!("{what}: {found} values, expected {expected}"));
            }
        }
        if let Some((doctor, _)) = self.fill_by_doctor.iter().find(|(_, v)| v.len() != 24) {
            return Err(format!(
                "fill rates of doctor {doctor:?} do not cover 24 hours"
            ));
        }
        if self.build_names() != self.names {
            return Err("feature names do not match the vocabularies".into());
        }
        if self.tz.parse::<Tz>().is_err() {
            return Err(format!("unknown time zone {:?}", self.tz));
        }
        Ok(())
    }

    /// Population no-show rate in the training rows.
    pub(crate) fn population_no_show_rate(&self) -> f64 {
        self.no_show_rate
    }

    fn build_names(&self) -> Vec<String> {
        let mut names: Vec<String> = vec!["lead_days".into(), "ln_lead_days".into()];
        names.extend((0..24).map(|h| format!("hour={h}")));
        names.extend(
            crate::data::WEEKDAY_NAMES
                .iter()
                .map(|d| format!("weekday={d}")),
        );
        names.extend(
            [
                "patient_no_show_rate",
                "ln_patient_visits",
                "patient_has_history",
                "patient_band_share",
                "patient_hour_affinity",
                "patient_weekday_share",
                "patient_hour_distance",
                "doctor_fill_rate",
            ]
            .map(String::from),
        );
        debug_assert_eq!(names.len(), DYNAMIC);
        names.extend(
            [
                "age<18", "age18-29", "age30-44", "age45-64", "age65+", "age?",
            ]
            .map(String::from),
        );
        names.extend(self.sexes.names("sex"));
        names.extend(self.doctors.names("doctor"));
        names.extend(self.visit_types.names("visit_type"));
        for c in &self.numeric {
            names.push(c.name.clone());
            names.push(format!("{}?", c.name));
        }
        for c in &self.categorical {
            names.extend(c.vocab.names(&c.name));
        }
        names
    }

    /// Per-hour fill rate of a doctor (all doctors when unknown).
    fn fill_for(&self, doctor: Option<&str>) -> &[f64] {
        doctor
            .and_then(|d| self.fill_by_doctor.get(d))
            .map_or(self.fill_all.as_slice(), Vec::as_slice)
    }

    /// Starts a vector for a booking: fills the booking-level columns.
    pub(crate) fn builder(&self, ctx: &Context<'_>) -> RowBuilder<'_> {
        let mut row = vec![0.0; self.dim()];
        let mut at = DYNAMIC;
        let age_band = match ctx.age {
            Some(a) if a.is_finite() && a < 18.0 => 0,
            Some(a) if a.is_finite() && a < 30.0 => 1,
            Some(a) if a.is_finite() && a < 45.0 => 2,
            Some(a) if a.is_finite() && a < 65.0 => 3,
            Some(a) if a.is_finite() => 4,
            _ => 5,
        };
        row[at + age_band] = 1.0;
        at += AGE_BANDS;
        for (vocab, value) in [
            (&self.sexes, ctx.sex),
            (&self.doctors, ctx.doctor_id),
            (&self.visit_types, ctx.visit_type),
        ] {
            row[at + vocab.index(value)] = 1.0;
            at += vocab.width();
        }
        let get = |name: &str| -> Option<&str> {
            ctx.extra
                .and_then(|e| e.get(name))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        for c in &self.numeric {
            match get(&c.name).and_then(parse_number) {
                Some(x) => row[at] = (x - c.mean) / c.std,
                None => row[at + 1] = 1.0,
            }
            at += 2;
        }
        for c in &self.categorical {
            row[at + c.vocab.index(get(&c.name))] = 1.0;
            at += c.vocab.width();
        }
        debug_assert_eq!(at, row.len());
        RowBuilder {
            spec: self,
            fill: self.fill_for(ctx.doctor_id),
            row,
        }
    }

    /// How popular a slot's local hour (and its neighbours) was in training.
    pub(crate) fn popularity(&self, slot: DateTime<Utc>, tz: Tz) -> f64 {
        hour_kernel(&self.hour_share, local_hour_weekday(slot, tz).0)
    }

    /// Smoothed share of the patient's visits near `hour` (population prior).
    fn hour_affinity(&self, h: &History, hour: usize) -> f64 {
        (hour_kernel(&h.hours, hour) + SHARE_PRIOR * hour_kernel(&self.hour_share, hour))
            / (h.n + SHARE_PRIOR)
    }

    fn band_affinity(&self, h: &History, band: usize) -> f64 {
        (h.bands[band] + SHARE_PRIOR * self.band_share[band]) / (h.n + SHARE_PRIOR)
    }

    fn weekday_affinity(&self, h: &History, weekday: usize) -> f64 {
        (h.weekdays[weekday] + SHARE_PRIOR * self.weekday_share[weekday]) / (h.n + SHARE_PRIOR)
    }

    /// The preference vector of one option of a choice set whose earliest
    /// slot is `earliest`, offered at `booked_at`.
    pub(crate) fn preference_row(
        &self,
        h: &History,
        doctor: Option<&str>,
        booked_at: DateTime<Utc>,
        slot: SlotTime,
        earliest: DateTime<Utc>,
        out: &mut [f64; PREFERENCE_DIM],
    ) {
        let SlotTime {
            start,
            hour,
            weekday,
        } = slot;
        let hour_aff = self.hour_affinity(h, hour);
        let band_aff = self.band_affinity(h, band_of_hour(hour));
        let weekday_aff = self.weekday_affinity(h, weekday);
        let lead = lead_days(booked_at, start).min(MAX_LEAD_DAYS);
        *out = [
            hour_aff,
            hour_aff.ln(),
            band_aff,
            band_aff.ln(),
            weekday_aff,
            weekday_aff.ln(),
            h.hour_distance(hour),
            lead.ln_1p(),
            lead_days(earliest, start).min(60.0),
            if start == earliest { 1.0 } else { 0.0 },
            hour_kernel(&self.hour_share, hour).ln(),
            self.fill_for(doctor)[hour],
        ];
    }
}

impl RowBuilder<'_> {
    /// Fills the slot-level columns for a visit at `slot` booked at
    /// `booked_at` by a patient with history `h`.
    pub(crate) fn set_slot(&mut self, h: &History, booked_at: DateTime<Utc>, slot: SlotTime) {
        let spec = self.spec;
        let SlotTime {
            start,
            hour,
            weekday,
        } = slot;
        let lead = lead_days(booked_at, start).min(MAX_LEAD_DAYS);
        let r = &mut self.row[..DYNAMIC];
        r.fill(0.0);
        r[0] = lead;
        r[1] = lead.ln_1p();
        r[HOUR_AT + hour] = 1.0;
        r[WEEKDAY_AT + weekday] = 1.0;
        r[33] = (h.no_shows + NO_SHOW_PRIOR * spec.no_show_rate) / (h.n + NO_SHOW_PRIOR);
        r[34] = h.n.ln_1p();
        r[35] = if h.n > 0.0 { 1.0 } else { 0.0 };
        r[36] = spec.band_affinity(h, band_of_hour(hour));
        r[37] = spec.hour_affinity(h, hour);
        r[38] = spec.weekday_affinity(h, weekday);
        r[39] = h.hour_distance(hour);
        r[40] = self.fill[hour];
    }
}

/// Parses a finite number, tolerating surrounding blanks.
pub(crate) fn parse_number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    fn appt(patient: &str, booked_day: i64, slot_day: i64, attended: bool) -> PastAppointment {
        let base = Utc.with_ymd_and_hms(2024, 1, 1, 9, 0, 0).unwrap();
        PastAppointment {
            patient_id: patient.into(),
            doctor_id: Some("d1".into()),
            visit_type: Some("checkup".into()),
            booked_at: base + Duration::days(booked_day),
            slot_start: base + Duration::days(slot_day),
            attended,
            age: Some(40.0),
            sex: Some("F".into()),
            extra: BTreeMap::new(),
            offered: Vec::new(),
        }
    }

    /// The history of a row only counts the same patient's appointments that
    /// started before the row was booked.
    #[test]
    fn history_snapshots_do_not_leak() {
        let rows = vec![
            appt("p", 0, 5, false),  // A: starts day 5
            appt("p", 3, 10, true),  // B: booked day 3, A not started yet
            appt("p", 6, 8, true),   // C: booked day 6, A has started
            appt("q", 0, 1, false),  // another patient
            appt("p", 10, 12, true), // D: booked day 10: A and C started, B at day 10 not strictly before
        ];
        let s = History::snapshots(&rows, Tz::UTC);
        assert_eq!(s[0].n, 0.0);
        assert_eq!(s[1].n, 0.0, "A started after B was booked");
        assert_eq!((s[2].n, s[2].no_shows), (1.0, 1.0));
        assert_eq!(s[3].n, 0.0);
        assert_eq!((s[4].n, s[4].no_shows), (2.0, 1.0));
        // The same as computing it from the patient's own list at the cut-off.
        let p: Vec<PastAppointment> = rows
            .iter()
            .filter(|r| r.patient_id == "p")
            .cloned()
            .collect();
        for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.patient_id == "p") {
            assert_eq!(s[i], History::before(&p, r.booked_at, Tz::UTC));
        }
    }

    /// Appending future appointments (with the opposite outcome) to the data
    /// changes no feature of an earlier booking, in training or at inference.
    #[test]
    fn future_appointments_do_not_change_features() {
        let past = vec![
            appt("p", 0, 2, false),
            appt("p", 3, 4, true),
            appt("p", 5, 9, true),
        ];
        let spec = FeatureSpec::learn(&past, Tz::UTC);
        let vector = |rows: &[PastAppointment], i: usize| {
            let s = History::snapshots(rows, Tz::UTC);
            let mut b = spec.builder(&Context::of(&rows[i]));
            b.set_slot(
                &s[i],
                rows[i].booked_at,
                SlotTime::new(rows[i].slot_start, Tz::UTC),
            );
            b.row
        };
        let before = vector(&past, 2);
        let mut with_future = past.clone();
        with_future.push(appt("p", 5, 6, false)); // booked the same day, starts later
        with_future.push(appt("p", 7, 20, false));
        with_future.push(appt("p", 1, 30, false)); // booked earlier, starts later
        assert_eq!(vector(&with_future, 2), before);

        // Inference: the history passed in may include anything; only what
        // started before `now` counts.
        let now = past[2].booked_at;
        let h = History::before(&with_future, now, Tz::UTC);
        assert_eq!(h, History::before(&past[..2], now, Tz::UTC));
        assert_eq!((h.n, h.no_shows), (2.0, 1.0));
    }

    #[test]
    fn extra_columns_split_into_numeric_and_categorical() {
        let mut rows = vec![appt("p", 0, 1, true), appt("q", 0, 1, true)];
        rows[0].extra.insert("bmi".into(), "21.5".into());
        rows[1].extra.insert("bmi".into(), " ".into()); // empty: ignored
        rows[0].extra.insert("plan".into(), "gold".into());
        rows[1].extra.insert("plan".into(), "3".into());
        let spec = FeatureSpec::learn(&rows, Tz::UTC);
        assert_eq!(spec.numeric_columns().collect::<Vec<_>>(), ["bmi"]);
        assert_eq!(spec.categorical_columns().collect::<Vec<_>>(), ["plan"]);
        assert_eq!(spec.dim(), spec.feature_names().len());
        let b = spec.builder(&Context::of(&rows[1]));
        let bmi_missing = spec
            .feature_names()
            .iter()
            .position(|n| n == "bmi?")
            .unwrap();
        assert_eq!(b.row[bmi_missing], 1.0);
    }

    #[test]
    fn hours_follow_the_time_zone() {
        let rows = vec![appt("p", 0, 1, true)]; // 09:00 UTC
        let tz: Tz = "America/New_York".parse().unwrap();
        let spec = FeatureSpec::learn(&rows, tz);
        let mut b = spec.builder(&Context::of(&rows[0]));
        b.set_slot(
            &History::default(),
            rows[0].booked_at,
            SlotTime::new(rows[0].slot_start, tz),
        );
        let hot = spec
            .feature_names()
            .iter()
            .position(|n| n == "hour=4")
            .unwrap();
        assert_eq!(b.row[hot], 1.0, "09:00 UTC is 04:00 in New York in January");
        // The stored zone is recovered for validation; a model file with an
        // unknown one is rejected.
        assert_eq!(spec.tz(), tz);
        assert_eq!(spec.check(), Ok(()));
        let mut bad = spec.clone();
        bad.tz = "Mars/Olympus_Mons".into();
        assert!(bad.check().unwrap_err().contains("time zone"));
    }
}
