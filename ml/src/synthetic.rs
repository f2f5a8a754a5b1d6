//! A synthetic booking history with known, planted patterns, to train and
//! test against when no real history exists (and to check that the models
//! find what was planted).
//!
//! Planted:
//! * every patient has a preferred hour (in one of four parts of the day) and
//!   a preferred weekday; at each booking they are offered five slots and pick
//!   by a random-utility rule that strongly favours their hour, mildly their
//!   weekday and sooner slots;
//! * the no-show probability is the patient's own base rate (most patients
//!   3–10 %, a quarter of them 18–45 %) plus 0.6 points per day of lead time,
//!   plus small effects of insurance, reminders, distance, age, visit type and
//!   of booking outside the preferred part of the day.
//!
//! Hours are UTC. Deterministic for a seed.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc, Weekday};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::data::{PastAppointment, band_of_hour, local_hour_weekday};

/// Number of slots offered at each booking.
const OFFERED: usize = 5;
/// Doctors of the synthetic clinic.
const DOCTORS: [&str; 6] = ["doc-1", "doc-2", "doc-3", "doc-4", "doc-5", "doc-6"];
/// Visit types, their frequency and their effect on the no-show probability.
const VISITS: [(&str, f64, f64); 4] = [
    ("checkup", 0.4, 0.0),
    ("follow_up", 0.3, -0.02),
    ("consultation", 0.2, 0.02),
    ("vaccination", 0.1, -0.03),
];
/// Centre hour of each part of the day (see `data::band_of_hour`).
const BAND_CENTRE: [i64; 4] = [9, 12, 15, 18];

struct Patient {
    id: String,
    preferred_hour: i64,
    preferred_weekday: usize,
    no_show_base: f64,
    doctor: usize,
    age: Option<f64>,
    sex: Option<&'static str>,
    insurance: &'static str,
    reminders: &'static str,
    distance_km: f64,
}

/// Generates `n_appointments` past appointments of `n_patients` patients,
/// booked between 540 and 75 days before `now` (so every visit is over),
/// sorted by booking time. Every row has five `offered` slots, the chosen one
/// among them, and the patient columns `insurance`, `reminders` (categories)
/// and `distance_km` (number) in `extra`.
pub fn generate(
    n_patients: usize,
    n_appointments: usize,
    seed: u64,
    now: DateTime<Utc>,
) -> Vec<PastAppointment> {
    let mut rng = StdRng::seed_from_u64(seed);
    let patients: Vec<Patient> = (0..n_patients.max(1))
        .map(|i| new_patient(i, &mut rng))
        .collect();
    let mut out: Vec<PastAppointment> = (0..n_appointments)
        .map(|_| {
            let p = &patients[rng.random_range(0..patients.len())];
            appointment(p, now, &mut rng)
        })
        .collect();
    out.sort_by(|a, b| {
        a.booked_at
            .cmp(&b.booked_at)
            .then(a.patient_id.cmp(&b.patient_id))
    });
    out
}

fn new_patient(i: usize, rng: &mut StdRng) -> Patient {
    let band = pick(rng, &[0.35, 0.2, 0.25, 0.2]);
    let no_show_base = if rng.random::<f64>() < 0.25 {
        rng.random_range(0.18..0.45)
    } else {
        rng.random_range(0.03..0.10)
    };
    Patient {
        id: format!("p{i:05}"),
        preferred_hour: BAND_CENTRE[band] + rng.random_range(-1..=1),
        preferred_weekday: rng.random_range(0..6),
        no_show_base,
        doctor: rng.random_range(0..DOCTORS.len()),
        age: (rng.random::<f64>() > 0.05).then(|| rng.random_range(5.0f64..90.0).round()),
        sex: match rng.random_range(0..20) {
            0 => None,
            1..10 => Some("F"),
            _ => Some("M"),
        },
        insurance: ["public", "private", "self_pay"][pick(rng, &[0.6, 0.3, 0.1])],
        reminders: if rng.random::<f64>() < 0.7 {
            "yes"
        } else {
            "no"
        },
        distance_km: (rng.random_range(1.0f64..40.0) * 10.0).round() / 10.0,
    }
}

fn appointment(p: &Patient, now: DateTime<Utc>, rng: &mut StdRng) -> PastAppointment {
    let booked_at = now
        - Duration::days(rng.random_range(75..540))
        - Duration::seconds(rng.random_range(0..86_400));
    let mut offered: Vec<DateTime<Utc>> = Vec::with_capacity(OFFERED);
    while offered.len() < OFFERED {
        let slot = random_slot(booked_at, rng);
        if !offered.contains(&slot) {
            offered.push(slot);
        }
    }
    offered.sort_unstable();

    // Random utility: hour closeness, part of the day, weekday, soonness,
    // plus Gumbel noise (a multinomial logit choice).
    let preferred_band = band_of_hour(p.preferred_hour as usize);
    let utility = |slot: DateTime<Utc>, rng: &mut StdRng| {
        let (hour, weekday) = local_hour_weekday(slot, chrono_tz::UTC);
        let distance = (hour as i64 - p.preferred_hour).abs() as f64;
        let lead = (slot - booked_at).num_hours() as f64 / 24.0;
        let u: f64 = rng.random_range(1e-12..1.0);
        -0.45 * distance
            + if band_of_hour(hour) == preferred_band {
                1.0
            } else {
                0.0
            }
            + if weekday == p.preferred_weekday {
                0.7
            } else {
                0.0
            }
            - 0.05 * lead
            - (-u.ln()).ln()
    };
    let mut best = (f64::NEG_INFINITY, offered[0]);
    for &slot in &offered {
        let u = utility(slot, rng);
        if u > best.0 {
            best = (u, slot);
        }
    }
    let slot_start = best.1;

    let doctor = if rng.random::<f64>() < 0.8 {
        p.doctor
    } else {
        rng.random_range(0..DOCTORS.len())
    };
    let visit = pick(rng, &VISITS.map(|v| v.1));
    let lead = (slot_start - booked_at).num_hours() as f64 / 24.0;
    let (hour, _) = local_hour_weekday(slot_start, chrono_tz::UTC);
    let no_show = (p.no_show_base
        + 0.006 * lead
        + match p.insurance {
            "self_pay" => 0.06,
            "private" => -0.02,
            _ => 0.0,
        }
        + if p.reminders == "no" { 0.04 } else { 0.0 }
        + 0.002 * p.distance_km
        + if p.age.is_some_and(|a| a < 25.0) {
            0.05
        } else {
            0.0
        }
        + VISITS[visit].2
        + if band_of_hour(hour) == preferred_band {
            0.0
        } else {
            0.03
        })
    .clamp(0.01, 0.9);

    let mut extra = BTreeMap::new();
    extra.insert("insurance".to_owned(), p.insurance.to_owned());
    extra.insert("reminders".to_owned(), p.reminders.to_owned());
    extra.insert("distance_km".to_owned(), p.distance_km.to_string());
    PastAppointment {
        patient_id: p.id.clone(),
        doctor_id: Some(DOCTORS[doctor].to_owned()),
        visit_type: Some(VISITS[visit].0.to_owned()),
        booked_at,
        slot_start,
        attended: rng.random::<f64>() >= no_show,
        age: p.age,
        sex: p.sex.map(str::to_owned),
        extra,
        offered,
    }
}

/// A slot on the half hour between 08:00 and 19:30, Monday to Saturday,
/// mostly within two weeks of booking (exponential lead, capped at 60 days).
fn random_slot(booked_at: DateTime<Utc>, rng: &mut StdRng) -> DateTime<Utc> {
    let u: f64 = rng.random_range(1e-12..1.0);
    let lead_days = ((-u.ln() * 9.0) as i64).min(60);
    let hour = rng.random_range(8..20);
    let minute = if rng.random::<bool>() { 30 } else { 0 };
    let time = NaiveTime::from_hms_opt(hour, minute, 0).unwrap_or(NaiveTime::MIN);
    let mut day = booked_at.date_naive() + Duration::days(lead_days);
    let mut slot = day.and_time(time).and_utc();
    if slot <= booked_at + Duration::hours(1) {
        day += Duration::days(1);
        slot = day.and_time(time).and_utc();
    }
    if slot.weekday() == Weekday::Sun {
        slot += Duration::days(1);
    }
    slot
}

/// Index drawn with the given (summing to about 1) probabilities.
fn pick(rng: &mut StdRng, probabilities: &[f64]) -> usize {
    let mut u: f64 = rng.random();
    for (i, p) in probabilities.iter().enumerate() {
        if u < *p {
            return i;
        }
        u -= p;
    }
    probabilities.len() - 1
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn deterministic_and_well_formed() {
        let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
        let a = generate(50, 500, 42, now);
        assert_eq!(a, generate(50, 500, 42, now));
        assert_ne!(a, generate(50, 500, 43, now));
        assert_eq!(a.len(), 500);
        for r in &a {
            assert!(r.booked_at < r.slot_start && r.slot_start < now);
            assert_eq!(r.offered.len(), OFFERED);
            assert!(r.offered.contains(&r.slot_start));
            assert_eq!(r.extra.len(), 3);
        }
        assert!(a.windows(2).all(|w| w[0].booked_at <= w[1].booked_at));
        let no_shows = a.iter().filter(|r| !r.attended).count() as f64 / a.len() as f64;
        assert!((0.05..0.4).contains(&no_shows), "{no_shows}");
    }
}
