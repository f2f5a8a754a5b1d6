//! PostgreSQL implementation of [`Store`] and [`CalendarStore`].
//!
//! The database is the arbiter: the `appointments_no_overlap` exclusion
//! constraint refuses overlapping active appointments whatever node writes
//! them. Inserts use `ON CONFLICT DO NOTHING`, which treats that constraint
//! (and the idempotency-key index) as arbiters without raising an error, so a
//! lost race costs no savepoint and never aborts the rest of a group commit.
//!
//! # Provider alerts
//!
//! Each appointment write that a doctor must hear about also inserts a
//! `provider_alerts` row, in the same statement (one more CTE, no extra round
//! trip). Before it draws an alert id, that CTE locks the doctor's row
//! (`FOR NO KEY UPDATE`, which does not block the foreign-key checks of
//! bookings) until commit, so one doctor's alert ids commit in id order even
//! when several nodes write for the doctor: a reader paging with
//! `id > last_seen` cannot skip an alert that commits late.
//!
//! # Layout
//!
//! - this file: the pool, the commit lanes (group commit) and the queries;
//! - `connect`: how the database URL becomes connections (plain, or TLS
//!   verified with rustls for `sslmode=require`);
//! - `privacy`: encrypted patient fields, export, erasure, key rotation and
//!   the one-time passes over data written before encryption.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use deadpool_postgres::{GenericClient, ManagerConfig, Pool, RecyclingMethod};
use docspot_actors::{
    domain::{
        Appointment, AppointmentId, AppointmentStatus, AvailabilityException, AvailabilityRule,
        ClinicId, DoctorId, DoctorSchedule, TimeRange, UserId, VisitType, VisitTypeId,
        parse_time_zone, weekday_from_iso,
    },
    store::{AuditNote, CalendarStore, OpError, StoreError, Write, WriteOp},
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Row, error::SqlState};
use uuid::Uuid;

mod connect;
mod privacy;

pub use connect::ConnectError;
use connect::Target;

use super::privacy::{SealedUser, open_user};
use super::{
    Clinic, ClinicFields, DbError, Doctor, DoctorFields, ExceptionRecord, HistoryEntry, NewUser,
    PastVisit, ProviderAlert, RefreshOutcome, RuleRecord, Store, SuggestionLog, UserRecord,
    VisitTypeRecord,
};
use crate::{crypto::FieldCipher, domain::Email};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

const APPT_COLS: &str = "id, doctor_id, patient_id, visit_type_id, starts_at, ends_at, \
    block_start, block_end, status, hold_expires_at, idempotency_key, cancel_reason, created_at";

/// Locks the doctor's row of the CTE row `src` until commit: taken by every
/// alert insert before it draws an id, so a doctor's alerts commit in id order
/// (see the module documentation). `NO KEY UPDATE` leaves the foreign-key
/// checks (`KEY SHARE`) of concurrent bookings unblocked.
macro_rules! alert_lock {
    ($src:literal) => {
        concat!(
            " CROSS JOIN LATERAL (SELECT 1 FROM doctors d WHERE d.id = ",
            $src,
            ".doctor_id FOR NO KEY UPDATE) AS alert_lock"
        )
    };
}

/// A store error naming its causes (see [`connect::describe`]: never
/// PostgreSQL's DETAIL).
fn unavailable(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> StoreError {
    StoreError(connect::describe(e.into().as_ref()))
}

/// Creates the database named in `url` if it does not exist yet.
pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    let target = Target::parse(url).map_err(unavailable)?;
    let name = target
        .config
        .get_dbname()
        .ok_or_else(|| StoreError("database URL names no database".into()))?
        .to_string();
    let mut admin = target.clone();
    admin.config.dbname("postgres");
    let client = admin.connect().await.map_err(unavailable)?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(unavailable)?
        .is_some();
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match client
            .execute(&format!("CREATE DATABASE {quoted}"), &[])
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another node created it at the same moment: fine.
            Err(e) if e.code() == Some(&SqlState::DUPLICATE_DATABASE) => {}
            Err(e) => return Err(unavailable(e)),
        }
    }
    Ok(())
}

/// Applies pending migrations. An advisory lock keeps two nodes starting at
/// once from racing over the schema.
pub async fn migrate(url: &str) -> Result<usize, StoreError> {
    let mut client = Target::parse(url)
        .map_err(unavailable)?
        .connect()
        .await
        .map_err(unavailable)?;
    client
        .execute("SELECT pg_advisory_lock(7243110)", &[])
        .await
        .map_err(unavailable)?;
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(unavailable);
    client
        .execute("SELECT pg_advisory_unlock(7243110)", &[])
        .await
        .map_err(unavailable)?;
    Ok(report?.applied_migrations().len())
}

/// Applies migrations up to and including `version` only (tests build
/// databases as older releases left them).
pub async fn migrate_to(url: &str, version: i32) -> Result<usize, StoreError> {
    let mut client = Target::parse(url)
        .map_err(unavailable)?
        .connect()
        .await
        .map_err(unavailable)?;
    let report = embedded::migrations::runner()
        .set_target(refinery::Target::Version(version))
        .run_async(&mut client)
        .await
        .map_err(unavailable)?;
    Ok(report.applied_migrations().len())
}

/// A pool of at most `size` connections to `url`, opened lazily (shared by
/// the store and the audit log, each with a pool of its own).
pub(crate) fn pool(url: &str, size: usize) -> Result<Pool, String> {
    let mgr = Target::parse(url)
        .map_err(|e| e.to_string())?
        .manager(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
    Pool::builder(mgr)
        .max_size(size)
        .build()
        .map_err(|e| e.to_string())
}

/// The PostgreSQL store: a connection pool, and commit lanes that group
/// the batches of many doctors into one transaction.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Seals and opens the encrypted columns.
    cipher: Arc<FieldCipher>,
    lanes: Arc<OnceLock<Vec<mpsc::UnboundedSender<Job>>>>,
    /// How many lanes (`database.commit_lanes`).
    lane_count: usize,
}
/// Most writes one grouped transaction takes.
const MAX_GROUP_OPS: usize = 512;

/// One calendar's batch waiting for its lane.
struct Job {
    doctor: DoctorId,
    ops: Vec<Write>,
    reply: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
}

impl PgStore {
    /// Provider alerts chosen by `filter` (what follows `FROM
    /// provider_alerts`), with `params` for its placeholders.
    async fn alerts(
        &self,
        filter: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<ProviderAlert>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT id, doctor_id, appointment_id, patient_id, kind, at, starts_at,
                        ends_at, previous_start, status
                     FROM provider_alerts {filter}"
                ),
                params,
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(provider_alert).collect()
    }

    /// Connects a pool of `size` connections (lazily), with `lanes` commit
    /// lanes (at least 1, at most `size - 1`, so reads always find a
    /// connection); encrypted columns are sealed and opened with `cipher`.
    pub fn connect(
        url: &str,
        size: usize,
        lanes: usize,
        cipher: Arc<FieldCipher>,
    ) -> Result<Self, StoreError> {
        let pool = pool(url, size.max(2)).map_err(StoreError)?;
        Ok(Self {
            pool,
            cipher,
            lanes: Arc::new(OnceLock::new()),
            lane_count: lanes.clamp(1, size.max(2) - 1),
        })
    }

    /// The doctor's commit lane, started on first use (inside the runtime).
    ///
    /// A doctor always uses the same lane. Order needs no more than that:
    /// a calendar sends its next batch only once the last one is answered.
    /// Lanes run in parallel.
    fn lane(&self, doctor: DoctorId) -> &mpsc::UnboundedSender<Job> {
        let lanes = self.lanes.get_or_init(|| {
            (0..self.lane_count)
                .map(|_| {
                    let (tx, rx) = mpsc::unbounded_channel();
                    tokio::spawn(run_lane(self.pool.clone(), rx));
                    tx
                })
                .collect()
        });
        &lanes[(doctor.0.as_u128() % lanes.len() as u128) as usize]
    }

    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(unavailable)
    }
}

fn appointment(row: &Row) -> Result<Appointment, StoreError> {
    let status: &str = row.get("status");
    Ok(Appointment {
        id: AppointmentId(row.get("id")),
        doctor_id: DoctorId(row.get("doctor_id")),
        patient_id: UserId(row.get("patient_id")),
        visit_type_id: VisitTypeId(row.get("visit_type_id")),
        time: TimeRange::new(row.get("starts_at"), row.get("ends_at")).map_err(unavailable)?,
        block: TimeRange::new(row.get("block_start"), row.get("block_end")).map_err(unavailable)?,
        status: status.parse().map_err(unavailable)?,
        hold_expires_at: row.get("hold_expires_at"),
        idempotency_key: row.get("idempotency_key"),
        cancel_reason: row.get("cancel_reason"),
        created_at: row.get("created_at"),
    })
}

fn provider_alert(row: &Row) -> Result<ProviderAlert, StoreError> {
    let status: &str = row.get("status");
    Ok(ProviderAlert {
        id: row.get("id"),
        doctor_id: DoctorId(row.get("doctor_id")),
        appointment_id: AppointmentId(row.get("appointment_id")),
        patient_id: UserId(row.get("patient_id")),
        kind: row.get("kind"),
        at: row.get("at"),
        start: row.get("starts_at"),
        end: row.get("ends_at"),
        previous_start: row.get("previous_start"),
        status: status.parse().map_err(unavailable)?,
    })
}

fn user(row: &Row, cipher: &FieldCipher) -> Result<UserRecord, StoreError> {
    let role: &str = row.get("role");
    let id: Uuid = row.get("id");
    let (email, name) = open_user(
        cipher,
        id,
        row.get::<_, Option<&[u8]>>("email_enc"),
        row.get::<_, Option<&[u8]>>("name_enc"),
    )
    .map_err(unavailable)?;
    Ok(UserRecord {
        id: UserId(id),
        email,
        name,
        role: role.parse().map_err(unavailable)?,
        doctor_id: row.get::<_, Option<Uuid>>("doctor_id").map(DoctorId),
        clinic_id: row.get::<_, Option<Uuid>>("clinic_id").map(ClinicId),
        password_hash: row.get("password_hash"),
    })
}

fn clinic(row: &Row) -> Clinic {
    Clinic {
        id: ClinicId(row.get("id")),
        name: row.get("name"),
        address: row.get("address"),
        latitude: row.get("latitude"),
        longitude: row.get("longitude"),
        time_zone: row.get("time_zone"),
        cancellation_cutoff_minutes: row.get("cancellation_cutoff_minutes"),
        booking_horizon_days: row.get("booking_horizon_days"),
    }
}

const DOCTOR_SELECT: &str = "SELECT d.id, d.name, d.specialties, d.languages, d.clinic_id, \
    d.active, c.time_zone FROM doctors d JOIN clinics c ON c.id = d.clinic_id";

fn doctor(row: &Row) -> Doctor {
    Doctor {
        id: DoctorId(row.get("id")),
        name: row.get("name"),
        specialties: row.get("specialties"),
        languages: row.get("languages"),
        clinic_id: ClinicId(row.get("clinic_id")),
        time_zone: row.get("time_zone"),
        active: row.get("active"),
    }
}

fn visit_type(row: &Row) -> VisitTypeRecord {
    VisitTypeRecord {
        id: VisitTypeId(row.get("id")),
        doctor_id: DoctorId(row.get("doctor_id")),
        name: row.get("name"),
        duration_minutes: row.get("duration_minutes"),
        buffer_before_minutes: row.get("buffer_before_minutes"),
        buffer_after_minutes: row.get("buffer_after_minutes"),
        fee_cents: row.get("fee_cents"),
        currency: row.get("currency"),
        is_default: row.get("is_default"),
    }
}

fn rule(row: &Row) -> RuleRecord {
    RuleRecord {
        id: row.get("id"),
        weekday: row.get("weekday"),
        start_time: row.get("start_time"),
        end_time: row.get("end_time"),
        valid_from: row.get("valid_from"),
        valid_until: row.get("valid_until"),
    }
}

fn exception(row: &Row) -> Result<ExceptionRecord, StoreError> {
    let kind: &str = row.get("kind");
    Ok(ExceptionRecord {
        id: row.get("id"),
        kind: kind.parse().map_err(unavailable)?,
        start: row.get("starts_at"),
        end: row.get("ends_at"),
        reason: row.get("reason"),
    })
}

/// Maps a constraint failure on a catalogue write to a client-facing error.
fn catalogue_error(e: tokio_postgres::Error, what: &'static str) -> DbError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => DbError::Conflict(what),
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => DbError::Missing(what),
        _ => DbError::Unavailable(unavailable(e)),
    }
}

/// The history action name for a status change.
fn action_for(to: AppointmentStatus, by: Option<UserId>, reason: Option<&str>) -> &'static str {
    match to {
        AppointmentStatus::Booked => "confirm",
        AppointmentStatus::Cancelled if by.is_none() && reason == Some("hold_expired") => "expire",
        AppointmentStatus::Cancelled => "cancel",
        AppointmentStatus::Completed => "complete",
        AppointmentStatus::NoShow => "no_show",
        AppointmentStatus::Held => "hold",
    }
}

type Outcome = Result<Appointment, OpError>;

/// The audit-record part of a write statement: a CTE that puts the
/// write's [`AuditNote`] into the outbox for the row(s) `src` returns —
/// so only if the write applied, in its own transaction, with no extra
/// round trip. Its seven parameters start at `$first` ([`NoteParams`]);
/// with no note they are NULL and nothing is written.
fn audit_cte(src: &str, first: usize) -> String {
    let p = |i: usize| format!("${}", first + i);
    format!(
        ", audit AS (
            INSERT INTO audit_outbox (at, actor_id, actor_role, action, patient_id, resource_type,
                resource_id, clinic_id, client_ip, request_id, outcome)
            SELECT {at}::timestamptz, {actor}::uuid, {role}::text, {action}::text, {src}.patient_id,
                'appointment', {src}.id, {clinic}::uuid, {ip}::text, {req}::text, 'success'
            FROM {src} WHERE {action}::text IS NOT NULL
        )",
        at = p(0),
        actor = p(1),
        role = p(2),
        action = p(3),
        clinic = p(4),
        ip = p(5),
        req = p(6),
    )
}

/// An [`AuditNote`] as the seven parameters of [`audit_cte`].
struct NoteParams {
    at: Option<DateTime<Utc>>,
    actor: Option<uuid::Uuid>,
    role: Option<&'static str>,
    action: Option<&'static str>,
    clinic: Option<uuid::Uuid>,
    ip: Option<String>,
    request: Option<String>,
}

impl NoteParams {
    fn of(n: Option<&AuditNote>) -> Self {
        NoteParams {
            at: n.map(|n| n.at),
            actor: n.and_then(|n| n.actor_id.map(|u| u.0)),
            role: n.map(|n| n.actor_role),
            action: n.map(|n| n.action),
            clinic: n.and_then(|n| n.clinic_id.map(|c| c.0)),
            ip: n.and_then(|n| n.client_ip.map(|ip| ip.to_string())),
            request: n.and_then(|n| n.request_id.clone()),
        }
    }

    fn refs(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 7] {
        [
            &self.at,
            &self.actor,
            &self.role,
            &self.action,
            &self.clinic,
            &self.ip,
            &self.request,
        ]
    }
}

/// One new appointment ([`insert_many`] with one row), sorting out why it
/// collided when it does.
async fn insert(
    tx: &Conn,
    a: &Appointment,
    by: UserId,
    note: Option<&AuditNote>,
) -> Result<Outcome, tokio_postgres::Error> {
    for attempt in 0..2 {
        if let Some(done) = insert_many(tx, &[(a, by, note)]).await?.pop().flatten() {
            return Ok(done);
        }
        // Nothing inserted: either the idempotency key was used already…
        if let Some(key) = &a.idempotency_key {
            let sql = format!(
                "SELECT {APPT_COLS} FROM appointments WHERE patient_id = $1 AND idempotency_key = $2"
            );
            if let Some(row) = tx.query_opt(&sql, &[&a.patient_id.0, key]).await? {
                let existing = appointment(&row).map_err(|e| OpError::Other(e.0));
                return Ok(existing.and_then(|e| Err(OpError::Duplicate(Box::new(e)))));
            }
        }
        // …or the time overlaps. Lapsed holds (left by a crashed node) do not
        // count: cancel them and try once more.
        if attempt == 0 && expire_overlapping_holds(tx, a).await? == 0 {
            break;
        }
    }
    Ok(Err(OpError::SlotTaken))
}

async fn expire_overlapping_holds(
    tx: &Conn,
    a: &Appointment,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        "WITH exp AS (
            UPDATE appointments SET status = 'cancelled', cancel_reason = 'hold_expired', updated_at = now()
            WHERE doctor_id = $1 AND status = 'held' AND hold_expires_at <= now()
              AND tstzrange(block_start, block_end, '[)') && tstzrange($2, $3, '[)')
            RETURNING id, starts_at
        )
        INSERT INTO appointment_history (appointment_id, action, from_status, to_status, from_start, to_start, note)
        SELECT id, 'expire', 'held', 'cancelled', starts_at, starts_at, 'hold expired' FROM exp",
        &[&a.doctor_id.0, &a.block.start(), &a.block.end()],
    )
    .await
}

/// Explains why a guarded UPDATE matched no row.
async fn diagnose(
    tx: &Conn,
    id: AppointmentId,
    doctor: DoctorId,
    from: &[AppointmentStatus],
    starts_after: Option<DateTime<Utc>>,
    hold_valid_at: Option<DateTime<Utc>>,
) -> Result<OpError, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT status, starts_at, hold_expires_at FROM appointments WHERE id = $1 AND doctor_id = $2",
            &[&id.0, &doctor.0],
        )
        .await?;
    let Some(row) = row else {
        return Ok(OpError::NotFound);
    };
    let status: AppointmentStatus = match row.get::<_, &str>("status").parse() {
        Ok(s) => s,
        Err(e) => return Ok(OpError::Other(e.to_string())),
    };
    let starts_at: DateTime<Utc> = row.get("starts_at");
    let expires: Option<DateTime<Utc>> = row.get("hold_expires_at");
    Ok(if !from.contains(&status) {
        OpError::InvalidTransition(status)
    } else if starts_after.is_some_and(|t| starts_at <= t) {
        OpError::CutoffPassed
    } else if hold_valid_at.is_some_and(|t| expires.is_none_or(|e| e <= t)) {
        OpError::HoldExpired
    } else {
        OpError::Other("appointment changed concurrently".into())
    })
}

#[allow(clippy::too_many_arguments)]
async fn set_status(
    tx: &Conn,
    doctor: DoctorId,
    id: AppointmentId,
    from: &[AppointmentStatus],
    to: AppointmentStatus,
    by: Option<UserId>,
    (reason, sealed_reason): (Option<&str>, Option<&[u8]>),
    starts_after: Option<DateTime<Utc>>,
    hold_valid_at: Option<DateTime<Utc>>,
    note: Option<&AuditNote>,
) -> Result<Outcome, tokio_postgres::Error> {
    // The canceller's words go, sealed, into the appointment's details
    // (`det`), only if the change applies; `reason` is a fixed code.
    let sql = format!(
        "WITH cur AS (
            SELECT id, status, starts_at FROM appointments WHERE id = $1 AND doctor_id = $2 FOR UPDATE
        ), upd AS (
            UPDATE appointments a SET status = $4,
                cancel_reason = COALESCE($5, a.cancel_reason),
                hold_expires_at = CASE WHEN $4 = 'booked' THEN NULL ELSE a.hold_expires_at END,
                updated_at = now()
            FROM cur
            WHERE a.id = cur.id AND cur.status = ANY($3::text[])
              AND ($6::timestamptz IS NULL OR a.starts_at > $6)
              AND ($7::timestamptz IS NULL OR a.hold_expires_at > $7)
            RETURNING a.*, cur.status AS old_status
        ), hist AS (
            INSERT INTO appointment_history (appointment_id, actor_user_id, action, from_status, to_status, from_start, to_start, note)
            SELECT id, $8, $9, old_status, status, starts_at, starts_at, COALESCE($5, '') FROM upd
        ), alert AS (
            INSERT INTO provider_alerts (doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at, status)
            SELECT upd.doctor_id, upd.id, upd.patient_id,
                CASE WHEN upd.status = 'booked' THEN 'hold_confirmed' ELSE 'cancelled' END,
                upd.updated_at, upd.starts_at, upd.ends_at, upd.status
            FROM upd{lock}
            WHERE (upd.old_status = 'held' AND upd.status = 'booked')
               OR (upd.old_status = 'booked' AND upd.status = 'cancelled')
        ), det AS (
            INSERT INTO appointment_details (appointment_id, cancel_reason_enc)
            SELECT id, $17::bytea FROM upd WHERE $17::bytea IS NOT NULL
            ON CONFLICT (appointment_id) DO UPDATE SET
                cancel_reason_enc = EXCLUDED.cancel_reason_enc, updated_at = now()
        ){audit}
        SELECT {APPT_COLS} FROM upd",
        lock = alert_lock!("upd"),
        audit = audit_cte("upd", 10),
    );
    let from_names: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
    let action = action_for(to, by, reason);
    let stmt = tx.prepare_cached(&sql).await?;
    let (to_name, by) = (to.as_str(), by.map(|u| u.0));
    let note = NoteParams::of(note);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &id.0,
        &doctor.0,
        &from_names,
        &to_name,
        &reason,
        &starts_after,
        &hold_valid_at,
        &by,
        &action,
    ];
    params.extend(note.refs());
    params.push(&sealed_reason);
    let row = tx.query_opt(&stmt, &params).await?;
    match row {
        Some(row) => Ok(appointment(&row).map_err(|e| OpError::Other(e.0))),
        None => Ok(Err(diagnose(
            tx,
            id,
            doctor,
            from,
            starts_after,
            hold_valid_at,
        )
        .await?)),
    }
}

async fn reschedule(
    tx: &Conn,
    doctor: DoctorId,
    op: (
        AppointmentId,
        TimeRange,
        TimeRange,
        UserId,
        Option<DateTime<Utc>>,
    ),
    note: Option<&AuditNote>,
) -> Result<Outcome, tokio_postgres::Error> {
    let (id, time, block, by, starts_after) = op;
    let sql = format!(
        "WITH cur AS (
            SELECT id, status, starts_at FROM appointments WHERE id = $1 AND doctor_id = $2 FOR UPDATE
        ), upd AS (
            UPDATE appointments a SET starts_at = $3, ends_at = $4, block_start = $5, block_end = $6,
                updated_at = now()
            FROM cur
            WHERE a.id = cur.id AND cur.status IN ('held', 'booked')
              AND ($7::timestamptz IS NULL OR cur.starts_at > $7)
            RETURNING a.*, cur.starts_at AS old_start
        ), hist AS (
            INSERT INTO appointment_history (appointment_id, actor_user_id, action, from_status, to_status, from_start, to_start)
            SELECT id, $8, 'reschedule', status, status, old_start, starts_at FROM upd
        ), alert AS (
            INSERT INTO provider_alerts (doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at,
                previous_start, status)
            SELECT upd.doctor_id, upd.id, upd.patient_id, 'rescheduled', upd.updated_at, upd.starts_at,
                upd.ends_at, upd.old_start, upd.status
            FROM upd{lock}
            WHERE upd.status = 'booked'
        ){audit}
        SELECT {APPT_COLS} FROM upd",
        lock = alert_lock!("upd"),
        audit = audit_cte("upd", 9),
    );
    // The new range may collide (another node booked it): that raises an
    // exclusion violation, so this one write runs under a savepoint to keep
    // the rest of the batch.
    tx.batch_execute("SAVEPOINT reschedule").await?;
    let (visit, busy) = ([time.start(), time.end()], [block.start(), block.end()]);
    let note = NoteParams::of(note);
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![
        &id.0,
        &doctor.0,
        &visit[0],
        &visit[1],
        &busy[0],
        &busy[1],
        &starts_after,
        &by.0,
    ];
    params.extend(note.refs());
    let res = tx.query_opt(&sql, &params).await;
    match res {
        Ok(Some(row)) => {
            tx.batch_execute("RELEASE SAVEPOINT reschedule").await?;
            Ok(appointment(&row).map_err(|e| OpError::Other(e.0)))
        }
        Ok(None) => {
            tx.batch_execute("RELEASE SAVEPOINT reschedule").await?;
            let active = [AppointmentStatus::Held, AppointmentStatus::Booked];
            Ok(Err(
                diagnose(tx, id, doctor, &active, starts_after, None).await?
            ))
        }
        Err(e) if e.code() == Some(&SqlState::EXCLUSION_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT reschedule").await?;
            Ok(Err(OpError::SlotTaken))
        }
        Err(e) => Err(e),
    }
}

/// New appointments in one statement (a group's, in a morning rush: the hot
/// path). Each row is inserted with its history entry, its provider alert
/// and its audit record; rows that collide (a used idempotency key, an
/// overlap another node wrote, a lapsed hold still in the way) are skipped
/// by `ON CONFLICT DO NOTHING` and come back as `None`, for [`insert`] to
/// sort out one by one.
///
/// Why one statement: on this hardware PostgreSQL's per-statement work
/// (executor start-up, snapshot, trigger queue) is a large part of a
/// single-row insert; a group of fifty bookings pays it once instead of
/// fifty times. (The calendar actors have already checked that the rows do
/// not overlap each other.)
async fn insert_many(
    tx: &Conn,
    rows: &[(&Appointment, UserId, Option<&AuditNote>)],
) -> Result<Vec<Option<Outcome>>, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "WITH v AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[],
                $9::text[], $10::timestamptz[], $11::text[], $12::timestamptz[], $13::uuid[],
                $14::timestamptz[], $15::uuid[], $16::text[], $17::text[], $18::uuid[],
                $19::text[], $20::text[]) WITH ORDINALITY
            AS v(id, doctor_id, patient_id, visit_type_id, starts_at, ends_at, block_start,
                block_end, status, hold_expires_at, idempotency_key, created_at, by_user,
                note_at, note_actor, note_role, note_action, note_clinic, note_ip, note_request, n)
        ), ins AS (
            INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at, ends_at,
                block_start, block_end, status, hold_expires_at, idempotency_key, created_at, updated_at)
            SELECT id, doctor_id, patient_id, visit_type_id, starts_at, ends_at, block_start,
                block_end, status, hold_expires_at, idempotency_key, created_at, created_at
            FROM v ORDER BY n
            ON CONFLICT DO NOTHING
            RETURNING {APPT_COLS}
        ), hist AS (
            INSERT INTO appointment_history (appointment_id, at, actor_user_id, action, to_status, to_start)
            SELECT ins.id, ins.created_at, v.by_user,
                CASE WHEN ins.status = 'held' THEN 'hold' ELSE 'book' END, ins.status, ins.starts_at
            FROM ins JOIN v ON v.id = ins.id ORDER BY v.n
        ), alert AS (
            INSERT INTO provider_alerts (doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at, status)
            SELECT ins.doctor_id, ins.id, ins.patient_id, 'booked', ins.created_at, ins.starts_at, ins.ends_at, ins.status
            FROM ins JOIN v ON v.id = ins.id{lock}
            WHERE ins.status = 'booked'
            ORDER BY v.n
        ), audit AS (
            INSERT INTO audit_outbox (at, actor_id, actor_role, action, patient_id, resource_type,
                resource_id, clinic_id, client_ip, request_id, outcome)
            SELECT v.note_at, v.note_actor, v.note_role, v.note_action, ins.patient_id, 'appointment',
                ins.id, v.note_clinic, v.note_ip, v.note_request, 'success'
            FROM ins JOIN v ON v.id = ins.id
            WHERE v.note_action IS NOT NULL
            ORDER BY v.n
        )
        SELECT {APPT_COLS} FROM ins",
        lock = alert_lock!("ins"),
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let col = |f: &dyn Fn(&Appointment) -> uuid::Uuid| -> Vec<uuid::Uuid> {
        rows.iter().map(|(a, _, _)| f(a)).collect()
    };
    let time = |f: &dyn Fn(&Appointment) -> DateTime<Utc>| -> Vec<DateTime<Utc>> {
        rows.iter().map(|(a, _, _)| f(a)).collect()
    };
    let notes: Vec<NoteParams> = rows.iter().map(|(_, _, n)| NoteParams::of(*n)).collect();
    let (ids, doctors, patients, visit_types) = (
        col(&|a| a.id.0),
        col(&|a| a.doctor_id.0),
        col(&|a| a.patient_id.0),
        col(&|a| a.visit_type_id.0),
    );
    let (starts, ends, block_starts, block_ends, created) = (
        time(&|a| a.time.start()),
        time(&|a| a.time.end()),
        time(&|a| a.block.start()),
        time(&|a| a.block.end()),
        time(&|a| a.created_at),
    );
    let statuses: Vec<&str> = rows.iter().map(|(a, _, _)| a.status.as_str()).collect();
    let expiries: Vec<Option<DateTime<Utc>>> =
        rows.iter().map(|(a, _, _)| a.hold_expires_at).collect();
    let keys: Vec<Option<&str>> = rows
        .iter()
        .map(|(a, _, _)| a.idempotency_key.as_deref())
        .collect();
    let by: Vec<uuid::Uuid> = rows.iter().map(|(_, by, _)| by.0).collect();
    let note_at: Vec<Option<DateTime<Utc>>> = notes.iter().map(|n| n.at).collect();
    let note_actor: Vec<Option<uuid::Uuid>> = notes.iter().map(|n| n.actor).collect();
    let note_role: Vec<Option<&str>> = notes.iter().map(|n| n.role).collect();
    let note_action: Vec<Option<&str>> = notes.iter().map(|n| n.action).collect();
    let note_clinic: Vec<Option<uuid::Uuid>> = notes.iter().map(|n| n.clinic).collect();
    let note_ip: Vec<Option<&str>> = notes.iter().map(|n| n.ip.as_deref()).collect();
    let note_req: Vec<Option<&str>> = notes.iter().map(|n| n.request.as_deref()).collect();
    let inserted = tx
        .query(
            &stmt,
            &[
                &ids,
                &doctors,
                &patients,
                &visit_types,
                &starts,
                &ends,
                &block_starts,
                &block_ends,
                &statuses,
                &expiries,
                &keys,
                &created,
                &by,
                &note_at,
                &note_actor,
                &note_role,
                &note_action,
                &note_clinic,
                &note_ip,
                &note_req,
            ],
        )
        .await?;
    let mut by_id: std::collections::HashMap<uuid::Uuid, Outcome> =
        std::collections::HashMap::with_capacity(inserted.len());
    for row in &inserted {
        let id: uuid::Uuid = row.get("id");
        by_id.insert(id, appointment(row).map_err(|e| OpError::Other(e.0)));
    }
    Ok(rows.iter().map(|(a, _, _)| by_id.remove(&a.id.0)).collect())
}

/// Applies a run of writes with no reschedule among them, pipelined: the
/// new appointments in one statement ([`insert_many`]), every other write
/// in its own statement, all sent without waiting; then, one by one, the
/// few inserts that collided (to tell a duplicate from a taken slot, and
/// to clear lapsed holds). Outcomes come back in the order of `writes`.
async fn apply_pipelined(
    tx: &Conn,
    writes: &[(DoctorId, &Write)],
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    // Sends nothing (and so keeps the pipeline) unless the group has holds
    // under a cap.
    let refused = over_hold_cap(tx, writes).await?;
    let new: Vec<(&Appointment, UserId, Option<&AuditNote>)> = writes
        .iter()
        .enumerate()
        .filter(|(i, _)| !refused.contains_key(i))
        .filter_map(|(_, (_, w))| match &w.op {
            WriteOp::Insert {
                appointment, by, ..
            } => Some((appointment, *by, w.audit.as_ref())),
            _ => None,
        })
        .collect();
    let others = futures::future::try_join_all(
        writes
            .iter()
            .filter(|(_, w)| !matches!(w.op, WriteOp::Insert { .. }))
            .map(|(doctor, w)| apply(tx, *doctor, w)),
    );
    let (inserted, others) = futures::try_join!(insert_many(tx, &new), others)?;
    let (mut inserted, mut others) = (inserted.into_iter(), others.into_iter());
    let mut out = Vec::with_capacity(writes.len());
    for (i, (doctor, w)) in writes.iter().enumerate() {
        if let Some(refusal) = refused.get(&i) {
            out.push(Err(refusal.clone()));
            continue;
        }
        out.push(match &w.op {
            WriteOp::Insert { .. } => match inserted.next().flatten() {
                Some(done) => done,
                // Collided: the one-row path finds out why (and retries
                // once past lapsed holds).
                None => apply(tx, *doctor, w).await?,
            },
            _ => others
                .next()
                .unwrap_or_else(|| Err(OpError::Other("no outcome".into()))),
        });
    }
    Ok(out)
}

/// Applies writes one statement after another (a run with reschedules,
/// whose savepoints must not interleave with other statements), refusing
/// holds over their patient's cap first. The doctors are locked already.
async fn apply_sequential(
    tx: &Conn,
    writes: &[(DoctorId, &Write)],
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    let refused = over_hold_cap(tx, writes).await?;
    let mut out = Vec::with_capacity(writes.len());
    for (i, (doctor, w)) in writes.iter().enumerate() {
        out.push(match refused.get(&i) {
            Some(refusal) => Err(refusal.clone()),
            None => apply(tx, *doctor, w).await?,
        });
    }
    Ok(out)
}

/// The holds of `writes` (by index) that would take their patient over the
/// cap the hold carries (`WriteOp::Insert::max_live_holds`): the arbiter of
/// the hold cap across nodes.
///
/// Locks the patients' user rows first (in id order, after the doctors: the
/// same order in every transaction, so none deadlock), then counts their live
/// holds in a statement of its own, which in READ COMMITTED sees every hold
/// committed by whoever held the lock before. Two nodes' holds for one
/// patient so count one after the other, whatever calendars they go through.
/// `NO KEY UPDATE` conflicts with itself but not with the foreign-key checks
/// of the patient's bookings, which go on unblocked. Within the group, holds
/// are granted in the order of `writes`; a granted hold that then loses its
/// slot leaves its place unused (the cap errs on the side of refusing).
///
/// Sends nothing, and answers at once, when no write is a capped hold.
async fn over_hold_cap(
    tx: &Conn,
    writes: &[(DoctorId, &Write)],
) -> Result<std::collections::HashMap<usize, OpError>, tokio_postgres::Error> {
    let capped: Vec<(usize, uuid::Uuid, u32)> = writes
        .iter()
        .enumerate()
        .filter_map(|(i, (_, w))| match &w.op {
            WriteOp::Insert {
                appointment,
                max_live_holds: Some(cap),
                ..
            } if appointment.status == AppointmentStatus::Held => {
                Some((i, appointment.patient_id.0, *cap))
            }
            _ => None,
        })
        .collect();
    let mut refused = std::collections::HashMap::new();
    if capped.is_empty() {
        return Ok(refused);
    }
    let mut patients: Vec<uuid::Uuid> = capped.iter().map(|&(_, p, _)| p).collect();
    patients.sort_unstable();
    patients.dedup();
    let (lock, count) = futures::try_join!(
        tx.prepare_cached("SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE"),
        tx.prepare_cached(
            "SELECT patient_id, count(*) AS n FROM appointments
             WHERE patient_id = ANY($1) AND status = 'held' AND hold_expires_at > now()
             GROUP BY patient_id"
        ),
    )?;
    // Sent together; the count runs once the locks are granted.
    let p: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&patients];
    let (_, rows) = futures::try_join!(tx.execute(&lock, &p), tx.query(&count, &p))?;
    let mut live: std::collections::HashMap<uuid::Uuid, i64> = rows
        .iter()
        .map(|r| (r.get("patient_id"), r.get("n")))
        .collect();
    for (i, patient, cap) in capped {
        let n = live.entry(patient).or_insert(0);
        if *n >= i64::from(cap) {
            refused.insert(i, OpError::TooManyHolds(cap));
        } else {
            *n += 1;
        }
    }
    Ok(refused)
}

/// Applies one write, with its audit record if it applied.
async fn apply(tx: &Conn, doctor: DoctorId, w: &Write) -> Result<Outcome, tokio_postgres::Error> {
    let note = w.audit.as_ref();
    match &w.op {
        WriteOp::Insert {
            appointment, by, ..
        } => insert(tx, appointment, *by, note).await,
        WriteOp::Reschedule {
            id,
            time,
            block,
            by,
            starts_after,
        } => reschedule(tx, doctor, (*id, *time, *block, *by, *starts_after), note).await,
        WriteOp::SetStatus {
            id,
            from,
            to,
            by,
            reason,
            sealed_reason,
            starts_after,
            hold_valid_at,
        } => {
            set_status(
                tx,
                doctor,
                *id,
                from,
                *to,
                *by,
                (reason.as_deref(), sealed_reason.as_deref()),
                *starts_after,
                *hold_valid_at,
                note,
            )
            .await
        }
    }
}

/// The connection calendar writes run on, inside [`in_transaction`].
type Conn = deadpool_postgres::ClientWrapper;

/// Runs `work` in one transaction on `client`. `BEGIN` goes out together
/// with the first statements of `work` (pipelined: it costs no round trip
/// of its own, a third of a group's round trips otherwise); `COMMIT`
/// follows when `work` succeeds, `ROLLBACK` otherwise, so the connection
/// goes back to the pool outside any transaction.
///
/// Why not tokio-postgres' `Transaction`: it waits for `BEGIN`'s answer
/// before anything else can be sent.
async fn in_transaction<'c, T, Fut>(
    client: &'c Conn,
    work: impl FnOnce(&'c Conn) -> Fut,
) -> Result<T, tokio_postgres::Error>
where
    Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + 'c,
{
    // `try_join!` polls — and so sends — `BEGIN` before `work`'s statements.
    match futures::try_join!(client.batch_execute("BEGIN"), work(client)) {
        Ok(((), out)) => {
            client.batch_execute("COMMIT").await?;
            Ok(out)
        }
        Err(e) => {
            // Statements already sent run on and fail ("transaction
            // aborted"); this ends the transaction after them.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn apply_all(
    client: &mut deadpool_postgres::Client,
    doctor: DoctorId,
    ops: &[Write],
) -> Result<Vec<Outcome>, tokio_postgres::Error> {
    // Lock the doctor first, always: every batch for one doctor (from any
    // node) then takes its locks in the same order, so two nodes' batches
    // wait for each other instead of deadlocking on each other's rows, and
    // alert ids commit in id order per doctor.
    lock_statement(client).await?;
    in_transaction(client, |tx| async move {
        if ops
            .iter()
            .any(|w| matches!(w.op, WriteOp::Reschedule { .. }))
        {
            // Savepoints must not interleave with other writes.
            lock_doctor(tx, doctor).await?;
            let writes: Vec<(DoctorId, &Write)> = ops.iter().map(|w| (doctor, w)).collect();
            apply_sequential(tx, &writes).await
        } else {
            // Pipelined, the lock first (see `apply_group`).
            let writes: Vec<(DoctorId, &Write)> = ops.iter().map(|w| (doctor, w)).collect();
            let (_, out) =
                futures::try_join!(lock_doctor(tx, doctor), apply_pipelined(tx, &writes))?;
            Ok(out)
        }
    })
    .await
}

#[async_trait]
impl CalendarStore for PgStore {
    async fn load_schedule(&self, doctor: DoctorId) -> Result<Option<DoctorSchedule>, StoreError> {
        let client = self.client().await?;
        let head = client
            .query_opt(
                "SELECT d.clinic_id, c.time_zone, c.booking_horizon_days, c.cancellation_cutoff_minutes
                 FROM doctors d JOIN clinics c ON c.id = d.clinic_id WHERE d.id = $1 AND d.active",
                &[&doctor.0],
            )
            .await
            .map_err(unavailable)?;
        let Some(head) = head else {
            return Ok(None);
        };
        // Issued together, these three pipeline over the one connection.
        let since = Utc::now() - Duration::days(1);
        let id = doctor.0;
        let (p1, p2): (
            [&(dyn tokio_postgres::types::ToSql + Sync); 1],
            [&(dyn tokio_postgres::types::ToSql + Sync); 2],
        ) = ([&id], [&id, &since]);
        let (rules, exceptions, visit_types) = futures::try_join!(
            client.query(
                "SELECT weekday, start_time, end_time, valid_from, valid_until
                 FROM availability_rules WHERE doctor_id = $1",
                &p1
            ),
            client.query(
                "SELECT kind, starts_at, ends_at FROM availability_exceptions
                 WHERE doctor_id = $1 AND ends_at > $2",
                &p2
            ),
            client.query(
                "SELECT * FROM visit_types WHERE doctor_id = $1 ORDER BY created_at",
                &p1
            ),
        )
        .map_err(unavailable)?;
        let tz: &str = head.get("time_zone");
        Ok(Some(DoctorSchedule {
            doctor_id: doctor,
            clinic_id: ClinicId(head.get("clinic_id")),
            time_zone: parse_time_zone(tz).map_err(unavailable)?,
            rules: rules
                .iter()
                .map(|r| {
                    Ok(AvailabilityRule {
                        weekday: weekday_from_iso(r.get("weekday")).map_err(unavailable)?,
                        start: r.get::<_, NaiveTime>("start_time"),
                        end: r.get::<_, NaiveTime>("end_time"),
                        valid_from: r.get::<_, Option<NaiveDate>>("valid_from"),
                        valid_until: r.get::<_, Option<NaiveDate>>("valid_until"),
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            exceptions: exceptions
                .iter()
                .map(|r| {
                    Ok(AvailabilityException {
                        kind: r.get::<_, &str>("kind").parse().map_err(unavailable)?,
                        range: TimeRange::new(r.get("starts_at"), r.get("ends_at"))
                            .map_err(unavailable)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?,
            visit_types: visit_types
                .iter()
                .map(|r| VisitType::from(visit_type(r)))
                .collect(),
            booking_horizon: Duration::days(i64::from(head.get::<_, i32>("booking_horizon_days"))),
            cancellation_cutoff: Duration::minutes(i64::from(
                head.get::<_, i32>("cancellation_cutoff_minutes"),
            )),
        }))
    }

    async fn load_active(
        &self,
        doctor: DoctorId,
        since: DateTime<Utc>,
    ) -> Result<Vec<Appointment>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT {APPT_COLS} FROM appointments
             WHERE doctor_id = $1 AND status IN ('held', 'booked') AND block_end > $2"
        );
        let rows = client
            .query(&sql, &[&doctor.0, &since])
            .await
            .map_err(unavailable)?;
        rows.iter().map(appointment).collect()
    }

    async fn commit_batch(
        &self,
        doctor: DoctorId,
        ops: Vec<Write>,
    ) -> Result<Vec<Outcome>, StoreError> {
        // Group commit across doctors: the lane folds the batches of every
        // calendar that is waiting into one transaction (one WAL flush),
        // where a calendar alone would mostly commit one booking at a time.
        let (reply, answer) = oneshot::channel();
        match self.lane(doctor).send(Job { doctor, ops, reply }) {
            Ok(()) => answer
                .await
                .unwrap_or_else(|_| Err(StoreError("commit lane stopped".into()))),
            Err(mpsc::error::SendError(job)) => {
                let mut client = self.client().await?;
                commit_alone(&mut client, job.doctor, &job.ops).await
            }
        }
    }
}

/// Serves one commit lane: takes every batch that is waiting (up to
/// `MAX_GROUP_OPS` writes), commits them in one transaction with the
/// doctors locked in id order (the same order on every node, so grouped
/// transactions never deadlock), and answers each calendar. Should the
/// grouped transaction fail as a whole, each batch is committed alone.
async fn run_lane(pool: Pool, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.ops.len();
        let mut jobs = vec![first];
        while n < MAX_GROUP_OPS {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.ops.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let mut client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                let e = unavailable(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        if jobs.len() > 1 {
            jobs.sort_by_key(|j| j.doctor);
            match apply_group(&mut client, &jobs).await {
                Ok(outcomes) => {
                    for (job, out) in jobs.into_iter().zip(outcomes) {
                        let _ = job.reply.send(Ok(out));
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, batches = jobs.len(), "grouped commit failed; committing batches alone");
                }
            }
        }
        for job in jobs {
            let out = commit_alone(&mut client, job.doctor, &job.ops).await;
            let _ = job.reply.send(out);
        }
    }
}

/// Several doctors' batches in one transaction.
async fn apply_group(
    client: &mut deadpool_postgres::Client,
    jobs: &[Job],
) -> Result<Vec<Vec<Outcome>>, tokio_postgres::Error> {
    lock_statement(client).await?;
    in_transaction(client, |tx| async move {
        if jobs
            .iter()
            .flat_map(|j| &j.ops)
            .any(|w| matches!(w.op, WriteOp::Reschedule { .. }))
        {
            // Reschedules use savepoints, which must not interleave with
            // other writes: one statement after another. All doctors first,
            // in order, then the patients a hold cap needs (see
            // `over_hold_cap`).
            for job in jobs {
                lock_doctor(tx, job.doctor).await?;
            }
            let writes: Vec<(DoctorId, &Write)> = jobs
                .iter()
                .flat_map(|job| job.ops.iter().map(move |w| (job.doctor, w)))
                .collect();
            let mut flat = apply_sequential(tx, &writes).await?.into_iter();
            Ok(jobs
                .iter()
                .map(|job| flat.by_ref().take(job.ops.len()).collect())
                .collect())
        } else {
            // Pipelined: every statement is sent without waiting for the one
            // before; PostgreSQL still runs them in the order sent on the
            // one connection, so the group costs about one round trip, not
            // one per write. The locks go first, in doctor order
            // (`try_join!` polls — and so sends — its futures in order, as
            // `try_join_all` does its items; the lock statement is prepared
            // beforehand, so each lock is sent on its first poll).
            let locks =
                futures::future::try_join_all(jobs.iter().map(|job| lock_doctor(tx, job.doctor)));
            let writes: Vec<(DoctorId, &Write)> = jobs
                .iter()
                .flat_map(|job| job.ops.iter().map(move |w| (job.doctor, w)))
                .collect();
            let (_, flat) = futures::try_join!(locks, apply_pipelined(tx, &writes))?;
            // Back into one list of outcomes per job.
            let mut flat = flat.into_iter();
            Ok(jobs
                .iter()
                .map(|job| flat.by_ref().take(job.ops.len()).collect())
                .collect())
        }
    })
    .await
}

/// Locks the doctor's row (see `apply_all` for why, always first). The
/// statement is prepared before anything is pipelined, so the lock is sent
/// on the first poll and so ahead of the writes queued after it.
async fn lock_doctor(tx: &Conn, doctor: DoctorId) -> Result<(), tokio_postgres::Error> {
    let stmt = lock_statement(tx).await?;
    tx.execute(&stmt, &[&doctor.0]).await?;
    Ok(())
}

async fn lock_statement(tx: &Conn) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
    tx.prepare_cached("SELECT 1 FROM doctors WHERE id = $1 FOR NO KEY UPDATE")
        .await
}

/// One doctor's batch in its own transaction; a hard failure of one write
/// is isolated by committing the writes one by one.
async fn commit_alone(
    client: &mut deadpool_postgres::Client,
    doctor: DoctorId,
    ops: &[Write],
) -> Result<Vec<Outcome>, StoreError> {
    {
        match apply_all(client, doctor, ops).await {
            Ok(out) => Ok(out),
            Err(e) if e.is_closed() || ops.len() == 1 => Err(unavailable(e)),
            Err(e) => {
                // One write failed hard (not a lost race: those are outcomes).
                // Find it by committing each write on its own, so the others
                // still go through.
                tracing::warn!(error = %e, n = ops.len(), "batch failed; retrying writes one by one");
                let mut out = Vec::with_capacity(ops.len());
                let mut closed = false;
                for op in ops {
                    if closed {
                        // Keep what already committed; the rest is unknown.
                        out.push(Err(OpError::Other("connection lost".into())));
                        continue;
                    }
                    out.push(
                        match apply_all(client, doctor, std::slice::from_ref(op)).await {
                            Ok(mut v) => {
                                v.pop().unwrap_or(Err(OpError::Other("no outcome".into())))
                            }
                            Err(e) => {
                                closed = e.is_closed();
                                Err(OpError::Other(e.to_string()))
                            }
                        },
                    );
                }
                Ok(out)
            }
        }
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(unavailable)?;
        Ok(())
    }

    async fn create_user(&self, u: NewUser) -> Result<UserRecord, DbError> {
        let id = UserId::new();
        let sealed =
            SealedUser::seal(&self.cipher, id, u.email.as_str(), &u.name).map_err(unavailable)?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO users (id, email_hash, email_enc, password_hash, name_enc, role,
                    doctor_id, clinic_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                &[
                    &id.0,
                    &sealed.email_hash,
                    &sealed.email,
                    &u.password_hash,
                    &sealed.name,
                    &u.role.as_str(),
                    &u.doctor_id.map(|d| d.0),
                    &u.clinic_id.map(|c| c.0),
                ],
            )
            .await
            .map_err(|e| catalogue_error(e, "account"))?;
        Ok(user(&row, &self.cipher)?)
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT * FROM users WHERE email_hash = $1",
                &[&self.cipher.email_index(email.as_str())],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(|r| user(r, &self.cipher)).transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM users WHERE id = $1", &[&id.0])
            .await
            .map_err(unavailable)?;
        row.as_ref().map(|r| user(r, &self.cipher)).transpose()
    }

    async fn insert_refresh_token(
        &self,
        user: UserId,
        digest: &[u8],
        family: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, expires_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&Uuid::now_v7(), &user.0, &digest, &family, &expires_at],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        digest: &[u8],
        next: &[u8],
        next_expires: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let row = tx
            .query_opt(
                // The account row too, share-locked: an erasure running now
                // either committed first (erased_at is seen and the token is
                // refused) or waits for this rotation, then revokes the new
                // token along with the rest.
                "SELECT t.id, t.user_id, t.family_id, t.expires_at, t.used_at, t.revoked_at,
                    u.erased_at
                 FROM refresh_tokens t JOIN users u ON u.id = t.user_id
                 WHERE t.token_hash = $1 FOR UPDATE OF t FOR SHARE OF u",
                &[&digest],
            )
            .await
            .map_err(unavailable)?;
        let Some(row) = row else {
            return Ok(RefreshOutcome::Invalid);
        };
        let family: Uuid = row.get("family_id");
        let used: Option<DateTime<Utc>> = row.get("used_at");
        let revoked: Option<DateTime<Utc>> = row.get("revoked_at");
        let expires: DateTime<Utc> = row.get("expires_at");
        if used.is_some() {
            // A replay: someone holds a copy of a rotated token. Revoke the
            // whole family so neither copy keeps working.
            tx.execute(
                "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
                &[&family],
            )
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(RefreshOutcome::Reused);
        }
        let erased: Option<DateTime<Utc>> = row.get("erased_at");
        // An erased account signs in no more, whatever tokens it still holds.
        if revoked.is_some() || erased.is_some() || expires <= Utc::now() {
            return Ok(RefreshOutcome::Invalid);
        }
        let token_id: Uuid = row.get("id");
        tx.execute(
            "UPDATE refresh_tokens SET used_at = now() WHERE id = $1",
            &[&token_id],
        )
        .await
        .map_err(unavailable)?;
        let user_row = tx
            .query_one(
                "SELECT * FROM users WHERE id = $1",
                &[&row.get::<_, Uuid>("user_id")],
            )
            .await
            .map_err(unavailable)?;
        tx.execute(
            "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &Uuid::now_v7(),
                &user_row.get::<_, Uuid>("id"),
                &next,
                &family,
                &next_expires,
            ],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(RefreshOutcome::Rotated {
            user: user(&user_row, &self.cipher)?,
            family,
        })
    }

    async fn revoke_refresh_family(&self, digest: &[u8]) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE refresh_tokens SET revoked_at = now()
                 WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)
                   AND revoked_at IS NULL",
                &[&digest],
            )
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn create_clinic(&self, f: ClinicFields) -> Result<Clinic, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO clinics (id, name, address, latitude, longitude, time_zone,
                    cancellation_cutoff_minutes, booking_horizon_days)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *",
                &[
                    &ClinicId::new().0,
                    &f.name,
                    &f.address,
                    &f.latitude,
                    &f.longitude,
                    &f.time_zone,
                    &f.cancellation_cutoff_minutes,
                    &f.booking_horizon_days,
                ],
            )
            .await
            .map_err(|e| catalogue_error(e, "clinic"))?;
        Ok(clinic(&row))
    }

    async fn update_clinic(&self, id: ClinicId, f: ClinicFields) -> Result<Clinic, DbError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE clinics SET name = $2, address = $3, latitude = $4, longitude = $5,
                    time_zone = $6, cancellation_cutoff_minutes = $7, booking_horizon_days = $8
                 WHERE id = $1 RETURNING *",
                &[
                    &id.0,
                    &f.name,
                    &f.address,
                    &f.latitude,
                    &f.longitude,
                    &f.time_zone,
                    &f.cancellation_cutoff_minutes,
                    &f.booking_horizon_days,
                ],
            )
            .await
            .map_err(|e| catalogue_error(e, "clinic"))?;
        row.map(|r| clinic(&r)).ok_or(DbError::Missing("clinic"))
    }

    async fn clinic(&self, id: ClinicId) -> Result<Option<Clinic>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM clinics WHERE id = $1", &[&id.0])
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| clinic(&r)))
    }

    async fn clinics(&self) -> Result<Vec<Clinic>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT * FROM clinics ORDER BY name", &[])
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(clinic).collect())
    }

    async fn create_doctor(&self, c: ClinicId, f: DoctorFields) -> Result<Doctor, DbError> {
        let client = self.client().await?;
        let id = DoctorId::new();
        client
            .execute(
                "INSERT INTO doctors (id, clinic_id, name, specialties, languages, active)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &id.0,
                    &c.0,
                    &f.name,
                    &f.specialties,
                    &f.languages,
                    &f.active,
                ],
            )
            .await
            .map_err(|e| catalogue_error(e, "clinic"))?;
        self.doctor(id).await?.ok_or(DbError::Missing("doctor"))
    }

    async fn update_doctor(&self, id: DoctorId, f: DoctorFields) -> Result<Doctor, DbError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE doctors SET name = $2, specialties = $3, languages = $4, active = $5 WHERE id = $1",
                &[&id.0, &f.name, &f.specialties, &f.languages, &f.active],
            )
            .await
            .map_err(|e| catalogue_error(e, "doctor"))?;
        if n == 0 {
            return Err(DbError::Missing("doctor"));
        }
        self.doctor(id).await?.ok_or(DbError::Missing("doctor"))
    }

    async fn doctor(&self, id: DoctorId) -> Result<Option<Doctor>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("{DOCTOR_SELECT} WHERE d.id = $1"), &[&id.0])
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| doctor(&r)))
    }

    async fn doctors(
        &self,
        clinic: Option<ClinicId>,
        specialty: Option<&str>,
    ) -> Result<Vec<Doctor>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "{DOCTOR_SELECT} WHERE d.active
                       AND ($1::uuid IS NULL OR d.clinic_id = $1)
                       AND ($2::text IS NULL OR EXISTS (
                            SELECT 1 FROM unnest(d.specialties) s WHERE lower(s) = lower($2)))
                     ORDER BY d.name, d.id"
                ),
                &[&clinic.map(|c| c.0), &specialty],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(doctor).collect())
    }

    async fn create_visit_type(
        &self,
        doctor: DoctorId,
        v: VisitTypeRecord,
    ) -> Result<VisitTypeRecord, DbError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if v.is_default {
            tx.execute(
                "UPDATE visit_types SET is_default = false WHERE doctor_id = $1 AND is_default",
                &[&doctor.0],
            )
            .await
            .map_err(unavailable)?;
        }
        let row = tx
            .query_one(
                "INSERT INTO visit_types (id, doctor_id, name, duration_minutes, buffer_before_minutes,
                    buffer_after_minutes, fee_cents, currency, is_default)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
                &[
                    &v.id.0,
                    &doctor.0,
                    &v.name,
                    &v.duration_minutes,
                    &v.buffer_before_minutes,
                    &v.buffer_after_minutes,
                    &v.fee_cents,
                    &v.currency,
                    &v.is_default,
                ],
            )
            .await
            .map_err(|e| catalogue_error(e, "doctor"))?;
        tx.commit().await.map_err(unavailable)?;
        Ok(visit_type(&row))
    }

    async fn visit_types(&self, doctor: DoctorId) -> Result<Vec<VisitTypeRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM visit_types WHERE doctor_id = $1 ORDER BY created_at",
                &[&doctor.0],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(visit_type).collect())
    }

    async fn create_rule(&self, doctor: DoctorId, r: RuleRecord) -> Result<RuleRecord, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO availability_rules (id, doctor_id, weekday, start_time, end_time, valid_from, valid_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *",
                &[
                    &r.id,
                    &doctor.0,
                    &r.weekday,
                    &r.start_time,
                    &r.end_time,
                    &r.valid_from,
                    &r.valid_until,
                ],
            )
            .await
            .map_err(|e| catalogue_error(e, "doctor"))?;
        Ok(rule(&row))
    }

    async fn rules(&self, doctor: DoctorId) -> Result<Vec<RuleRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM availability_rules WHERE doctor_id = $1 ORDER BY weekday, start_time",
                &[&doctor.0],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(rule).collect())
    }

    async fn delete_rule(&self, doctor: DoctorId, id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM availability_rules WHERE doctor_id = $1 AND id = $2",
                &[&doctor.0, &id],
            )
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn create_exception(
        &self,
        doctor: DoctorId,
        e: ExceptionRecord,
    ) -> Result<ExceptionRecord, DbError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO availability_exceptions (id, doctor_id, kind, starts_at, ends_at, reason)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
                &[&e.id, &doctor.0, &e.kind.as_str(), &e.start, &e.end, &e.reason],
            )
            .await
            .map_err(|e| catalogue_error(e, "doctor"))?;
        Ok(exception(&row)?)
    }

    async fn exceptions(
        &self,
        doctor: DoctorId,
        since: DateTime<Utc>,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM availability_exceptions WHERE doctor_id = $1 AND ends_at > $2 ORDER BY starts_at",
                &[&doctor.0, &since],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(exception).collect()
    }

    async fn delete_exception(&self, doctor: DoctorId, id: Uuid) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM availability_exceptions WHERE doctor_id = $1 AND id = $2",
                &[&doctor.0, &id],
            )
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {APPT_COLS} FROM appointments WHERE id = $1"),
                &[&id.0],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(appointment).transpose()
    }

    async fn appointment_by_key(
        &self,
        patient: UserId,
        key: &str,
    ) -> Result<Option<Appointment>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "SELECT {APPT_COLS} FROM appointments WHERE patient_id = $1 AND idempotency_key = $2"
                ),
                &[&patient.0, &key],
            )
            .await
            .map_err(unavailable)?;
        row.as_ref().map(appointment).transpose()
    }

    async fn patient_appointments(&self, patient: UserId) -> Result<Vec<Appointment>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {APPT_COLS} FROM appointments WHERE patient_id = $1
                     ORDER BY starts_at DESC, id DESC LIMIT 1000"
                ),
                &[&patient.0],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(appointment).collect()
    }

    async fn doctor_appointments(
        &self,
        doctor: DoctorId,
        range: TimeRange,
    ) -> Result<Vec<Appointment>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {APPT_COLS} FROM appointments
                     WHERE doctor_id = $1 AND starts_at < $3 AND ends_at > $2
                     ORDER BY starts_at, id"
                ),
                &[&doctor.0, &range.start(), &range.end()],
            )
            .await
            .map_err(unavailable)?;
        rows.iter().map(appointment).collect()
    }

    async fn history(&self, id: AppointmentId) -> Result<Vec<HistoryEntry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM appointment_history WHERE appointment_id = $1 ORDER BY id",
                &[&id.0],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(HistoryEntry {
                    at: r.get("at"),
                    by: r.get::<_, Option<Uuid>>("actor_user_id").map(UserId),
                    action: r.get("action"),
                    from_status: r
                        .get::<_, Option<&str>>("from_status")
                        .map(str::parse)
                        .transpose()
                        .map_err(unavailable)?,
                    to_status: r.get::<_, &str>("to_status").parse().map_err(unavailable)?,
                    from_start: r.get("from_start"),
                    to_start: r.get("to_start"),
                    note: r.get("note"),
                })
            })
            .collect()
    }

    async fn past_outcomes(&self, limit: i64) -> Result<Vec<PastVisit>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {APPT_COLS}, (
                        SELECT s.starts FROM suggestion_log s
                        WHERE s.patient_id = a.patient_id AND s.doctor_id = a.doctor_id
                          AND s.shown_at <= a.created_at
                          AND s.shown_at > a.created_at - interval '1 hour'
                        ORDER BY s.shown_at DESC LIMIT 1
                     ) AS offered
                     FROM appointments a WHERE status IN ('completed', 'no_show')
                     ORDER BY created_at DESC LIMIT $1"
                ),
                &[&limit],
            )
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(PastVisit {
                    appointment: appointment(r)?,
                    offered: r
                        .get::<_, Option<Vec<DateTime<Utc>>>>("offered")
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn log_suggestions(
        &self,
        patient: UserId,
        doctor: DoctorId,
        starts: &[DateTime<Utc>],
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO suggestion_log (patient_id, doctor_id, starts) VALUES ($1, $2, $3)",
                &[&patient.0, &doctor.0, &starts],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn import_suggestion_logs(&self, logs: &[SuggestionLog]) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO suggestion_log (patient_id, doctor_id, shown_at, starts)
                 VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(unavailable)?;
        // Pipelined: one round trip for the lot, not one per row.
        let inserts = logs.iter().map(|l| {
            let stmt = &stmt;
            let tx = &tx;
            async move {
                tx.execute(stmt, &[&l.patient.0, &l.doctor.0, &l.shown_at, &l.starts])
                    .await
            }
        });
        let n: u64 = futures::future::try_join_all(inserts)
            .await
            .map_err(unavailable)?
            .into_iter()
            .sum();
        tx.commit().await.map_err(unavailable)?;
        Ok(n)
    }

    async fn import_past_appointments(&self, list: &[Appointment]) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at, ends_at,
                    block_start, block_end, status, created_at, updated_at)
                 SELECT * , created_at FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[],
                    $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::timestamptz[],
                    $9::text[], $10::timestamptz[]) AS t(id, doctor_id, patient_id, visit_type_id,
                    starts_at, ends_at, block_start, block_end, status, created_at)",
            )
            .await
            .map_err(unavailable)?;
        let mut n = 0;
        for chunk in list.chunks(2000) {
            let col = |f: &dyn Fn(&Appointment) -> Uuid| chunk.iter().map(f).collect::<Vec<_>>();
            let ts =
                |f: &dyn Fn(&Appointment) -> DateTime<Utc>| chunk.iter().map(f).collect::<Vec<_>>();
            let status: Vec<&str> = chunk.iter().map(|a| a.status.as_str()).collect();
            n += tx
                .execute(
                    &stmt,
                    &[
                        &col(&|a| a.id.0),
                        &col(&|a| a.doctor_id.0),
                        &col(&|a| a.patient_id.0),
                        &col(&|a| a.visit_type_id.0),
                        &ts(&|a| a.time.start()),
                        &ts(&|a| a.time.end()),
                        &ts(&|a| a.block.start()),
                        &ts(&|a| a.block.end()),
                        &status,
                        &ts(&|a| a.created_at),
                    ],
                )
                .await
                .map_err(unavailable)?;
        }
        tx.execute(
            "INSERT INTO appointment_history (appointment_id, at, action, to_status, to_start, note)
             SELECT id, created_at, 'import', status, starts_at, 'imported history'
             FROM appointments WHERE id = ANY($1)",
            &[&list.iter().map(|a| a.id.0).collect::<Vec<_>>()],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(n)
    }

    async fn sweep_expired_holds(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "WITH exp AS (
                    UPDATE appointments SET status = 'cancelled', cancel_reason = 'hold_expired', updated_at = now()
                    WHERE status = 'held' AND hold_expires_at <= now()
                    RETURNING id, starts_at
                )
                INSERT INTO appointment_history (appointment_id, action, from_status, to_status, from_start, to_start, note)
                SELECT id, 'expire', 'held', 'cancelled', starts_at, starts_at, 'hold expired' FROM exp",
                &[],
            )
            .await
            .map_err(unavailable)
    }

    async fn latest_provider_alerts(
        &self,
        doctor: DoctorId,
        limit: i64,
    ) -> Result<Vec<ProviderAlert>, StoreError> {
        let mut v = self
            .alerts(
                "WHERE doctor_id = $1 ORDER BY id DESC LIMIT $2",
                &[&doctor.0, &limit.max(0)],
            )
            .await?;
        v.reverse();
        Ok(v)
    }

    async fn provider_alerts_after(
        &self,
        doctor: DoctorId,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ProviderAlert>, StoreError> {
        self.alerts(
            "WHERE doctor_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&doctor.0, &after_id, &limit.max(0)],
        )
        .await
    }

    async fn appointment_alerts(
        &self,
        doctor: DoctorId,
        appointment: AppointmentId,
    ) -> Result<Vec<ProviderAlert>, StoreError> {
        self.alerts(
            "WHERE doctor_id = $1 AND appointment_id = $2 ORDER BY id",
            &[&doctor.0, &appointment.0],
        )
        .await
    }
}
