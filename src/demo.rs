//! The demo clinic: doctors with weekly hours over the coming weeks and a
//! booking history from `docspot_ml::synthetic` (the generator the model's
//! own tests use), with its planted patterns: each patient prefers a time of
//! day and picks among offered slots accordingly; no-shows rise with lead
//! time. The offered slots are stored as suggestion logs, so ranking quality
//! can be measured on the exported history too.

use std::collections::HashMap;

use chrono::{Duration, NaiveTime, Utc, Weekday};
use docspot_actors::domain::{
    Appointment, AppointmentId, AppointmentStatus, AvailabilityRule, DoctorSchedule, UserId,
    VisitType, VisitTypeId,
};
use uuid::Uuid;

use crate::{
    auth::hash_password,
    domain::{Email, Role},
    store::{
        ClinicFields, DbError, DoctorFields, NewUser, RuleRecord, Store, SuggestionLog,
        VisitTypeRecord,
    },
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

/// Turns `docspot_ml`'s synthetic history (the one the model's own tests
/// recover patterns from) into the demo clinic's past visits: its six
/// doctors onto the demo doctors, its patients onto the demo patients, and
/// the five slots each booking was chosen from into suggestion logs, so
/// ranking quality can be measured on DocSpot's own exported history.
pub fn history_from_synthetic(
    rows: &[docspot_ml::PastAppointment],
    schedules: &[DoctorSchedule],
    patients: &[UserId],
) -> (Vec<Appointment>, Vec<SuggestionLog>) {
    let mut patient_of: HashMap<&str, UserId> = HashMap::new();
    let mut visits = Vec::with_capacity(rows.len());
    let mut logs = Vec::with_capacity(rows.len());
    if schedules.is_empty() || patients.is_empty() {
        return (visits, logs);
    }
    for r in rows {
        let next = patients[patient_of.len() % patients.len()];
        let patient = *patient_of.entry(r.patient_id.as_str()).or_insert(next);
        // "doc-3" → the third demo doctor.
        let k = r
            .doctor_id
            .as_deref()
            .and_then(|d| d.trim_start_matches("doc-").parse::<usize>().ok())
            .unwrap_or(1);
        let schedule = &schedules[(k.max(1) - 1) % schedules.len()];
        let Some(vt) = schedule.visit_type(None) else {
            continue;
        };
        let status = if r.attended {
            AppointmentStatus::Completed
        } else {
            AppointmentStatus::NoShow
        };
        visits.push(Appointment {
            id: AppointmentId::new(),
            doctor_id: schedule.doctor_id,
            patient_id: patient,
            visit_type_id: vt.id,
            time: vt.visit_at(r.slot_start),
            block: vt.block_at(r.slot_start),
            status,
            hold_expires_at: None,
            idempotency_key: None,
            cancel_reason: None,
            created_at: r.booked_at,
        });
        if !r.offered.is_empty() {
            logs.push(SuggestionLog {
                patient,
                doctor: schedule.doctor_id,
                shown_at: r.booked_at - Duration::minutes(1),
                starts: r.offered.clone(),
            });
        }
    }
    (visits, logs)
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
            visit_types: vec![VisitType::from(vt)],
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
        patients.push(u.id);
    }
    report.patients = patients.len();
    let rows = docspot_ml::synthetic::generate(patients.len(), past_appointments, 42, Utc::now());
    let (history, logs) = history_from_synthetic(&rows, &schedules, &patients);
    report.past_appointments = store.import_past_appointments(&history).await?;
    store.import_suggestion_logs(&logs).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use docspot_actors::domain::{ClinicId, DoctorId};

    #[test]
    fn synthetic_rows_map_onto_demo_doctors_patients_and_logs() {
        let vt = VisitType {
            id: VisitTypeId::new(),
            name: "v".into(),
            duration_minutes: 20,
            buffer_before_minutes: 0,
            buffer_after_minutes: 5,
            fee_cents: 0,
            currency: "USD".into(),
            is_default: true,
        };
        let schedules: Vec<DoctorSchedule> = (0..6)
            .map(|_| DoctorSchedule {
                doctor_id: DoctorId::new(),
                clinic_id: ClinicId::new(),
                time_zone: chrono_tz::UTC,
                rules: vec![],
                exceptions: vec![],
                visit_types: vec![vt.clone()],
                booking_horizon: Duration::days(14),
                cancellation_cutoff: Duration::zero(),
            })
            .collect();
        let patients: Vec<UserId> = (0..50).map(|_| UserId::new()).collect();
        let rows = docspot_ml::synthetic::generate(50, 2000, 1, Utc::now());
        let (visits, logs) = history_from_synthetic(&rows, &schedules, &patients);
        assert_eq!(visits.len(), 2000);
        assert_eq!(
            logs.len(),
            2000,
            "every synthetic booking was chosen from offered slots"
        );
        assert!(
            visits
                .iter()
                .all(|v| v.time.end() < Utc::now() && !v.status.is_active())
        );
        assert!(
            visits
                .iter()
                .all(|v| v.block.end() - v.time.end() == Duration::minutes(5))
        );
        let used: std::collections::HashSet<_> = visits.iter().map(|v| v.doctor_id).collect();
        assert_eq!(used.len(), 6, "every demo doctor has history");
        let no_shows = visits
            .iter()
            .filter(|v| v.status == AppointmentStatus::NoShow)
            .count();
        assert!(no_shows > 100 && no_shows < 1000, "{no_shows}");
    }
}
