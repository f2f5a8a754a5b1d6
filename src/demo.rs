//! The demo clinic: doctors with weekly hours over the coming weeks and a
//! synthetic booking history with planted patterns (each patient prefers a
//! time of day; no-shows rise with lead time), later used to train and test
//! suggestions.

use chrono::{DateTime, Duration, NaiveTime, Timelike, Utc, Weekday};
use docspot_actors::{
    domain::{
        Appointment, AppointmentId, AppointmentStatus, AvailabilityRule, DoctorSchedule, UserId,
        VisitType, VisitTypeId,
    },
    slots::{self, Bookable},
};
use rand::{Rng, SeedableRng, rngs::StdRng};
use uuid::Uuid;

use crate::{
    auth::hash_password,
    domain::{Email, Role},
    store::{ClinicFields, DbError, DoctorFields, NewUser, RuleRecord, Store, VisitTypeRecord},
};

/// Name of the demo clinic; seeding is skipped when it exists.
pub const DEMO_CLINIC: &str = "DocSpot Demo Clinic";
/// Password of every demo account.
pub const DEMO_PASSWORD: &str = "docspot-demo";

/// What was seeded.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Doctors created.
    pub doctors: usize,
    /// Patients created.
    pub patients: usize,
    /// Past appointments created.
    pub past_appointments: u64,
    /// Whether the demo clinic existed already.
    pub already_seeded: bool,
}

/// A patient of the synthetic history and the habits planted in it.
#[derive(Debug, Clone)]
pub struct SyntheticPatient {
    /// Account id.
    pub id: UserId,
    /// Preferred local hour of day (the planted preference).
    pub preferred_hour: u32,
    /// Base probability of not showing up.
    pub no_show_base: f64,
}

/// Generates `n` past appointments over the last `days` days for the given
/// doctors, on their real slot grids, with no two overlapping per doctor.
///
/// Planted patterns: a patient picks slots near their preferred hour 70 % of
/// the time; the no-show probability is `base + 0.004 × lead days` (capped),
/// so longer lead times mean more no-shows.
pub fn synthetic_history(
    schedules: &[DoctorSchedule],
    patients: &[SyntheticPatient],
    n: usize,
    days: i64,
    now: DateTime<Utc>,
    seed: u64,
) -> Vec<Appointment> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    if schedules.is_empty() || patients.is_empty() {
        return out;
    }
    let past = Bookable {
        now: now - Duration::days(days + 1),
        min_notice: Duration::zero(),
    };
    // Every past slot of every doctor, shuffled per doctor: picking without
    // replacement keeps a doctor's history free of overlaps.
    let mut grids: Vec<(usize, Vec<docspot_actors::domain::Slot>)> = schedules
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let vt = s.visit_type(None)?;
            let range =
                docspot_actors::domain::TimeRange::new(now - Duration::days(days), now).ok()?;
            let mut schedule = s.clone();
            schedule.booking_horizon = Duration::days(days + 2);
            Some((i, slots::candidate_slots(&schedule, vt, range, past)))
        })
        .collect();
    for (_, g) in &mut grids {
        for i in (1..g.len()).rev() {
            g.swap(i, rng.random_range(0..=i));
        }
    }
    while out.len() < n {
        let Some((gi, _)) = grids.iter().enumerate().find(|(_, (_, g))| !g.is_empty()) else {
            break;
        };
        let gi = (gi + rng.random_range(0..grids.len())) % grids.len();
        let (si, grid) = &mut grids[gi];
        let Some(slot) = grid.pop() else { continue };
        let schedule = &schedules[*si];
        let local_hour = slot.start.with_timezone(&schedule.time_zone).hour();
        // Choose a patient: mostly one whose preferred hour is close.
        let patient = if rng.random_bool(0.7) {
            let close: Vec<&SyntheticPatient> = patients
                .iter()
                .filter(|p| p.preferred_hour.abs_diff(local_hour) <= 1)
                .collect();
            if close.is_empty() {
                &patients[rng.random_range(0..patients.len())]
            } else {
                close[rng.random_range(0..close.len())]
            }
        } else {
            &patients[rng.random_range(0..patients.len())]
        };
        let lead_days = rng.random_range(0..45i64);
        let created =
            slot.start - Duration::days(lead_days) - Duration::minutes(rng.random_range(10..600));
        let p_no_show = (patient.no_show_base + 0.004 * lead_days as f64).min(0.6);
        let status = if rng.random_bool(0.08) {
            AppointmentStatus::Cancelled
        } else if rng.random_bool(p_no_show) {
            AppointmentStatus::NoShow
        } else {
            AppointmentStatus::Completed
        };
        let Some(vt) = schedule.visit_type(None) else {
            continue;
        };
        out.push(Appointment {
            id: AppointmentId::new(),
            doctor_id: schedule.doctor_id,
            patient_id: patient.id,
            visit_type_id: vt.id,
            time: vt.visit_at(slot.start),
            block: vt.block_at(slot.start),
            status,
            hold_expires_at: None,
            idempotency_key: None,
            cancel_reason: (status == AppointmentStatus::Cancelled)
                .then(|| "patient request".into()),
            created_at: created,
        });
    }
    out
}

struct DemoDoctor {
    name: &'static str,
    specialties: &'static [&'static str],
    languages: &'static [&'static str],
    visit: (&'static str, i32, i32),
    days: &'static [Weekday],
    hours: &'static [(&'static str, &'static str)],
}

const DOCTORS: &[DemoDoctor] = &[
    DemoDoctor {
        name: "Dr. Amara Okafor",
        specialties: &["general practice"],
        languages: &["en", "yo"],
        visit: ("Consultation", 20, 0),
        days: &[
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ],
        hours: &[("08:00", "12:00"), ("13:00", "17:00")],
    },
    DemoDoctor {
        name: "Dr. Lukas Weber",
        specialties: &["cardiology"],
        languages: &["de", "en"],
        visit: ("Cardiology consultation", 30, 10),
        days: &[Weekday::Mon, Weekday::Wed, Weekday::Fri],
        hours: &[("09:00", "13:00"), ("14:00", "17:00")],
    },
    DemoDoctor {
        name: "Dr. Priya Raman",
        specialties: &["dermatology"],
        languages: &["en", "ta", "hi"],
        visit: ("Skin check", 15, 5),
        days: &[Weekday::Tue, Weekday::Thu, Weekday::Sat],
        hours: &[("08:30", "12:30")],
    },
    DemoDoctor {
        name: "Dr. Sofia Marín",
        specialties: &["pediatrics"],
        languages: &["es", "en"],
        visit: ("Child visit", 30, 0),
        days: &[Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu],
        hours: &[("10:00", "18:00")],
    },
    DemoDoctor {
        name: "Dr. Kenji Tanaka",
        specialties: &["orthopedics", "sports medicine"],
        languages: &["ja", "en"],
        visit: ("Orthopedic exam", 40, 5),
        days: &[Weekday::Wed, Weekday::Thu, Weekday::Fri],
        hours: &[("07:30", "11:30"), ("12:30", "15:30")],
    },
    DemoDoctor {
        name: "Dr. Hannah Cohen",
        specialties: &["psychiatry"],
        languages: &["en", "he"],
        visit: ("Therapy session", 50, 10),
        days: &[Weekday::Mon, Weekday::Tue, Weekday::Thu],
        hours: &[("12:00", "20:00")],
    },
];

/// Seeds the demo clinic unless it exists.
pub async fn seed(store: &dyn Store, past_appointments: usize) -> Result<DemoReport, DbError> {
    if store.clinics().await?.iter().any(|c| c.name == DEMO_CLINIC) {
        return Ok(DemoReport {
            already_seeded: true,
            ..Default::default()
        });
    }
    let clinic = store
        .create_clinic(ClinicFields {
            name: DEMO_CLINIC.into(),
            address: "1 Harbour Street, Springfield".into(),
            latitude: Some(40.7128),
            longitude: Some(-74.006),
            time_zone: "America/New_York".into(),
            cancellation_cutoff_minutes: 120,
            booking_horizon_days: 14,
        })
        .await?;
    let hash = hash_password(DEMO_PASSWORD)
        .map_err(|e| DbError::Unavailable(docspot_actors::store::StoreError(e.to_string())))?;
    let mut report = DemoReport::default();
    let mut schedules = Vec::new();
    for (i, d) in DOCTORS.iter().enumerate() {
        let doctor = store
            .create_doctor(
                clinic.id,
                DoctorFields {
                    name: d.name.into(),
                    specialties: d.specialties.iter().map(|s| s.to_string()).collect(),
                    languages: d.languages.iter().map(|s| s.to_string()).collect(),
                    active: true,
                },
            )
            .await?;
        let vt = store
            .create_visit_type(
                doctor.id,
                VisitTypeRecord {
                    id: VisitTypeId::new(),
                    doctor_id: doctor.id,
                    name: d.visit.0.into(),
                    duration_minutes: d.visit.1,
                    buffer_before_minutes: 0,
                    buffer_after_minutes: d.visit.2,
                    fee_cents: 6000 + 1000 * i as i64,
                    currency: "USD".into(),
                    is_default: true,
                },
            )
            .await?;
        let mut rules = Vec::new();
        for day in d.days {
            for (from, to) in d.hours {
                let start_time = NaiveTime::parse_from_str(from, "%H:%M").unwrap_or_default();
                let end_time = NaiveTime::parse_from_str(to, "%H:%M").unwrap_or_default();
                let weekday = day.number_from_monday() as i16;
                store
                    .create_rule(
                        doctor.id,
                        RuleRecord {
                            id: Uuid::now_v7(),
                            weekday,
                            start_time,
                            end_time,
                            valid_from: None,
                            valid_until: None,
                        },
                    )
                    .await?;
                rules.push(AvailabilityRule {
                    weekday: *day,
                    start: start_time,
                    end: end_time,
                    valid_from: None,
                    valid_until: None,
                });
            }
        }
        let email = Email::parse(&format!("doctor{}@demo.docspot.test", i + 1))
            .map_err(|e| DbError::Unavailable(docspot_actors::store::StoreError(e.to_string())))?;
        store
            .create_user(NewUser {
                email,
                name: d.name.into(),
                role: Role::Doctor,
                doctor_id: Some(doctor.id),
                clinic_id: Some(clinic.id),
                password_hash: hash.clone(),
            })
            .await?;
        schedules.push(DoctorSchedule {
            doctor_id: doctor.id,
            clinic_id: clinic.id,
            time_zone: chrono_tz::America::New_York,
            rules,
            exceptions: vec![],
            visit_types: vec![VisitType {
                id: vt.id,
                name: vt.name,
                duration_minutes: vt.duration_minutes,
                buffer_before_minutes: vt.buffer_before_minutes,
                buffer_after_minutes: vt.buffer_after_minutes,
                fee_cents: vt.fee_cents,
                currency: vt.currency,
                is_default: true,
            }],
            booking_horizon: Duration::days(14),
            cancellation_cutoff: Duration::minutes(120),
        });
        report.doctors += 1;
    }
    let admin_email = Email::parse("admin@demo.docspot.test")
        .map_err(|e| DbError::Unavailable(docspot_actors::store::StoreError(e.to_string())))?;
    store
        .create_user(NewUser {
            email: admin_email,
            name: "Demo Clinic Admin".into(),
            role: Role::ClinicAdmin,
            doctor_id: None,
            clinic_id: Some(clinic.id),
            password_hash: hash.clone(),
        })
        .await?;

    let mut rng = StdRng::seed_from_u64(7);
    let mut patients = Vec::new();
    for i in 0..300 {
        let email = Email::parse(&format!("patient{}@demo.docspot.test", i + 1))
            .map_err(|e| DbError::Unavailable(docspot_actors::store::StoreError(e.to_string())))?;
        let u = store
            .create_user(NewUser {
                email,
                name: format!("Demo Patient {}", i + 1),
                role: Role::Patient,
                doctor_id: None,
                clinic_id: None,
                password_hash: hash.clone(),
            })
            .await?;
        patients.push(SyntheticPatient {
            id: u.id,
            preferred_hour: rng.random_range(8..19),
            no_show_base: rng.random_range(0.02..0.15),
        });
    }
    report.patients = patients.len();
    let history = synthetic_history(
        &schedules,
        &patients,
        past_appointments,
        180,
        Utc::now(),
        42,
    );
    report.past_appointments = store.import_past_appointments(&history).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use docspot_actors::domain::{ClinicId, DoctorId};

    #[test]
    fn history_has_planted_patterns_and_no_overlaps() {
        let vt = VisitType {
            id: VisitTypeId::new(),
            name: "v".into(),
            duration_minutes: 20,
            buffer_before_minutes: 0,
            buffer_after_minutes: 0,
            fee_cents: 0,
            currency: "USD".into(),
            is_default: true,
        };
        let rules = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
        ]
        .iter()
        .map(|d| AvailabilityRule {
            weekday: *d,
            start: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(18, 0, 0).unwrap(),
            valid_from: None,
            valid_until: None,
        })
        .collect();
        let s = DoctorSchedule {
            doctor_id: DoctorId::new(),
            clinic_id: ClinicId::new(),
            time_zone: chrono_tz::UTC,
            rules,
            exceptions: vec![],
            visit_types: vec![vt],
            booking_horizon: Duration::days(14),
            cancellation_cutoff: Duration::zero(),
        };
        let patients: Vec<SyntheticPatient> = (0..50)
            .map(|i| SyntheticPatient {
                id: UserId::new(),
                preferred_hour: 8 + (i % 10),
                no_show_base: 0.05,
            })
            .collect();
        let h = synthetic_history(
            std::slice::from_ref(&s),
            &patients,
            3000,
            180,
            Utc::now(),
            1,
        );
        assert_eq!(h.len(), 3000);
        let mut starts: Vec<_> = h.iter().map(|a| a.time.start()).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 3000, "no two appointments share a slot");
        // Preference: most appointments are within an hour of the patient's preferred hour.
        let near = h
            .iter()
            .filter(|a| {
                let p = patients.iter().find(|p| p.id == a.patient_id).unwrap();
                p.preferred_hour.abs_diff(a.time.start().hour()) <= 1
            })
            .count();
        assert!(
            near as f64 / h.len() as f64 > 0.6,
            "preference planted: {near}"
        );
        // Lead time drives no-shows.
        let rate = |lo: i64, hi: i64| {
            let v: Vec<_> = h
                .iter()
                .filter(|a| a.status != AppointmentStatus::Cancelled)
                .filter(|a| {
                    let d = (a.time.start() - a.created_at).num_days();
                    d >= lo && d < hi
                })
                .collect();
            v.iter()
                .filter(|a| a.status == AppointmentStatus::NoShow)
                .count() as f64
                / v.len() as f64
        };
        assert!(
            rate(30, 46) > rate(0, 10) + 0.05,
            "no-show rises with lead time"
        );
    }
}
