//! Patients' privacy rights and key management: re-encrypting everything
//! under the active key (`docspot keys rotate`), exporting a patient's data,
//! and erasing it.

use chrono::{DateTime, Utc};
use docspot_actors::{
    CalendarDirectory,
    calendar::{BookingError, Cancel},
    domain::{AppointmentStatus, UserId},
    store::{AuditNote, StoreError},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    domain::Role,
    error::ApiError,
    routes::AppointmentOut,
    store::{
        AppointmentDetails, EncryptedTable, Erasure, HistoryEntry, PatientProfile, Store,
        UserRecord,
    },
};

/// What a rotation did to one table.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TableRotation {
    /// Which table.
    pub table: EncryptedTable,
    /// Rows looked at.
    pub scanned: u64,
    /// Rows re-encrypted under the active key.
    pub rewritten: u64,
}

/// What [`rotate_keys`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RotationReport {
    /// Per table.
    pub tables: Vec<TableRotation>,
    /// Every row was looked at (`false`: stopped by the batch limit; run
    /// again to continue).
    pub complete: bool,
}

impl RotationReport {
    /// Rows re-encrypted in all tables.
    pub fn rewritten(&self) -> u64 {
        self.tables.iter().map(|t| t.rewritten).sum()
    }
}

/// Re-encrypts every encrypted field under the store's active key, `batch`
/// rows per transaction in primary-key order. Safe to interrupt: each batch
/// commits on its own and rows already under the active key are skipped, so
/// a rerun continues where the last one stopped (re-reading, not
/// re-writing, what is done). `max_batches` stops early (tests, or
/// spreading the work over several runs).
pub async fn rotate_keys(
    store: &dyn Store,
    batch: i64,
    max_batches: Option<u64>,
) -> Result<RotationReport, StoreError> {
    let batch = batch.max(1);
    let mut batches = 0u64;
    let mut tables = Vec::new();
    for table in EncryptedTable::ALL {
        let mut t = TableRotation {
            table,
            scanned: 0,
            rewritten: 0,
        };
        let mut after: Option<Uuid> = None;
        loop {
            if max_batches.is_some_and(|m| batches >= m) {
                tables.push(t);
                return Ok(RotationReport {
                    tables,
                    complete: false,
                });
            }
            let b = store.rotate_batch(table, after, batch).await?;
            batches += 1;
            t.scanned += b.scanned;
            t.rewritten += b.rewritten;
            match b.last {
                Some(last) if b.scanned as i64 >= batch => after = Some(last),
                _ => break,
            }
        }
        tables.push(t);
    }
    Ok(RotationReport {
        tables,
        complete: true,
    })
}

/// The account part of an export.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AccountExport {
    /// Identity.
    pub id: Uuid,
    /// Login e-mail.
    pub email: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// One appointment in an export, with everything kept about it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentExport {
    /// The appointment.
    #[serde(flatten)]
    pub appointment: AppointmentOut,
    /// Its history, oldest first.
    pub history: Vec<HistoryEntry>,
    /// Reason for visit and doctor's notes.
    pub details: Option<AppointmentDetails>,
}

/// What the suggestions endpoint showed the patient.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuggestionLogExport {
    /// For which doctor.
    pub doctor_id: Uuid,
    /// When.
    pub shown_at: DateTime<Utc>,
    /// The slot starts shown.
    pub starts: Vec<DateTime<Utc>>,
}

/// Everything DocSpot keeps about a patient (GDPR art. 15 / 20).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PatientExport {
    /// When the export was made.
    pub exported_at: DateTime<Utc>,
    /// The account.
    pub account: AccountExport,
    /// Phone and date of birth.
    pub profile: PatientProfile,
    /// Appointments, newest first.
    pub appointments: Vec<AppointmentExport>,
    /// Suggestions shown, oldest first.
    pub suggestion_logs: Vec<SuggestionLogExport>,
}

/// Collects a patient's data.
pub async fn export_patient(
    store: &dyn Store,
    user: &UserRecord,
) -> Result<PatientExport, StoreError> {
    let mut appointments = Vec::new();
    for a in store.patient_appointments(user.id).await? {
        appointments.push(AppointmentExport {
            history: store.history(a.id).await?,
            details: store.appointment_details(a.id).await?,
            appointment: a.into(),
        });
    }
    let suggestion_logs = store
        .suggestion_logs_of(user.id)
        .await?
        .into_iter()
        .map(|l| SuggestionLogExport {
            doctor_id: l.doctor.0,
            shown_at: l.shown_at,
            starts: l.starts,
        })
        .collect();
    Ok(PatientExport {
        exported_at: Utc::now(),
        account: AccountExport {
            id: user.id.0,
            email: user.email.clone(),
            name: user.name.clone(),
            role: user.role,
        },
        profile: store.profile(user.id).await?,
        appointments,
        suggestion_logs,
    })
}

/// What an erasure did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasureReport {
    /// Personal data removed.
    #[serde(flatten)]
    pub erased: Erasure,
    /// Future appointments (and holds) cancelled.
    pub cancelled_appointments: Vec<Uuid>,
    /// Appointments kept, without personal data, for the clinic's records.
    pub kept_appointments: usize,
}

/// What [`erase_patient`] did, and the first calendar failure, if any.
#[derive(Debug)]
pub struct ErasureOutcome {
    /// What was done.
    pub report: ErasureReport,
    /// The first cancellation that failed for a reason other than the
    /// appointment being gone already (the rest were still attempted). The
    /// personal data is erased regardless; erasing again retries.
    pub error: Option<ApiError>,
}

/// Erases a patient (GDPR art. 17): first the personal data, in one store
/// transaction (so it is gone even if a calendar is unreachable below), then
/// every future active appointment is cancelled through its doctor's
/// calendar actor — the path the cancel endpoint takes, so calendars, live
/// views and provider alerts stay right. Past appointments stay with their
/// times, status and doctor. The history note written is a fixed text:
/// history is append-only, so nothing personal may go into it.
///
/// Idempotent: erasing again cancels whatever is still active. One failed
/// cancellation does not stop the others (the data is erased by then, so
/// the caller must learn what is left): see [`ErasureOutcome::error`].
/// Each cancellation is audited with `audit` (who erased, from where),
/// written in the cancellation's own transaction.
/// `Ok(None)`: no such patient.
pub async fn erase_patient(
    store: &dyn Store,
    calendars: &CalendarDirectory,
    patient: UserId,
    by: UserId,
    audit: AuditNote,
) -> Result<Option<ErasureOutcome>, ApiError> {
    let Some(erased) = store.erase_patient(patient).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let mut cancelled = Vec::new();
    let mut kept = 0;
    let mut error = None;
    let appointments = match store.patient_appointments(patient).await {
        Ok(list) => list,
        Err(e) => {
            error = Some(e.into());
            Vec::new()
        }
    };
    for a in appointments {
        let future_active = matches!(
            a.status,
            AppointmentStatus::Held | AppointmentStatus::Booked
        ) && a.time.start() > now;
        if !future_active {
            kept += 1;
            continue;
        }
        let outcome = calendars
            .ask(
                a.doctor_id,
                Cancel {
                    id: a.id,
                    by,
                    reason: Some("patient data erased".into()),
                    sealed_reason: None,
                    enforce_cutoff: false,
                    holds_only: false,
                    audit: Some(audit.clone()),
                },
            )
            .await;
        match outcome {
            Ok(_) => cancelled.push(a.id.0),
            // Gone already: a hold that lapsed, an appointment cancelled
            // meanwhile, a doctor removed. Nothing is left to cancel.
            Err(
                BookingError::InvalidTransition(_)
                | BookingError::AppointmentNotFound
                | BookingError::DoctorNotFound
                | BookingError::HoldExpired,
            ) => {}
            Err(e) => {
                tracing::warn!(appointment = %a.id.0, error = %e, "erasure could not cancel");
                error.get_or_insert(e.into());
            }
        }
    }
    Ok(Some(ErasureOutcome {
        report: ErasureReport {
            erased,
            cancelled_appointments: cancelled,
            kept_appointments: kept,
        },
        error,
    }))
}
