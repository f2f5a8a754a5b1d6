//! Embedded SQLite implementation of [`Store`] and [`CalendarStore`].
//!
//! It behaves like [`super::postgres::PgStore`]: the same outcomes, error
//! variants, list orderings, history rows and provider alerts. The schema
//! (`migrations/sqlite/V*.sql`) mirrors the PostgreSQL one; instants
//! are INTEGER microseconds since the Unix epoch, UUIDs hyphenated lower-case
//! TEXT, arrays JSON TEXT.
//!
//! # The arbiter
//!
//! SQLite has no exclusion constraints. Every appointment write runs in a
//! `BEGIN IMMEDIATE` transaction, which takes the database's single write lock
//! before reading anything, so "look for an overlapping active appointment,
//! then write" cannot race with another writer: not with another task of this
//! process, nor with another process using the same file. The
//! `appointments_no_overlap_*` triggers refuse an overlapping active row
//! whoever writes it, as a second guard.
//!
//! A batch ([`CalendarStore::commit_batch`]) is one transaction with a
//! savepoint per write: a write that fails is rolled back alone and the others
//! still commit together (one fsync for the whole batch).
//!
//! # Provider alerts
//!
//! A write that a doctor must hear about (see [`super::ProviderAlert`]) also
//! inserts a `provider_alerts` row under the same savepoint, so the alert
//! commits if and only if the write does. With a single writer, alert ids
//! (AUTOINCREMENT: increasing, never reused) commit in id order, so a reader
//! paging with `id > last_seen` misses none.
//!
//! # Concurrency
//!
//! SQLite allows one writer at a time per file, so the store keeps exactly one
//! writer connection behind a [`std::sync::Mutex`]: writes from this process
//! queue on the mutex (cheap, fair enough) instead of spinning on
//! `SQLITE_BUSY`, and `busy_timeout` (5 s) covers the rare writer from another
//! process. Reads go to a small pool of read-only connections: in WAL mode
//! readers see the last committed state and neither block the writer nor wait
//! for it, so listing slots is not held up by a commit's fsync.
//!
//! SQLite calls block (a commit with `synchronous=FULL` waits for the disk),
//! so every call runs on [`tokio::task::spawn_blocking`] and async workers
//! (HTTP handlers, calendar actors) never stall. The mutexes are
//! `std::sync` ones on purpose: they are only ever taken inside those blocking
//! threads, never held across an `.await`; a write waiting for its turn parks
//! a blocking-pool thread, not an async worker. (The calendar actors already
//! group a doctor's writes into one batch, so the queue stays short.)
//!
//! # Durability
//!
//! `journal_mode=WAL` with `synchronous=FULL`: a commit returns only once the
//! WAL is synced, so an acknowledged booking survives `kill -9` or power loss.

use std::{
    path::Path,
    str::FromStr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use docspot_actors::{
    domain::{
        Appointment, AppointmentId, AppointmentStatus, AvailabilityException, AvailabilityRule,
        ClinicId, DoctorId, DoctorSchedule, ExceptionKind, TimeRange, UserId, VisitType,
        VisitTypeId, parse_time_zone, weekday_from_iso,
    },
    store::{AuditNote, CalendarStore, OpError, StoreError, Write, WriteOp},
};
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, TransactionBehavior, ffi, params,
    types::{FromSql, FromSqlError, FromSqlResult, ValueRef},
};
use uuid::Uuid;

mod privacy;

use super::privacy::{SealedUser, open_user};
use super::{
    Clinic, ClinicFields, DbError, Doctor, DoctorFields, ExceptionRecord, HistoryEntry, NewUser,
    PastVisit, ProviderAlert, RefreshOutcome, RuleRecord, Store, SuggestionLog, UserRecord,
    VisitTypeRecord,
};
use crate::{
    crypto::FieldCipher,
    domain::{Email, Role},
};
use privacy::{LEGACY_BATCH, encrypt_legacy_users, seal_legacy_cancel_reasons};

/// Schema migrations in order; `PRAGMA user_version` records the last one
/// applied. Append new versions, never edit applied ones.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/V1__core.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/V2__provider_alerts.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/V3__suggestion_log.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/V4__field_encryption.sql"),
    ),
    (5, include_str!("../../migrations/sqlite/V5__audit_log.sql")),
    (
        6,
        include_str!("../../migrations/sqlite/V6__audit_outbox.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/V7__cancel_reason_encrypted.sql"),
    ),
];

/// Read-only connections in the pool.
const READERS: usize = 4;

/// How long a connection waits for another process's lock before giving up.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(5000);

/// The message of the no-overlap triggers (and PostgreSQL's constraint name).
const NO_OVERLAP: &str = "appointments_no_overlap";

/// The columns of an [`Appointment`], in the order [`appointment`] reads them.
macro_rules! appt_cols {
    () => {
        "id, doctor_id, patient_id, visit_type_id, starts_at, ends_at, block_start, block_end, \
         status, hold_expires_at, idempotency_key, cancel_reason, created_at"
    };
}

/// The public columns of a doctor, with the clinic's time zone.
macro_rules! doctor_select {
    () => {
        "SELECT d.id, d.name, d.specialties, d.languages, d.clinic_id, d.active, c.time_zone \
         FROM doctors d JOIN clinics c ON c.id = d.clinic_id"
    };
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn db(e: rusqlite::Error) -> DbError {
    DbError::Unavailable(unavailable(e))
}

/// Maps a constraint failure on a catalogue write to a client-facing error,
/// like `catalogue_error` in the PostgreSQL store.
fn catalogue_error(e: rusqlite::Error, what: &'static str) -> DbError {
    match e.sqlite_extended_error_code() {
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
            DbError::Conflict(what)
        }
        Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => DbError::Missing(what),
        _ => db(e),
    }
}

/// Whether the error concerns the database as a whole (disk, locks, memory,
/// corruption) rather than the one statement that raised it. SQLite may have
/// rolled the whole transaction back after such an error.
fn is_fatal(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(
            ErrorCode::InternalMalfunction
                | ErrorCode::PermissionDenied
                | ErrorCode::OperationAborted
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly
                | ErrorCode::OperationInterrupted
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::FileLockingProtocolFailed
                | ErrorCode::NoLargeFileSupport
                | ErrorCode::NotADatabase
        )
    )
}

/// Whether a no-overlap trigger refused the statement.
fn is_no_overlap(e: &rusqlite::Error) -> bool {
    match e {
        rusqlite::Error::SqliteFailure(f, Some(msg)) => {
            f.code == ErrorCode::ConstraintViolation && msg.contains(NO_OVERLAP)
        }
        _ => false,
    }
}

/// The outcome of a write that the database refused.
fn op_error(e: rusqlite::Error) -> OpError {
    if is_no_overlap(&e) {
        OpError::SlotTaken
    } else {
        OpError::Other(e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Values: how Rust types are stored.

/// An instant as stored: microseconds since the Unix epoch.
fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The current instant at the stored precision. Taken once per transaction,
/// like PostgreSQL's `now()`.
fn now_us() -> i64 {
    us(Utc::now())
}

/// A UUID as stored: hyphenated, lower case.
fn uid(u: Uuid) -> String {
    u.to_string()
}

/// A time of day as stored: `HH:MM:SS`, plus `.ffffff` only when there are
/// fractions (truncated to microseconds, PostgreSQL's `time` precision). The
/// text sorts like the time.
fn time_text(t: NaiveTime) -> String {
    let t = t.with_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t);
    if t.nanosecond() == 0 {
        t.format("%H:%M:%S").to_string()
    } else {
        t.format("%H:%M:%S%.6f").to_string()
    }
}

/// A date as stored: `YYYY-MM-DD`.
fn date_text(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// A list as stored: a JSON array.
fn json_list(list: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(unavailable)
}

fn conversion(e: impl std::error::Error + Send + Sync + 'static) -> FromSqlError {
    FromSqlError::Other(Box::new(e))
}

/// Reads an INTEGER of microseconds since the Unix epoch.
struct Micros(DateTime<Utc>);

impl FromSql for Micros {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let n = v.as_i64()?;
        DateTime::from_timestamp_micros(n)
            .map(Self)
            .ok_or(FromSqlError::OutOfRange(n))
    }
}

/// Reads a UUID stored as TEXT.
struct Id(Uuid);

impl FromSql for Id {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Uuid::parse_str(v.as_str()?).map(Self).map_err(conversion)
    }
}

/// Reads TEXT through [`FromStr`] (statuses, roles, kinds).
struct Parsed<T>(T);

impl<T> FromSql for Parsed<T>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        v.as_str()?.parse().map(Self).map_err(conversion)
    }
}

/// Reads a JSON array of strings.
struct JsonList(Vec<String>);

impl FromSql for JsonList {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        serde_json::from_str(v.as_str()?)
            .map(Self)
            .map_err(conversion)
    }
}

/// Reads a time of day written by [`time_text`].
struct TimeOfDay(NaiveTime);

impl FromSql for TimeOfDay {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        NaiveTime::parse_from_str(v.as_str()?, "%H:%M:%S%.f")
            .map(Self)
            .map_err(conversion)
    }
}

/// Reads a date written by [`date_text`].
struct Date(NaiveDate);

impl FromSql for Date {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        NaiveDate::parse_from_str(v.as_str()?, "%Y-%m-%d")
            .map(Self)
            .map_err(conversion)
    }
}

/// Reads an IANA time zone name.
struct Zone(Tz);

impl FromSql for Zone {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        parse_time_zone(v.as_str()?).map(Self).map_err(conversion)
    }
}

/// Reads an ISO weekday number.
struct IsoWeekday(Weekday);

impl FromSql for IsoWeekday {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        let n = i16::column_result(v)?;
        weekday_from_iso(n).map(Self).map_err(conversion)
    }
}

/// Turns a value that cannot be built from its columns into a row error.
fn invalid_row(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, Box::new(e))
}

fn range(r: &Row<'_>, start: &str, end: &str) -> rusqlite::Result<TimeRange> {
    let start = r.get::<_, Micros>(start)?.0;
    let end = r.get::<_, Micros>(end)?.0;
    TimeRange::new(start, end).map_err(invalid_row)
}

// ---------------------------------------------------------------------------
// Rows.

fn appointment(r: &Row<'_>) -> rusqlite::Result<Appointment> {
    Ok(Appointment {
        id: AppointmentId(r.get::<_, Id>("id")?.0),
        doctor_id: DoctorId(r.get::<_, Id>("doctor_id")?.0),
        patient_id: UserId(r.get::<_, Id>("patient_id")?.0),
        visit_type_id: VisitTypeId(r.get::<_, Id>("visit_type_id")?.0),
        time: range(r, "starts_at", "ends_at")?,
        block: range(r, "block_start", "block_end")?,
        status: r.get::<_, Parsed<AppointmentStatus>>("status")?.0,
        hold_expires_at: r.get::<_, Option<Micros>>("hold_expires_at")?.map(|t| t.0),
        idempotency_key: r.get("idempotency_key")?,
        cancel_reason: r.get("cancel_reason")?,
        created_at: r.get::<_, Micros>("created_at")?.0,
    })
}

fn user(r: &Row<'_>, cipher: &FieldCipher) -> rusqlite::Result<UserRecord> {
    let id = r.get::<_, Id>("id")?.0;
    let (email, name) = open_user(
        cipher,
        id,
        r.get::<_, Option<Vec<u8>>>("email_enc")?.as_deref(),
        r.get::<_, Option<Vec<u8>>>("name_enc")?.as_deref(),
    )
    .map_err(invalid_row)?;
    Ok(UserRecord {
        id: UserId(id),
        email,
        name,
        role: r.get::<_, Parsed<Role>>("role")?.0,
        doctor_id: r.get::<_, Option<Id>>("doctor_id")?.map(|i| DoctorId(i.0)),
        clinic_id: r.get::<_, Option<Id>>("clinic_id")?.map(|i| ClinicId(i.0)),
        password_hash: r.get("password_hash")?,
    })
}

fn clinic(r: &Row<'_>) -> rusqlite::Result<Clinic> {
    Ok(Clinic {
        id: ClinicId(r.get::<_, Id>("id")?.0),
        name: r.get("name")?,
        address: r.get("address")?,
        latitude: r.get("latitude")?,
        longitude: r.get("longitude")?,
        time_zone: r.get("time_zone")?,
        cancellation_cutoff_minutes: r.get("cancellation_cutoff_minutes")?,
        booking_horizon_days: r.get("booking_horizon_days")?,
    })
}

fn doctor(r: &Row<'_>) -> rusqlite::Result<Doctor> {
    Ok(Doctor {
        id: DoctorId(r.get::<_, Id>("id")?.0),
        name: r.get("name")?,
        specialties: r.get::<_, JsonList>("specialties")?.0,
        languages: r.get::<_, JsonList>("languages")?.0,
        clinic_id: ClinicId(r.get::<_, Id>("clinic_id")?.0),
        time_zone: r.get("time_zone")?,
        active: r.get("active")?,
    })
}

fn visit_type(r: &Row<'_>) -> rusqlite::Result<VisitTypeRecord> {
    Ok(VisitTypeRecord {
        id: VisitTypeId(r.get::<_, Id>("id")?.0),
        doctor_id: DoctorId(r.get::<_, Id>("doctor_id")?.0),
        name: r.get("name")?,
        duration_minutes: r.get("duration_minutes")?,
        buffer_before_minutes: r.get("buffer_before_minutes")?,
        buffer_after_minutes: r.get("buffer_after_minutes")?,
        fee_cents: r.get("fee_cents")?,
        currency: r.get("currency")?,
        is_default: r.get("is_default")?,
    })
}

fn rule(r: &Row<'_>) -> rusqlite::Result<RuleRecord> {
    Ok(RuleRecord {
        id: r.get::<_, Id>("id")?.0,
        weekday: r.get("weekday")?,
        start_time: r.get::<_, TimeOfDay>("start_time")?.0,
        end_time: r.get::<_, TimeOfDay>("end_time")?.0,
        valid_from: r.get::<_, Option<Date>>("valid_from")?.map(|d| d.0),
        valid_until: r.get::<_, Option<Date>>("valid_until")?.map(|d| d.0),
    })
}

fn exception(r: &Row<'_>) -> rusqlite::Result<ExceptionRecord> {
    Ok(ExceptionRecord {
        id: r.get::<_, Id>("id")?.0,
        kind: r.get::<_, Parsed<ExceptionKind>>("kind")?.0,
        start: r.get::<_, Micros>("starts_at")?.0,
        end: r.get::<_, Micros>("ends_at")?.0,
        reason: r.get("reason")?,
    })
}

fn history_entry(r: &Row<'_>) -> rusqlite::Result<HistoryEntry> {
    Ok(HistoryEntry {
        at: r.get::<_, Micros>("at")?.0,
        by: r
            .get::<_, Option<Id>>("actor_user_id")?
            .map(|i| UserId(i.0)),
        action: r.get("action")?,
        from_status: r
            .get::<_, Option<Parsed<AppointmentStatus>>>("from_status")?
            .map(|s| s.0),
        to_status: r.get::<_, Parsed<AppointmentStatus>>("to_status")?.0,
        from_start: r.get::<_, Option<Micros>>("from_start")?.map(|t| t.0),
        to_start: r.get::<_, Micros>("to_start")?.0,
        note: r.get("note")?,
    })
}

fn provider_alert(r: &Row<'_>) -> rusqlite::Result<ProviderAlert> {
    Ok(ProviderAlert {
        id: r.get("id")?,
        doctor_id: DoctorId(r.get::<_, Id>("doctor_id")?.0),
        appointment_id: AppointmentId(r.get::<_, Id>("appointment_id")?.0),
        patient_id: UserId(r.get::<_, Id>("patient_id")?.0),
        kind: r.get("kind")?,
        at: r.get::<_, Micros>("at")?.0,
        start: r.get::<_, Micros>("starts_at")?.0,
        end: r.get::<_, Micros>("ends_at")?.0,
        previous_start: r.get::<_, Option<Micros>>("previous_start")?.map(|t| t.0),
        status: r.get::<_, Parsed<AppointmentStatus>>("status")?.0,
    })
}

fn doctor_by_id(conn: &Connection, id: DoctorId) -> rusqlite::Result<Option<Doctor>> {
    conn.prepare_cached(concat!(doctor_select!(), " WHERE d.id = ?1"))?
        .query_row([uid(id.0)], doctor)
        .optional()
}

fn user_by_id(
    conn: &Connection,
    cipher: &FieldCipher,
    id: Uuid,
) -> rusqlite::Result<Option<UserRecord>> {
    conn.prepare_cached("SELECT * FROM users WHERE id = ?1")?
        .query_row([uid(id)], |r| user(r, cipher))
        .optional()
}

fn appointment_by_key(
    conn: &Connection,
    patient: UserId,
    key: &str,
) -> rusqlite::Result<Option<Appointment>> {
    conn.prepare_cached(concat!(
        "SELECT ",
        appt_cols!(),
        " FROM appointments WHERE patient_id = ?1 AND idempotency_key = ?2"
    ))?
    .query_row(params![uid(patient.0), key], appointment)
    .optional()
}

// ---------------------------------------------------------------------------
// Appointment writes: the same steps and outcomes as the PostgreSQL store.

type Outcome = Result<Appointment, OpError>;

/// One row of `appointment_history`.
struct History<'a> {
    appointment: &'a str,
    at: i64,
    by: Option<UserId>,
    action: &'a str,
    from_status: Option<AppointmentStatus>,
    to_status: AppointmentStatus,
    from_start: Option<i64>,
    to_start: i64,
    note: &'a str,
}

fn record(conn: &Connection, h: &History<'_>) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO appointment_history (appointment_id, at, actor_user_id, action, from_status,
            to_status, from_start, to_start, note)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        h.appointment,
        h.at,
        h.by.map(|u| uid(u.0)),
        h.action,
        h.from_status.map(AppointmentStatus::as_str),
        h.to_status.as_str(),
        h.from_start,
        h.to_start,
        h.note,
    ])?;
    Ok(())
}

/// Writes a `provider_alerts` row about `a` as it is after the change.
fn alert(
    conn: &Connection,
    kind: &str,
    at: i64,
    a: &Appointment,
    previous_start: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO provider_alerts (doctor_id, appointment_id, patient_id, kind, at, starts_at,
            ends_at, previous_start, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        uid(a.doctor_id.0),
        uid(a.id.0),
        uid(a.patient_id.0),
        kind,
        at,
        us(a.time.start()),
        us(a.time.end()),
        previous_start,
        a.status.as_str(),
    ])?;
    Ok(())
}

/// The provider alert a status change creates, if any (the same conditions
/// as the PostgreSQL store's `alert` CTE): a confirmed hold, or a cancelled
/// booking. Released and expired holds, completions and no-shows create none.
fn status_alert(from: AppointmentStatus, to: AppointmentStatus) -> Option<&'static str> {
    match (from, to) {
        (AppointmentStatus::Held, AppointmentStatus::Booked) => Some("hold_confirmed"),
        (AppointmentStatus::Booked, AppointmentStatus::Cancelled) => Some("cancelled"),
        _ => None,
    }
}

/// The history action name for a status change (as in the PostgreSQL store).
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

/// Whether an active appointment of `doctor` other than `except` overlaps
/// `block`.
fn overlaps(
    conn: &Connection,
    doctor: DoctorId,
    except: AppointmentId,
    block: TimeRange,
) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM appointments
            WHERE doctor_id = ?1 AND status IN ('held', 'booked') AND id <> ?2
              AND block_start < ?4 AND ?3 < block_end)",
    )?
    .query_row(
        params![
            uid(doctor.0),
            uid(except.0),
            us(block.start()),
            us(block.end())
        ],
        |r| r.get(0),
    )
}

/// Cancels lapsed holds (`hold_expires_at <= now`): all of them, or only those
/// of one doctor overlapping a block. Returns how many.
fn expire_holds(
    conn: &Connection,
    within: Option<(DoctorId, TimeRange)>,
    now: i64,
) -> rusqlite::Result<u64> {
    let expired: Vec<(String, i64)> = match within {
        Some((doctor, block)) => {
            // `status IN (…)` as well, so the partial active-block index applies.
            let mut stmt = conn.prepare_cached(
                "UPDATE appointments SET status = 'cancelled', cancel_reason = 'hold_expired',
                    updated_at = ?1
                 WHERE doctor_id = ?2 AND status IN ('held', 'booked') AND status = 'held'
                   AND hold_expires_at <= ?1 AND block_start < ?4 AND ?3 < block_end
                 RETURNING id, starts_at",
            )?;
            let rows = stmt.query_map(
                params![now, uid(doctor.0), us(block.start()), us(block.end())],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            rows.collect::<rusqlite::Result<_>>()?
        }
        None => {
            let mut stmt = conn.prepare_cached(
                "UPDATE appointments SET status = 'cancelled', cancel_reason = 'hold_expired',
                    updated_at = ?1
                 WHERE status = 'held' AND hold_expires_at <= ?1
                 RETURNING id, starts_at",
            )?;
            let rows = stmt.query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        }
    };
    for (id, start) in &expired {
        record(
            conn,
            &History {
                appointment: id,
                at: now,
                by: None,
                action: "expire",
                from_status: Some(AppointmentStatus::Held),
                to_status: AppointmentStatus::Cancelled,
                from_start: Some(*start),
                to_start: *start,
                note: "hold expired",
            },
        )?;
    }
    Ok(expired.len() as u64)
}

fn insert(conn: &Connection, a: &Appointment, by: UserId, now: i64) -> rusqlite::Result<Outcome> {
    // A used idempotency key wins over everything else, as with PostgreSQL's
    // ON CONFLICT DO NOTHING followed by the key lookup.
    if let Some(key) = &a.idempotency_key
        && let Some(existing) = appointment_by_key(conn, a.patient_id, key)?
    {
        return Ok(Err(OpError::Duplicate(Box::new(existing))));
    }
    if a.status.is_active() && overlaps(conn, a.doctor_id, a.id, a.block)? {
        // Lapsed holds (left by a crashed node) do not count: cancel them and
        // look once more. As in PostgreSQL, those cancellations stand even if
        // the slot turns out to be taken anyway.
        if expire_holds(conn, Some((a.doctor_id, a.block)), now)? == 0
            || overlaps(conn, a.doctor_id, a.id, a.block)?
        {
            return Ok(Err(OpError::SlotTaken));
        }
    }
    let inserted = conn
        .prepare_cached(concat!(
            "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at,
                ends_at, block_start, block_end, status, hold_expires_at, idempotency_key,
                created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12)
             ON CONFLICT DO NOTHING
             RETURNING ",
            appt_cols!()
        ))?
        .query_row(
            params![
                uid(a.id.0),
                uid(a.doctor_id.0),
                uid(a.patient_id.0),
                uid(a.visit_type_id.0),
                us(a.time.start()),
                us(a.time.end()),
                us(a.block.start()),
                us(a.block.end()),
                a.status.as_str(),
                a.hold_expires_at.map(us),
                a.idempotency_key,
                us(a.created_at),
            ],
            appointment,
        )
        .optional()?;
    // Nothing inserted: the id exists already (PostgreSQL reports the same).
    let Some(inserted) = inserted else {
        return Ok(Err(OpError::SlotTaken));
    };
    let action = if inserted.status == AppointmentStatus::Held {
        "hold"
    } else {
        "book"
    };
    record(
        conn,
        &History {
            appointment: &uid(inserted.id.0),
            at: us(inserted.created_at),
            by: Some(by),
            action,
            from_status: None,
            to_status: inserted.status,
            from_start: None,
            to_start: us(inserted.time.start()),
            note: "",
        },
    )?;
    if inserted.status == AppointmentStatus::Booked {
        alert(conn, "booked", us(inserted.created_at), &inserted, None)?;
    }
    Ok(Ok(inserted))
}

/// An appointment's current state, as the guards see it.
struct Current {
    status: AppointmentStatus,
    starts_at: DateTime<Utc>,
    hold_expires_at: Option<DateTime<Utc>>,
}

fn current(
    conn: &Connection,
    id: AppointmentId,
    doctor: DoctorId,
) -> rusqlite::Result<Option<Current>> {
    conn.prepare_cached(
        "SELECT status, starts_at, hold_expires_at FROM appointments
         WHERE id = ?1 AND doctor_id = ?2",
    )?
    .query_row(params![uid(id.0), uid(doctor.0)], |r| {
        Ok(Current {
            status: r.get::<_, Parsed<AppointmentStatus>>(0)?.0,
            starts_at: r.get::<_, Micros>(1)?.0,
            hold_expires_at: r.get::<_, Option<Micros>>(2)?.map(|t| t.0),
        })
    })
    .optional()
}

/// Explains why a guarded change does not apply, in the PostgreSQL store's
/// order of checks; `None` if it does apply.
fn refusal(
    cur: &Current,
    from: &[AppointmentStatus],
    starts_after: Option<DateTime<Utc>>,
    hold_valid_at: Option<DateTime<Utc>>,
) -> Option<OpError> {
    if !from.contains(&cur.status) {
        Some(OpError::InvalidTransition(cur.status))
    } else if starts_after.is_some_and(|t| cur.starts_at <= t) {
        Some(OpError::CutoffPassed)
    } else if hold_valid_at.is_some_and(|t| cur.hold_expires_at.is_none_or(|e| e <= t)) {
        Some(OpError::HoldExpired)
    } else {
        None
    }
}

/// A [`WriteOp::SetStatus`], borrowed.
struct StatusChange<'a> {
    id: AppointmentId,
    from: &'a [AppointmentStatus],
    to: AppointmentStatus,
    by: Option<UserId>,
    reason: Option<&'a str>,
    sealed_reason: Option<&'a [u8]>,
    starts_after: Option<DateTime<Utc>>,
    hold_valid_at: Option<DateTime<Utc>>,
}

fn set_status(
    conn: &Connection,
    doctor: DoctorId,
    c: &StatusChange<'_>,
    now: i64,
) -> rusqlite::Result<Outcome> {
    let Some(cur) = current(conn, c.id, doctor)? else {
        return Ok(Err(OpError::NotFound));
    };
    if let Some(refused) = refusal(&cur, c.from, c.starts_after, c.hold_valid_at) {
        return Ok(Err(refused));
    }
    // Reviving an inactive appointment must not overlap an active one (the
    // trigger would refuse it too; this answers without raising).
    if c.to.is_active() && !cur.status.is_active() {
        let Some(block) = current_block(conn, c.id)? else {
            return Ok(Err(OpError::NotFound));
        };
        if overlaps(conn, doctor, c.id, block)? {
            return Ok(Err(OpError::SlotTaken));
        }
    }
    let updated = conn
        .prepare_cached(concat!(
            "UPDATE appointments SET status = ?2,
                cancel_reason = COALESCE(?3, cancel_reason),
                hold_expires_at = CASE WHEN ?2 = 'booked' THEN NULL ELSE hold_expires_at END,
                updated_at = ?4
             WHERE id = ?1
             RETURNING ",
            appt_cols!()
        ))?
        .query_row(
            params![uid(c.id.0), c.to.as_str(), c.reason, now],
            appointment,
        )?;
    record(
        conn,
        &History {
            appointment: &uid(c.id.0),
            at: now,
            by: c.by,
            action: action_for(c.to, c.by, c.reason),
            from_status: Some(cur.status),
            to_status: updated.status,
            from_start: Some(us(cur.starts_at)),
            to_start: us(updated.time.start()),
            note: c.reason.unwrap_or(""),
        },
    )?;
    if let Some(sealed) = c.sealed_reason {
        // The canceller's words, encrypted, beside the reason for visit.
        conn.prepare_cached(
            "INSERT INTO appointment_details (appointment_id, cancel_reason_enc, updated_at)
             VALUES (?1, ?2, ?3)
             ON CONFLICT (appointment_id) DO UPDATE SET
                cancel_reason_enc = excluded.cancel_reason_enc, updated_at = excluded.updated_at",
        )?
        .execute(params![uid(c.id.0), sealed, now])?;
    }
    if let Some(kind) = status_alert(cur.status, updated.status) {
        alert(conn, kind, now, &updated, None)?;
    }
    Ok(Ok(updated))
}

fn current_block(conn: &Connection, id: AppointmentId) -> rusqlite::Result<Option<TimeRange>> {
    conn.prepare_cached("SELECT block_start, block_end FROM appointments WHERE id = ?1")?
        .query_row([uid(id.0)], |r| range(r, "block_start", "block_end"))
        .optional()
}

/// The fields of a [`WriteOp::Reschedule`].
struct Move {
    id: AppointmentId,
    time: TimeRange,
    block: TimeRange,
    by: UserId,
    starts_after: Option<DateTime<Utc>>,
}

fn reschedule(
    conn: &Connection,
    doctor: DoctorId,
    m: &Move,
    now: i64,
) -> rusqlite::Result<Outcome> {
    let Some(cur) = current(conn, m.id, doctor)? else {
        return Ok(Err(OpError::NotFound));
    };
    let active = [AppointmentStatus::Held, AppointmentStatus::Booked];
    if let Some(refused) = refusal(&cur, &active, m.starts_after, None) {
        return Ok(Err(refused));
    }
    // Only other appointments count: moving within its own old block is fine.
    // Lapsed holds are not cleared here (PostgreSQL does not either).
    if overlaps(conn, doctor, m.id, m.block)? {
        return Ok(Err(OpError::SlotTaken));
    }
    let updated = conn
        .prepare_cached(concat!(
            "UPDATE appointments SET starts_at = ?2, ends_at = ?3, block_start = ?4,
                block_end = ?5, updated_at = ?6
             WHERE id = ?1
             RETURNING ",
            appt_cols!()
        ))?
        .query_row(
            params![
                uid(m.id.0),
                us(m.time.start()),
                us(m.time.end()),
                us(m.block.start()),
                us(m.block.end()),
                now
            ],
            appointment,
        )?;
    record(
        conn,
        &History {
            appointment: &uid(m.id.0),
            at: now,
            by: Some(m.by),
            action: "reschedule",
            from_status: Some(cur.status),
            to_status: updated.status,
            from_start: Some(us(cur.starts_at)),
            to_start: us(updated.time.start()),
            note: "",
        },
    )?;
    if updated.status == AppointmentStatus::Booked {
        alert(conn, "rescheduled", now, &updated, Some(us(cur.starts_at)))?;
    }
    Ok(Ok(updated))
}

/// The patient's live (unexpired) holds. The hold cap is counted in the
/// write's transaction, as PostgreSQL does; `BEGIN IMMEDIATE` already
/// serializes every writer of the one database file.
fn live_holds(conn: &Connection, patient: UserId, now: i64) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM appointments
         WHERE patient_id = ?1 AND status = 'held' AND hold_expires_at > ?2",
    )?
    .query_row(params![uid(patient.0), now], |r| r.get(0))
}

fn apply(conn: &Connection, doctor: DoctorId, op: &WriteOp, now: i64) -> rusqlite::Result<Outcome> {
    match op {
        WriteOp::Insert {
            appointment,
            by,
            max_live_holds,
        } => {
            if let Some(cap) = max_live_holds
                && appointment.status == AppointmentStatus::Held
                && live_holds(conn, appointment.patient_id, now)? >= i64::from(*cap)
            {
                return Ok(Err(OpError::TooManyHolds(*cap)));
            }
            insert(conn, appointment, *by, now)
        }
        WriteOp::Reschedule {
            id,
            time,
            block,
            by,
            starts_after,
        } => reschedule(
            conn,
            doctor,
            &Move {
                id: *id,
                time: *time,
                block: *block,
                by: *by,
                starts_after: *starts_after,
            },
            now,
        ),
        WriteOp::SetStatus {
            id,
            from,
            to,
            by,
            reason,
            sealed_reason,
            starts_after,
            hold_valid_at,
        } => set_status(
            conn,
            doctor,
            &StatusChange {
                id: *id,
                from,
                to: *to,
                by: *by,
                reason: reason.as_deref(),
                sealed_reason: sealed_reason.as_deref(),
                starts_after: *starts_after,
                hold_valid_at: *hold_valid_at,
            },
            now,
        ),
    }
}

/// Applies a batch in one `BEGIN IMMEDIATE` transaction, each write under its
/// own savepoint. A write the database refuses (a constraint, a trigger) is
/// rolled back alone and becomes its outcome; an error about the database as
/// a whole aborts the transaction and is returned.
fn apply_all(
    conn: &mut Connection,
    doctor: DoctorId,
    ops: &[Write],
) -> rusqlite::Result<Vec<Outcome>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_us();
    let mut out = Vec::with_capacity(ops.len());
    for w in ops {
        tx.execute_batch("SAVEPOINT op")?;
        // The write and, if it applied, its audit record: both or neither.
        let applied = apply(&tx, doctor, &w.op, now).and_then(|outcome| {
            if let (Some(note), Ok(a)) = (&w.audit, &outcome) {
                write_audit_note(&tx, note, a)?;
            }
            Ok(outcome)
        });
        match applied {
            Ok(outcome) => {
                tx.execute_batch("RELEASE op")?;
                out.push(outcome);
            }
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                // Fails if SQLite already rolled the transaction back: then
                // the whole batch fails, as it must.
                tx.execute_batch("ROLLBACK TO op; RELEASE op")?;
                out.push(Err(op_error(e)));
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Puts the audit record of a write that applied into the outbox, in the
/// write's own transaction; the audit writer chains it afterwards
/// (`crate::audit`).
fn write_audit_note(conn: &Connection, n: &AuditNote, a: &Appointment) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_outbox (at, actor_id, actor_role, action, patient_id, resource_type,
            resource_id, clinic_id, client_ip, request_id, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, 'appointment', ?6, ?7, ?8, ?9, 'success')",
    )?
    .execute(params![
        us(n.at),
        n.actor_id.map(|u| uid(u.0)),
        n.actor_role,
        n.action,
        uid(a.patient_id.0),
        uid(a.id.0),
        n.clinic_id.map(|c| uid(c.0)),
        n.client_ip.map(|ip| ip.to_string()),
        n.request_id,
    ])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The store.

/// The embedded SQLite store: one writer connection and a few readers on one
/// database file (see the module documentation for why). Cloning is cheap
/// and shares the connections.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The only connection that writes; every write transaction holds it.
    writer: Mutex<Connection>,
    /// Read-only connections, taken round-robin.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Seals and opens the encrypted columns.
    cipher: Arc<FieldCipher>,
}

/// Opens one connection with the store's settings.
fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(ffi::SQLITE_CANTOPEN),
            Some(format!("cannot use WAL mode (journal mode is {mode})")),
        ));
    }
    // secure_delete: deleted or overwritten content is zeroed, not left in
    // free space of the file, so erased or re-encrypted data is really gone.
    conn.execute_batch(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Brings the schema up to date. `BEGIN IMMEDIATE` makes it safe for two
/// processes opening a new file at once: the second sees the first's work.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(unavailable)?;
    let applied: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(unavailable)?;
    let latest = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if applied > latest {
        return Err(StoreError(format!(
            "database schema version {applied} is newer than this build knows ({latest})"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > applied) {
        tx.execute_batch(sql)
            .map_err(|e| StoreError(format!("migration V{version}: {e}")))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(unavailable)?;
        tracing::info!(version, "applied SQLite migration");
    }
    tx.commit().map_err(unavailable)
}

/// Locks a connection. A panic that poisoned the mutex unwound through
/// rusqlite's transaction guards, which roll back; any transaction still open
/// is rolled back here all the same.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    let conn = m.lock().unwrap_or_else(PoisonError::into_inner);
    if !conn.is_autocommit()
        && let Err(e) = conn.execute_batch("ROLLBACK")
    {
        tracing::warn!(error = %e, "could not roll back a transaction left open");
    }
    conn
}

impl SqliteStore {
    /// Opens (creating if needed, with its parent directory) the database
    /// file at `path`, applies pending migrations and encrypts any account
    /// still stored in plaintext; encrypted columns are sealed and opened
    /// with `cipher`. Blocking: call it at start-up, not from a busy async
    /// worker.
    pub fn open(path: &Path, cipher: Arc<FieldCipher>) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError(format!("creating {}: {e}", dir.display())))?;
        }
        let mut writer = connect(path).map_err(unavailable)?;
        migrate(&mut writer)?;
        encrypt_legacy_users(&mut writer, &cipher, LEGACY_BATCH)?;
        seal_legacy_cancel_reasons(&mut writer, &cipher, LEGACY_BATCH)?;
        let readers = (0..READERS)
            .map(|_| {
                let conn = connect(path)?;
                conn.pragma_update(None, "query_only", true)?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(unavailable)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                cipher,
            }),
        })
    }

    /// Runs `f` on a reader connection, off the async workers.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let m = inner.readers.get(i).unwrap_or(&inner.writer);
            f(&mut lock(m)).map_err(unavailable)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}"))))
    }

    /// Runs `f` on the writer connection, off the async workers.
    async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.writer)))
            .await
            .unwrap_or_else(|e| Err(StoreError(format!("storage task failed: {e}")).into()))
    }
}

#[async_trait]
impl CalendarStore for SqliteStore {
    async fn load_schedule(&self, doctor: DoctorId) -> Result<Option<DoctorSchedule>, StoreError> {
        let since = us(Utc::now() - Duration::days(1));
        self.read(move |conn| {
            // One read transaction: the four reads see one snapshot.
            let tx = conn.transaction()?;
            let id = uid(doctor.0);
            let head = tx
                .prepare_cached(
                    "SELECT d.clinic_id, c.time_zone, c.booking_horizon_days,
                        c.cancellation_cutoff_minutes
                     FROM doctors d JOIN clinics c ON c.id = d.clinic_id
                     WHERE d.id = ?1 AND d.active = 1",
                )?
                .query_row([&id], |r| {
                    Ok((
                        ClinicId(r.get::<_, Id>(0)?.0),
                        r.get::<_, Zone>(1)?.0,
                        r.get::<_, i32>(2)?,
                        r.get::<_, i32>(3)?,
                    ))
                })
                .optional()?;
            let Some((clinic_id, time_zone, horizon_days, cutoff_minutes)) = head else {
                return Ok(None);
            };
            let rules = tx
                .prepare_cached(
                    "SELECT weekday, start_time, end_time, valid_from, valid_until
                     FROM availability_rules WHERE doctor_id = ?1
                     ORDER BY weekday, start_time, rowid",
                )?
                .query_map([&id], |r| {
                    Ok(AvailabilityRule {
                        weekday: r.get::<_, IsoWeekday>(0)?.0,
                        start: r.get::<_, TimeOfDay>(1)?.0,
                        end: r.get::<_, TimeOfDay>(2)?.0,
                        valid_from: r.get::<_, Option<Date>>(3)?.map(|d| d.0),
                        valid_until: r.get::<_, Option<Date>>(4)?.map(|d| d.0),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let exceptions = tx
                .prepare_cached(
                    "SELECT kind, starts_at, ends_at FROM availability_exceptions
                     WHERE doctor_id = ?1 AND ends_at > ?2 ORDER BY starts_at, rowid",
                )?
                .query_map(params![&id, since], |r| {
                    Ok(AvailabilityException {
                        kind: r.get::<_, Parsed<ExceptionKind>>(0)?.0,
                        range: range(r, "starts_at", "ends_at")?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let visit_types = tx
                .prepare_cached(
                    "SELECT * FROM visit_types WHERE doctor_id = ?1 ORDER BY created_at, rowid",
                )?
                .query_map([&id], |r| visit_type(r).map(VisitType::from))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(DoctorSchedule {
                doctor_id: doctor,
                clinic_id,
                time_zone,
                rules,
                exceptions,
                visit_types,
                booking_horizon: Duration::days(i64::from(horizon_days)),
                cancellation_cutoff: Duration::minutes(i64::from(cutoff_minutes)),
            }))
        })
        .await
    }

    async fn load_active(
        &self,
        doctor: DoctorId,
        since: DateTime<Utc>,
    ) -> Result<Vec<Appointment>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                appt_cols!(),
                " FROM appointments
                 WHERE doctor_id = ?1 AND status IN ('held', 'booked') AND block_end > ?2
                 ORDER BY block_start, id"
            ))?
            .query_map(params![uid(doctor.0), us(since)], appointment)?
            .collect()
        })
        .await
    }

    async fn commit_batch(
        &self,
        doctor: DoctorId,
        ops: Vec<Write>,
    ) -> Result<Vec<Outcome>, StoreError> {
        self.write(move |conn| apply_all(conn, doctor, &ops).map_err(unavailable))
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn create_user(&self, u: NewUser) -> Result<UserRecord, DbError> {
        let id = UserId::new();
        let cipher = self.inner.cipher.clone();
        let sealed = SealedUser::seal(&cipher, id, u.email.as_str(), &u.name)
            .map_err(|e| DbError::Unavailable(unavailable(e)))?;
        self.write(move |conn| {
            let row = conn
                .prepare_cached(
                    "INSERT INTO users (id, email_hash, email_enc, password_hash, name_enc, role,
                        doctor_id, clinic_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING *",
                )
                .map_err(db)?
                .query_row(
                    params![
                        uid(id.0),
                        sealed.email_hash,
                        sealed.email,
                        u.password_hash,
                        sealed.name,
                        u.role.as_str(),
                        u.doctor_id.map(|d| uid(d.0)),
                        u.clinic_id.map(|c| uid(c.0)),
                        now_us(),
                    ],
                    |r| user(r, &cipher),
                )
                .map_err(|e| catalogue_error(e, "account"))?;
            Ok(row)
        })
        .await
    }

    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError> {
        let cipher = self.inner.cipher.clone();
        let hash = cipher.email_index(email.as_str());
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM users WHERE email_hash = ?1")?
                .query_row([hash], |r| user(r, &cipher))
                .optional()
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError> {
        let cipher = self.inner.cipher.clone();
        self.read(move |conn| user_by_id(conn, &cipher, id.0)).await
    }

    async fn insert_refresh_token(
        &self,
        user: UserId,
        digest: &[u8],
        family: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let digest = digest.to_vec();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, expires_at,
                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    uid(Uuid::now_v7()),
                    uid(user.0),
                    digest,
                    uid(family),
                    us(expires_at),
                    now_us()
                ])
            })
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn use_refresh_token(
        &self,
        digest: &[u8],
        next: &[u8],
        next_expires: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError> {
        let (digest, next) = (digest.to_vec(), next.to_vec());
        let cipher = self.inner.cipher.clone();
        self.write(move |conn| {
            use_refresh_token(conn, &cipher, &digest, &next, next_expires).map_err(unavailable)
        })
        .await
    }

    async fn revoke_refresh_family(&self, digest: &[u8]) -> Result<bool, StoreError> {
        let digest = digest.to_vec();
        self.write(move |conn| {
            conn.execute(
                "UPDATE refresh_tokens SET revoked_at = ?2
                 WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = ?1)
                   AND revoked_at IS NULL",
                params![digest, now_us()],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
        })
        .await
    }

    async fn create_clinic(&self, f: ClinicFields) -> Result<Clinic, DbError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO clinics (id, name, address, latitude, longitude, time_zone,
                    cancellation_cutoff_minutes, booking_horizon_days, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING *",
            )
            .map_err(db)?
            .query_row(
                params![
                    uid(ClinicId::new().0),
                    f.name,
                    f.address,
                    f.latitude,
                    f.longitude,
                    f.time_zone,
                    f.cancellation_cutoff_minutes,
                    f.booking_horizon_days,
                    now_us(),
                ],
                clinic,
            )
            .map_err(|e| catalogue_error(e, "clinic"))
        })
        .await
    }

    async fn update_clinic(&self, id: ClinicId, f: ClinicFields) -> Result<Clinic, DbError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "UPDATE clinics SET name = ?2, address = ?3, latitude = ?4, longitude = ?5,
                    time_zone = ?6, cancellation_cutoff_minutes = ?7, booking_horizon_days = ?8
                 WHERE id = ?1 RETURNING *",
            )
            .map_err(db)?
            .query_row(
                params![
                    uid(id.0),
                    f.name,
                    f.address,
                    f.latitude,
                    f.longitude,
                    f.time_zone,
                    f.cancellation_cutoff_minutes,
                    f.booking_horizon_days,
                ],
                clinic,
            )
            .optional()
            .map_err(|e| catalogue_error(e, "clinic"))?
            .ok_or(DbError::Missing("clinic"))
        })
        .await
    }

    async fn clinic(&self, id: ClinicId) -> Result<Option<Clinic>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT * FROM clinics WHERE id = ?1")?
                .query_row([uid(id.0)], clinic)
                .optional()
        })
        .await
    }

    async fn clinics(&self) -> Result<Vec<Clinic>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT * FROM clinics ORDER BY name, rowid")?
                .query_map([], clinic)?
                .collect()
        })
        .await
    }

    async fn create_doctor(&self, c: ClinicId, f: DoctorFields) -> Result<Doctor, DbError> {
        let specialties = json_list(&f.specialties)?;
        let languages = json_list(&f.languages)?;
        self.write(move |conn| {
            let id = DoctorId::new();
            conn.prepare_cached(
                "INSERT INTO doctors (id, clinic_id, name, specialties, languages, active,
                    created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(db)?
            .execute(params![
                uid(id.0),
                uid(c.0),
                f.name,
                specialties,
                languages,
                f.active,
                now_us()
            ])
            .map_err(|e| catalogue_error(e, "clinic"))?;
            doctor_by_id(conn, id)
                .map_err(db)?
                .ok_or(DbError::Missing("doctor"))
        })
        .await
    }

    async fn update_doctor(&self, id: DoctorId, f: DoctorFields) -> Result<Doctor, DbError> {
        let specialties = json_list(&f.specialties)?;
        let languages = json_list(&f.languages)?;
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE doctors SET name = ?2, specialties = ?3, languages = ?4, active = ?5
                     WHERE id = ?1",
                )
                .map_err(db)?
                .execute(params![uid(id.0), f.name, specialties, languages, f.active])
                .map_err(|e| catalogue_error(e, "doctor"))?;
            if n == 0 {
                return Err(DbError::Missing("doctor"));
            }
            doctor_by_id(conn, id)
                .map_err(db)?
                .ok_or(DbError::Missing("doctor"))
        })
        .await
    }

    async fn doctor(&self, id: DoctorId) -> Result<Option<Doctor>, StoreError> {
        self.read(move |conn| doctor_by_id(conn, id)).await
    }

    async fn doctors(
        &self,
        clinic: Option<ClinicId>,
        specialty: Option<&str>,
    ) -> Result<Vec<Doctor>, StoreError> {
        let list: Vec<Doctor> = self
            .read(move |conn| {
                conn.prepare_cached(concat!(
                    doctor_select!(),
                    " WHERE d.active = 1 AND (?1 IS NULL OR d.clinic_id = ?1)
                     ORDER BY d.name, d.id"
                ))?
                .query_map([clinic.map(|c| uid(c.0))], doctor)?
                .collect()
            })
            .await?;
        // Compared in Rust: SQLite's lower() only folds ASCII, PostgreSQL's
        // folds all of Unicode.
        Ok(match specialty {
            None => list,
            Some(wanted) => {
                let wanted = wanted.to_lowercase();
                list.into_iter()
                    .filter(|d| d.specialties.iter().any(|s| s.to_lowercase() == wanted))
                    .collect()
            }
        })
    }

    async fn create_visit_type(
        &self,
        doctor: DoctorId,
        v: VisitTypeRecord,
    ) -> Result<VisitTypeRecord, DbError> {
        self.write(move |conn| {
            let tx = conn.transaction().map_err(db)?;
            if v.is_default {
                tx.execute(
                    "UPDATE visit_types SET is_default = 0 WHERE doctor_id = ?1 AND is_default = 1",
                    [uid(doctor.0)],
                )
                .map_err(db)?;
            }
            let row = tx
                .prepare_cached(
                    "INSERT INTO visit_types (id, doctor_id, name, duration_minutes,
                        buffer_before_minutes, buffer_after_minutes, fee_cents, currency,
                        is_default, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING *",
                )
                .map_err(db)?
                .query_row(
                    params![
                        uid(v.id.0),
                        uid(doctor.0),
                        v.name,
                        v.duration_minutes,
                        v.buffer_before_minutes,
                        v.buffer_after_minutes,
                        v.fee_cents,
                        v.currency,
                        v.is_default,
                        now_us(),
                    ],
                    visit_type,
                )
                .map_err(|e| catalogue_error(e, "doctor"))?;
            tx.commit().map_err(db)?;
            Ok(row)
        })
        .await
    }

    async fn visit_types(&self, doctor: DoctorId) -> Result<Vec<VisitTypeRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT * FROM visit_types WHERE doctor_id = ?1 ORDER BY created_at, rowid",
            )?
            .query_map([uid(doctor.0)], visit_type)?
            .collect()
        })
        .await
    }

    async fn create_rule(&self, doctor: DoctorId, r: RuleRecord) -> Result<RuleRecord, DbError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO availability_rules (id, doctor_id, weekday, start_time, end_time,
                    valid_from, valid_until, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING *",
            )
            .map_err(db)?
            .query_row(
                params![
                    uid(r.id),
                    uid(doctor.0),
                    r.weekday,
                    time_text(r.start_time),
                    time_text(r.end_time),
                    r.valid_from.map(date_text),
                    r.valid_until.map(date_text),
                    now_us(),
                ],
                rule,
            )
            .map_err(|e| catalogue_error(e, "doctor"))
        })
        .await
    }

    async fn rules(&self, doctor: DoctorId) -> Result<Vec<RuleRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT * FROM availability_rules WHERE doctor_id = ?1
                 ORDER BY weekday, start_time, rowid",
            )?
            .query_map([uid(doctor.0)], rule)?
            .collect()
        })
        .await
    }

    async fn delete_rule(&self, doctor: DoctorId, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM availability_rules WHERE doctor_id = ?1 AND id = ?2",
                [uid(doctor.0), uid(id)],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
        })
        .await
    }

    async fn create_exception(
        &self,
        doctor: DoctorId,
        e: ExceptionRecord,
    ) -> Result<ExceptionRecord, DbError> {
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO availability_exceptions (id, doctor_id, kind, starts_at, ends_at,
                    reason, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING *",
            )
            .map_err(db)?
            .query_row(
                params![
                    uid(e.id),
                    uid(doctor.0),
                    e.kind.as_str(),
                    us(e.start),
                    us(e.end),
                    e.reason,
                    now_us(),
                ],
                exception,
            )
            .map_err(|e| catalogue_error(e, "doctor"))
        })
        .await
    }

    async fn exceptions(
        &self,
        doctor: DoctorId,
        since: DateTime<Utc>,
    ) -> Result<Vec<ExceptionRecord>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT * FROM availability_exceptions WHERE doctor_id = ?1 AND ends_at > ?2
                 ORDER BY starts_at, rowid",
            )?
            .query_map(params![uid(doctor.0), us(since)], exception)?
            .collect()
        })
        .await
    }

    async fn delete_exception(&self, doctor: DoctorId, id: Uuid) -> Result<bool, StoreError> {
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM availability_exceptions WHERE doctor_id = ?1 AND id = ?2",
                [uid(doctor.0), uid(id)],
            )
            .map(|n| n > 0)
            .map_err(unavailable)
        })
        .await
    }

    async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                appt_cols!(),
                " FROM appointments WHERE id = ?1"
            ))?
            .query_row([uid(id.0)], appointment)
            .optional()
        })
        .await
    }

    async fn appointment_by_key(
        &self,
        patient: UserId,
        key: &str,
    ) -> Result<Option<Appointment>, StoreError> {
        let key = key.to_string();
        self.read(move |conn| appointment_by_key(conn, patient, &key))
            .await
    }

    async fn past_outcomes(&self, limit: i64) -> Result<Vec<PastVisit>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                appt_cols!(),
                ", (SELECT s.starts FROM suggestion_log s
                    WHERE s.patient_id = a.patient_id AND s.doctor_id = a.doctor_id
                      AND s.shown_at <= a.created_at AND s.shown_at > a.created_at - 3600000000
                    ORDER BY s.shown_at DESC LIMIT 1) AS offered
                 FROM appointments a WHERE status IN ('completed', 'no_show')
                 ORDER BY created_at DESC LIMIT ?1"
            ))?
            .query_map([limit], |r| {
                let offered: Option<String> = r.get("offered")?;
                let micros: Vec<i64> = offered
                    .and_then(|j| serde_json::from_str(&j).ok())
                    .unwrap_or_default();
                Ok(PastVisit {
                    appointment: appointment(r)?,
                    offered: micros
                        .into_iter()
                        .filter_map(DateTime::<Utc>::from_timestamp_micros)
                        .collect(),
                })
            })?
            .collect()
        })
        .await
    }

    async fn log_suggestions(
        &self,
        patient: UserId,
        doctor: DoctorId,
        starts: &[DateTime<Utc>],
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(&starts.iter().map(|t| us(*t)).collect::<Vec<_>>())
            .map_err(unavailable)?;
        self.write(move |conn| {
            conn.execute(
                "INSERT INTO suggestion_log (patient_id, doctor_id, shown_at, starts)
                 VALUES (?1, ?2, ?3, ?4)",
                params![uid(patient.0), uid(doctor.0), now_us(), json],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn patient_appointments(&self, patient: UserId) -> Result<Vec<Appointment>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                appt_cols!(),
                " FROM appointments WHERE patient_id = ?1
                 ORDER BY starts_at DESC, id DESC LIMIT 1000"
            ))?
            .query_map([uid(patient.0)], appointment)?
            .collect()
        })
        .await
    }

    async fn doctor_appointments(
        &self,
        doctor: DoctorId,
        range: TimeRange,
    ) -> Result<Vec<Appointment>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(concat!(
                "SELECT ",
                appt_cols!(),
                " FROM appointments
                 WHERE doctor_id = ?1 AND starts_at < ?3 AND ends_at > ?2
                 ORDER BY starts_at, id"
            ))?
            .query_map(
                params![uid(doctor.0), us(range.start()), us(range.end())],
                appointment,
            )?
            .collect()
        })
        .await
    }

    async fn history(&self, id: AppointmentId) -> Result<Vec<HistoryEntry>, StoreError> {
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT * FROM appointment_history WHERE appointment_id = ?1 ORDER BY id",
            )?
            .query_map([uid(id.0)], history_entry)?
            .collect()
        })
        .await
    }

    async fn import_suggestion_logs(&self, logs: &[SuggestionLog]) -> Result<u64, StoreError> {
        let rows: Vec<(String, String, i64, String)> = logs
            .iter()
            .map(|l| {
                let starts: Vec<i64> = l.starts.iter().map(|t| us(*t)).collect();
                Ok((
                    uid(l.patient.0),
                    uid(l.doctor.0),
                    us(l.shown_at),
                    serde_json::to_string(&starts).map_err(unavailable)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        self.write(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let mut n = 0;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO suggestion_log (patient_id, doctor_id, shown_at, starts)
                         VALUES (?1, ?2, ?3, ?4)",
                    )
                    .map_err(unavailable)?;
                for r in &rows {
                    n += insert
                        .execute(params![r.0, r.1, r.2, r.3])
                        .map_err(unavailable)? as u64;
                }
            }
            tx.commit().map_err(unavailable)?;
            Ok(n)
        })
        .await
    }

    async fn import_past_appointments(&self, list: &[Appointment]) -> Result<u64, StoreError> {
        let list = list.to_vec();
        self.write(move |conn| import(conn, &list).map_err(unavailable))
            .await
    }

    async fn sweep_expired_holds(&self) -> Result<u64, StoreError> {
        self.write(|conn| sweep(conn).map_err(unavailable)).await
    }

    async fn latest_provider_alerts(
        &self,
        doctor: DoctorId,
        limit: i64,
    ) -> Result<Vec<ProviderAlert>, StoreError> {
        let limit = limit.max(0);
        let mut v: Vec<ProviderAlert> = self
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT id, doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at,
                        previous_start, status
                     FROM provider_alerts WHERE doctor_id = ?1 ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![uid(doctor.0), limit], provider_alert)?
                .collect()
            })
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
        // SQLite reads a negative LIMIT as "no limit"; PostgreSQL refuses it.
        let limit = limit.max(0);
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT id, doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at,
                    previous_start, status
                 FROM provider_alerts WHERE doctor_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
            )?
            .query_map(params![uid(doctor.0), after_id, limit], provider_alert)?
            .collect()
        })
        .await
    }

    async fn appointment_alerts(
        &self,
        doctor: DoctorId,
        appointment: AppointmentId,
    ) -> Result<Vec<ProviderAlert>, StoreError> {
        self.read(move |conn| {
            // The doctor's index narrows the scan to one calendar.
            conn.prepare_cached(
                "SELECT id, doctor_id, appointment_id, patient_id, kind, at, starts_at, ends_at,
                    previous_start, status
                 FROM provider_alerts WHERE doctor_id = ?1 AND appointment_id = ?2 ORDER BY id",
            )?
            .query_map(params![uid(doctor.0), uid(appointment.0)], provider_alert)?
            .collect()
        })
        .await
    }
}

/// Cancels every lapsed hold in one transaction.
fn sweep(conn: &mut Connection) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = expire_holds(&tx, None, now_us())?;
    tx.commit()?;
    Ok(n)
}

/// Rotation with reuse detection, exactly as the PostgreSQL store does it.
fn use_refresh_token(
    conn: &mut Connection,
    cipher: &FieldCipher,
    digest: &[u8],
    next: &[u8],
    next_expires: DateTime<Utc>,
) -> rusqlite::Result<RefreshOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_us();
    let token = tx
        .prepare_cached(
            "SELECT t.id, t.user_id, t.family_id, t.expires_at, t.used_at, t.revoked_at,
                u.erased_at
             FROM refresh_tokens t JOIN users u ON u.id = t.user_id
             WHERE t.token_hash = ?1",
        )?
        .query_row([digest], |r| {
            Ok((
                r.get::<_, Id>("id")?.0,
                r.get::<_, Id>("user_id")?.0,
                r.get::<_, Id>("family_id")?.0,
                r.get::<_, Micros>("expires_at")?.0,
                r.get::<_, Option<i64>>("used_at")?,
                r.get::<_, Option<i64>>("revoked_at")?
                    .or(r.get("erased_at")?),
            ))
        })
        .optional()?;
    // An erased account counts as revoked (the immediate transaction keeps
    // an erasure from interleaving): it signs in no more.
    let Some((token_id, user_id, family, expires, used, revoked)) = token else {
        return Ok(RefreshOutcome::Invalid);
    };
    if used.is_some() {
        // A replay: someone holds a copy of a rotated token. Revoke the whole
        // family so neither copy keeps working.
        tx.execute(
            "UPDATE refresh_tokens SET revoked_at = ?2 WHERE family_id = ?1 AND revoked_at IS NULL",
            params![uid(family), now],
        )?;
        tx.commit()?;
        return Ok(RefreshOutcome::Reused);
    }
    if revoked.is_some() || expires <= Utc::now() {
        return Ok(RefreshOutcome::Invalid);
    }
    tx.execute(
        "UPDATE refresh_tokens SET used_at = ?2 WHERE id = ?1",
        params![uid(token_id), now],
    )?;
    let user = user_by_id(&tx, cipher, user_id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    tx.execute(
        "INSERT INTO refresh_tokens (id, user_id, token_hash, family_id, expires_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            uid(Uuid::now_v7()),
            uid(user_id),
            next,
            uid(family),
            us(next_expires),
            now
        ],
    )?;
    tx.commit()?;
    Ok(RefreshOutcome::Rotated { user, family })
}

/// Bulk-loads past appointments in one transaction, each with an `import`
/// history row; any failure loads nothing.
fn import(conn: &mut Connection, list: &[Appointment]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut n = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at,
                ends_at, block_start, block_end, status, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
        )?;
        for a in list {
            n += insert.execute(params![
                uid(a.id.0),
                uid(a.doctor_id.0),
                uid(a.patient_id.0),
                uid(a.visit_type_id.0),
                us(a.time.start()),
                us(a.time.end()),
                us(a.block.start()),
                us(a.block.end()),
                a.status.as_str(),
                us(a.created_at),
            ])? as u64;
            record(
                &tx,
                &History {
                    appointment: &uid(a.id.0),
                    at: us(a.created_at),
                    by: None,
                    action: "import",
                    from_status: None,
                    to_status: a.status,
                    from_start: None,
                    to_start: us(a.time.start()),
                    note: "imported history",
                },
            )?;
        }
    }
    tx.commit()?;
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    /// A fresh digest for the token a rotation stores.
    fn next_digest() -> Vec<u8> {
        uuid::Uuid::new_v4().as_bytes().to_vec()
    }

    use std::path::PathBuf;

    use super::*;
    use crate::store::{ClinicFields, DoctorFields};

    /// A database file in a fresh temporary directory, removed on drop.
    struct TempDb {
        dir: PathBuf,
    }

    impl TempDb {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("docspot-sqlite-{}", Uuid::new_v4()));
            Self { dir }
        }

        /// Nested, so `open` has to create the parent directories.
        fn path(&self) -> PathBuf {
            self.dir.join("data").join("docspot.sqlite")
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A store with one clinic, doctor, patient and default visit type.
    /// Fields drop in order: the store closes before the files go.
    /// One keyring for every store of the tests, so reopening a file reads it.
    fn test_cipher() -> Arc<FieldCipher> {
        static CIPHER: std::sync::OnceLock<Arc<FieldCipher>> = std::sync::OnceLock::new();
        CIPHER
            .get_or_init(|| Arc::new(FieldCipher::generate()))
            .clone()
    }

    struct Fixture {
        store: SqliteStore,
        doctor: DoctorId,
        patient: UserId,
        visit_type: VisitTypeId,
        db: TempDb,
    }

    fn clinic_fields(name: &str) -> ClinicFields {
        ClinicFields {
            name: name.into(),
            address: "1 Main St".into(),
            latitude: Some(52.5),
            longitude: Some(13.4),
            time_zone: "Europe/Berlin".into(),
            cancellation_cutoff_minutes: 1440,
            booking_horizon_days: 60,
        }
    }

    fn doctor_fields(name: &str, specialties: &[&str]) -> DoctorFields {
        DoctorFields {
            name: name.into(),
            specialties: specialties.iter().map(|s| s.to_string()).collect(),
            languages: vec!["en".into(), "de".into()],
            active: true,
        }
    }

    fn new_user(email: &str, role: Role, doctor_id: Option<DoctorId>) -> NewUser {
        NewUser {
            email: Email::parse(email).unwrap(),
            name: "Someone".into(),
            role,
            doctor_id,
            clinic_id: None,
            password_hash: "$argon2id$fake".into(),
        }
    }

    fn visit_type_record(doctor: DoctorId, name: &str, is_default: bool) -> VisitTypeRecord {
        VisitTypeRecord {
            id: VisitTypeId::new(),
            doctor_id: doctor,
            name: name.into(),
            duration_minutes: 30,
            buffer_before_minutes: 0,
            buffer_after_minutes: 0,
            fee_cents: 5000,
            currency: "EUR".into(),
            is_default,
        }
    }

    async fn fixture() -> Fixture {
        let db = TempDb::new();
        let store = SqliteStore::open(&db.path(), test_cipher()).unwrap();
        let clinic = store.create_clinic(clinic_fields("Clinic")).await.unwrap();
        let doctor = store
            .create_doctor(clinic.id, doctor_fields("Dr Ada", &["Cardiology"]))
            .await
            .unwrap()
            .id;
        let patient = store
            .create_user(new_user("Pat@Example.org", Role::Patient, None))
            .await
            .unwrap()
            .id;
        let visit_type = store
            .create_visit_type(doctor, visit_type_record(doctor, "Consultation", true))
            .await
            .unwrap()
            .id;
        Fixture {
            store,
            doctor,
            patient,
            visit_type,
            db,
        }
    }

    /// Now, at the stored precision.
    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap()
    }

    /// Minutes after a fixed instant well in the future.
    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2031-03-03T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + Duration::minutes(minutes)
    }

    fn span(from: i64, to: i64) -> TimeRange {
        TimeRange::new(t(from), t(to)).unwrap()
    }

    impl Fixture {
        fn appt(&self, from: i64, to: i64, status: AppointmentStatus) -> Appointment {
            Appointment {
                id: AppointmentId::new(),
                doctor_id: self.doctor,
                patient_id: self.patient,
                visit_type_id: self.visit_type,
                time: span(from, to),
                block: span(from, to),
                status,
                hold_expires_at: (status == AppointmentStatus::Held)
                    .then(|| now() + Duration::minutes(10)),
                idempotency_key: None,
                cancel_reason: None,
                created_at: now(),
            }
        }

        fn insert(&self, a: &Appointment) -> WriteOp {
            WriteOp::Insert {
                appointment: a.clone(),
                by: self.patient,
                max_live_holds: None,
            }
        }

        async fn commit(&self, ops: Vec<WriteOp>) -> Vec<Outcome> {
            self.store
                .commit_batch(self.doctor, ops.into_iter().map(Write::from).collect())
                .await
                .unwrap()
        }

        async fn commit_one(&self, op: WriteOp) -> Outcome {
            self.commit(vec![op]).await.pop().unwrap()
        }

        /// The doctor's alerts after `after_id`, as (kind, appointment).
        async fn alerts(&self, after_id: i64) -> Vec<(String, AppointmentId)> {
            let list = self
                .store
                .provider_alerts_after(self.doctor, after_id, 100)
                .await
                .unwrap();
            list.into_iter()
                .map(|a| (a.kind, a.appointment_id))
                .collect()
        }

        /// The id of the doctor's newest alert (0 if none).
        async fn last_alert_id(&self) -> i64 {
            let list = self
                .store
                .provider_alerts_after(self.doctor, 0, i64::MAX)
                .await
                .unwrap();
            list.last().map_or(0, |a| a.id)
        }

        async fn actions(&self, id: AppointmentId) -> Vec<String> {
            let history = self.store.history(id).await.unwrap();
            history.into_iter().map(|h| h.action).collect()
        }

        fn status_change(
            &self,
            id: AppointmentId,
            from: &[AppointmentStatus],
            to: AppointmentStatus,
        ) -> WriteOp {
            WriteOp::SetStatus {
                id,
                from: from.to_vec(),
                to,
                by: Some(self.patient),
                reason: None,
                sealed_reason: None,
                starts_after: None,
                hold_valid_at: None,
            }
        }
    }

    use AppointmentStatus::{Booked, Cancelled, Completed, Held};

    #[tokio::test]
    async fn open_sets_wal_full_sync_foreign_keys_and_schema_version() {
        let f = fixture().await;
        let conn = lock(&f.store.inner.writer);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let fks: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert_eq!(sync, 2, "synchronous=FULL");
        assert_eq!(fks, 1);
        assert_eq!(version, 7);
        assert_eq!(MIGRATIONS.last().map(|m| m.0), Some(version));
    }

    #[tokio::test]
    async fn overlapping_inserts_in_one_batch_first_wins() {
        let f = fixture().await;
        let a = f.appt(0, 30, Booked);
        let b = f.appt(15, 45, Held);
        let c = f.appt(30, 60, Booked); // touches a: half-open ranges do not overlap
        let out = f
            .commit(vec![f.insert(&a), f.insert(&b), f.insert(&c)])
            .await;
        assert_eq!(out[0], Ok(a.clone()));
        assert_eq!(out[1], Err(OpError::SlotTaken));
        assert_eq!(out[2], Ok(c.clone()));
        let active = f.store.load_active(f.doctor, t(-60)).await.unwrap();
        assert_eq!(active, vec![a.clone(), c]);
        assert_eq!(f.store.appointment(b.id).await.unwrap(), None);
        assert_eq!(f.actions(a.id).await, ["book"]);
        assert!(f.store.history(b.id).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn triggers_guard_overlap_and_history_without_the_store() {
        let f = fixture().await;
        let a = f.appt(0, 30, Booked);
        let b = f.appt(60, 90, Booked);
        assert!(
            f.commit(vec![f.insert(&a), f.insert(&b)])
                .await
                .iter()
                .all(Result::is_ok)
        );

        // Another writer (a tool, a bug) that skips the store's own check.
        let raw = connect(&f.db.path()).unwrap();
        let insert = |id: Uuid, status: &str| {
            raw.execute(
                "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at,
                    ends_at, block_start, block_end, status, hold_expires_at, created_at,
                    updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6, ?7, ?8, 0, 0)",
                params![
                    uid(id),
                    uid(f.doctor.0),
                    uid(f.patient.0),
                    uid(f.visit_type.0),
                    us(t(10)),
                    us(t(40)),
                    status,
                    us(now() + Duration::minutes(5)),
                ],
            )
        };
        for status in ["booked", "held"] {
            let err = insert(Uuid::now_v7(), status).unwrap_err();
            assert!(is_no_overlap(&err), "{err}");
            assert_eq!(op_error(err), OpError::SlotTaken);
        }
        // Inactive rows may overlap anything.
        insert(Uuid::now_v7(), "cancelled").unwrap();

        // Moving b onto a, or reviving a cancelled row over a, is refused too.
        let err = raw
            .execute(
                "UPDATE appointments SET starts_at = ?2, ends_at = ?3, block_start = ?2,
                    block_end = ?3 WHERE id = ?1",
                params![uid(b.id.0), us(t(20)), us(t(50))],
            )
            .unwrap_err();
        assert!(is_no_overlap(&err), "{err}");
        let err = raw
            .execute(
                "UPDATE appointments SET status = 'booked' WHERE status = 'cancelled'",
                [],
            )
            .unwrap_err();
        assert!(is_no_overlap(&err), "{err}");
        assert_eq!(f.store.appointment(b.id).await.unwrap(), Some(b));

        // The history is append-only.
        for sql in [
            "UPDATE appointment_history SET note = 'x'",
            "DELETE FROM appointment_history",
        ] {
            let err = raw.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        assert_eq!(f.actions(a.id).await, ["book"]);
    }

    #[tokio::test]
    async fn used_idempotency_key_returns_the_existing_appointment() {
        let f = fixture().await;
        let mut a = f.appt(0, 30, Held);
        a.idempotency_key = Some("key-1".into());
        assert_eq!(f.commit_one(f.insert(&a)).await, Ok(a.clone()));

        // Another slot, same key: what the key made comes back.
        let mut again = f.appt(120, 150, Held);
        again.idempotency_key = Some("key-1".into());
        assert_eq!(
            f.commit_one(f.insert(&again)).await,
            Err(OpError::Duplicate(Box::new(a.clone())))
        );

        // Within one batch as well.
        let mut b = f.appt(200, 230, Booked);
        b.idempotency_key = Some("key-2".into());
        let mut c = f.appt(300, 330, Booked);
        c.idempotency_key = Some("key-2".into());
        let out = f.commit(vec![f.insert(&b), f.insert(&c)]).await;
        assert_eq!(
            out,
            vec![Ok(b.clone()), Err(OpError::Duplicate(Box::new(b)))]
        );
        assert_eq!(
            f.store
                .appointment_by_key(f.patient, "key-1")
                .await
                .unwrap(),
            Some(a)
        );
        assert_eq!(f.store.appointment(c.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn holds_over_the_patients_cap_are_refused_alone() {
        let f = fixture().await;
        let capped = |a: &Appointment| WriteOp::Insert {
            appointment: a.clone(),
            by: f.patient,
            max_live_holds: Some(2),
        };
        // A lapsed hold does not count.
        let mut lapsed = f.appt(0, 30, Held);
        lapsed.hold_expires_at = Some(now() - Duration::minutes(1));
        assert!(f.commit_one(f.insert(&lapsed)).await.is_ok());
        let (h1, h2, h3) = (
            f.appt(60, 90, Held),
            f.appt(120, 150, Held),
            f.appt(180, 210, Held),
        );
        // A booking is never capped, and the writes after a refusal apply.
        let b = f.appt(240, 270, Booked);
        let out = f
            .commit(vec![
                capped(&h1),
                capped(&h2),
                capped(&h3),
                WriteOp::Insert {
                    appointment: b.clone(),
                    by: f.patient,
                    max_live_holds: Some(2),
                },
            ])
            .await;
        assert_eq!(
            out,
            vec![
                Ok(h1.clone()),
                Ok(h2.clone()),
                Err(OpError::TooManyHolds(2)),
                Ok(b.clone())
            ]
        );
        assert!(f.store.appointment(h3.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn lapsed_hold_is_replaced_by_a_new_insert() {
        let f = fixture().await;
        // A crashed node left a hold that lapsed a minute ago.
        let mut lapsed = f.appt(0, 30, Held);
        lapsed.hold_expires_at = Some(now() - Duration::minutes(1));
        // A live hold elsewhere still counts.
        let live = f.appt(60, 90, Held);
        assert!(
            f.commit(vec![f.insert(&lapsed), f.insert(&live)])
                .await
                .iter()
                .all(Result::is_ok)
        );

        let b = f.appt(10, 40, Booked);
        let c = f.appt(70, 100, Booked);
        let out = f.commit(vec![f.insert(&b), f.insert(&c)]).await;
        assert_eq!(out, vec![Ok(b.clone()), Err(OpError::SlotTaken)]);

        let old = f.store.appointment(lapsed.id).await.unwrap().unwrap();
        assert_eq!(old.status, Cancelled);
        assert_eq!(old.cancel_reason.as_deref(), Some("hold_expired"));
        let history = f.store.history(lapsed.id).await.unwrap();
        let actions: Vec<&str> = history.iter().map(|h| h.action.as_str()).collect();
        assert_eq!(actions, ["hold", "expire"]);
        let expire = &history[1];
        assert_eq!(expire.by, None);
        assert_eq!(expire.from_status, Some(Held));
        assert_eq!(expire.to_status, Cancelled);
        assert_eq!(expire.note, "hold expired");
        assert_eq!(f.actions(b.id).await, ["book"]);
        assert_eq!(f.actions(live.id).await, ["hold"]);
    }

    #[tokio::test]
    async fn reschedule_onto_a_taken_range_changes_nothing() {
        let f = fixture().await;
        let a = f.appt(0, 30, Booked);
        let b = f.appt(60, 90, Booked);
        f.commit(vec![f.insert(&a), f.insert(&b)]).await;
        let moving = |from: i64, to: i64| WriteOp::Reschedule {
            id: b.id,
            time: span(from, to),
            block: span(from, to),
            by: f.patient,
            starts_after: None,
        };

        assert_eq!(f.commit_one(moving(15, 45)).await, Err(OpError::SlotTaken));
        assert_eq!(f.store.appointment(b.id).await.unwrap(), Some(b.clone()));
        assert_eq!(f.actions(b.id).await, ["book"]);

        // Overlapping its own old time is fine.
        let moved = f.commit_one(moving(75, 105)).await.unwrap();
        assert_eq!(moved.time, span(75, 105));
        let history = f.store.history(b.id).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].action, "reschedule");
        assert_eq!(history[1].from_start, Some(t(60)));
        assert_eq!(history[1].to_start, t(75));
        assert_eq!(history[1].by, Some(f.patient));

        // Guards: past the cut-off, inactive, unknown.
        let late = WriteOp::Reschedule {
            id: b.id,
            time: span(200, 230),
            block: span(200, 230),
            by: f.patient,
            starts_after: Some(t(80)),
        };
        assert_eq!(f.commit_one(late).await, Err(OpError::CutoffPassed));
        f.commit_one(f.status_change(a.id, &[Booked], Cancelled))
            .await
            .unwrap();
        let revive = WriteOp::Reschedule {
            id: a.id,
            time: span(300, 330),
            block: span(300, 330),
            by: f.patient,
            starts_after: None,
        };
        assert_eq!(
            f.commit_one(revive).await,
            Err(OpError::InvalidTransition(Cancelled))
        );
        let unknown = WriteOp::Reschedule {
            id: AppointmentId::new(),
            time: span(300, 330),
            block: span(300, 330),
            by: f.patient,
            starts_after: None,
        };
        assert_eq!(f.commit_one(unknown).await, Err(OpError::NotFound));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_batches_on_one_slot_have_exactly_one_winner() {
        let f = fixture().await;
        // A second store on the same file stands for a second process.
        let other = SqliteStore::open(&f.db.path(), test_cipher()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..40_i64 {
            let store = if i % 2 == 0 {
                f.store.clone()
            } else {
                other.clone()
            };
            // Every range overlaps every other one.
            let a = f.appt(i % 20, i % 20 + 30, if i % 3 == 0 { Held } else { Booked });
            let op = f.insert(&a);
            let doctor = f.doctor;
            tasks.push(tokio::spawn(async move {
                store.commit_batch(doctor, vec![op.into()]).await
            }));
        }
        let mut won = 0;
        let mut lost = 0;
        for task in tasks {
            match task.await.unwrap().unwrap().pop().unwrap() {
                Ok(_) => won += 1,
                Err(OpError::SlotTaken) => lost += 1,
                Err(e) => panic!("unexpected outcome {e:?}"),
            }
        }
        assert_eq!((won, lost), (1, 39));
        let active = f.store.load_active(f.doctor, t(-60)).await.unwrap();
        assert_eq!(active.len(), 1);
    }

    #[tokio::test]
    async fn refresh_token_reuse_revokes_the_family() {
        let f = fixture().await;
        let family = Uuid::now_v7();
        let later = now() + Duration::hours(1);
        f.store
            .insert_refresh_token(f.patient, b"first", family, later)
            .await
            .unwrap();

        match f
            .store
            .use_refresh_token(
                b"first",
                &next_digest(),
                Utc::now() + chrono::Duration::days(1),
            )
            .await
            .unwrap()
        {
            RefreshOutcome::Rotated { user, family: fam } => {
                assert_eq!(user.id, f.patient);
                assert_eq!(user.email, "pat@example.org");
                assert_eq!(fam, family);
            }
            other => panic!("expected rotation, got {other:?}"),
        }
        f.store
            .insert_refresh_token(f.patient, b"second", family, later)
            .await
            .unwrap();

        // Replaying the used token revokes the family, the fresh token too.
        assert!(matches!(
            f.store
                .use_refresh_token(
                    b"first",
                    &next_digest(),
                    Utc::now() + chrono::Duration::days(1)
                )
                .await
                .unwrap(),
            RefreshOutcome::Reused
        ));
        assert!(matches!(
            f.store
                .use_refresh_token(
                    b"second",
                    &next_digest(),
                    Utc::now() + chrono::Duration::days(1)
                )
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        ));
        assert!(matches!(
            f.store
                .use_refresh_token(
                    b"unknown",
                    &next_digest(),
                    Utc::now() + chrono::Duration::days(1)
                )
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        ));

        // Another login's family is untouched; an expired token is invalid.
        let other = Uuid::now_v7();
        f.store
            .insert_refresh_token(f.patient, b"third", other, later)
            .await
            .unwrap();
        f.store
            .insert_refresh_token(f.patient, b"stale", other, now() - Duration::seconds(1))
            .await
            .unwrap();
        assert!(matches!(
            f.store
                .use_refresh_token(
                    b"stale",
                    &next_digest(),
                    Utc::now() + chrono::Duration::days(1)
                )
                .await
                .unwrap(),
            RefreshOutcome::Invalid
        ));
        assert!(matches!(
            f.store
                .use_refresh_token(
                    b"third",
                    &next_digest(),
                    Utc::now() + chrono::Duration::days(1)
                )
                .await
                .unwrap(),
            RefreshOutcome::Rotated { .. }
        ));
    }

    #[tokio::test]
    async fn data_survives_closing_and_reopening() {
        let f = fixture().await;
        let a = f.appt(0, 30, Booked);
        assert_eq!(f.commit_one(f.insert(&a)).await, Ok(a.clone()));
        let Fixture {
            store,
            doctor,
            patient,
            db,
            ..
        } = f;
        drop(store);

        let store = SqliteStore::open(&db.path(), test_cipher()).unwrap();
        assert_eq!(store.appointment(a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(store.history(a.id).await.unwrap().len(), 1);
        assert_eq!(store.patient_appointments(patient).await.unwrap(), vec![a]);
        assert_eq!(store.doctor(doctor).await.unwrap().unwrap().name, "Dr Ada");
        let email = Email::parse("PAT@example.org").unwrap();
        assert_eq!(
            store.user_by_email(&email).await.unwrap().unwrap().id,
            patient
        );
        let schedule = store.load_schedule(doctor).await.unwrap().unwrap();
        assert_eq!(schedule.visit_types.len(), 1);
        assert_eq!(schedule.time_zone, chrono_tz::Europe::Berlin);
    }

    #[tokio::test]
    async fn status_changes_follow_the_guards_and_diagnose_refusals() {
        let f = fixture().await;
        let hold = f.appt(0, 30, Held);
        let mut lapsed = f.appt(60, 90, Held);
        lapsed.hold_expires_at = Some(now() - Duration::minutes(1));
        let booked = f.appt(120, 150, Booked);
        f.commit(vec![f.insert(&hold), f.insert(&lapsed), f.insert(&booked)])
            .await;

        let confirm = |id| WriteOp::SetStatus {
            id,
            from: vec![Held],
            to: Booked,
            by: Some(f.patient),
            reason: None,
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: Some(now()),
        };
        let confirmed = f.commit_one(confirm(hold.id)).await.unwrap();
        assert_eq!(confirmed.status, Booked);
        assert_eq!(confirmed.hold_expires_at, None);
        assert_eq!(f.actions(hold.id).await, ["hold", "confirm"]);
        assert_eq!(
            f.commit_one(confirm(hold.id)).await,
            Err(OpError::InvalidTransition(Booked))
        );
        assert_eq!(
            f.commit_one(confirm(lapsed.id)).await,
            Err(OpError::HoldExpired)
        );
        assert_eq!(
            f.commit_one(confirm(AppointmentId::new())).await,
            Err(OpError::NotFound)
        );

        let cancel = |id, starts_after| WriteOp::SetStatus {
            id,
            from: vec![Held, Booked],
            to: Cancelled,
            by: Some(f.patient),
            reason: Some("changed plans".into()),
            sealed_reason: None,
            starts_after,
            hold_valid_at: None,
        };
        assert_eq!(
            f.commit_one(cancel(booked.id, Some(t(120)))).await,
            Err(OpError::CutoffPassed)
        );
        let cancelled = f.commit_one(cancel(booked.id, Some(t(119)))).await.unwrap();
        assert_eq!(cancelled.cancel_reason.as_deref(), Some("changed plans"));
        let history = f.store.history(booked.id).await.unwrap();
        assert_eq!(history[1].action, "cancel");
        assert_eq!(history[1].note, "changed plans");
        assert_eq!(history[1].from_status, Some(Booked));

        // The system expiring a hold is recorded as "expire".
        let expire = WriteOp::SetStatus {
            id: lapsed.id,
            from: vec![Held],
            to: Cancelled,
            by: None,
            reason: Some("hold_expired".into()),
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: None,
        };
        f.commit_one(expire).await.unwrap();
        assert_eq!(f.actions(lapsed.id).await, ["hold", "expire"]);

        // Mixed batch: failures do not stop the others.
        let out = f
            .commit(vec![
                f.status_change(hold.id, &[Booked], Completed),
                f.status_change(hold.id, &[Booked], Completed),
            ])
            .await;
        assert_eq!(out[0].as_ref().unwrap().status, Completed);
        assert_eq!(out[1], Err(OpError::InvalidTransition(Completed)));
        assert_eq!(f.actions(hold.id).await, ["hold", "confirm", "complete"]);

        // Reviving a cancelled appointment over an active one is refused.
        let over = f.appt(120, 150, Booked);
        f.commit_one(f.insert(&over)).await.unwrap();
        assert_eq!(
            f.commit_one(f.status_change(booked.id, &[Cancelled], Booked))
                .await,
            Err(OpError::SlotTaken)
        );
    }

    #[tokio::test]
    async fn a_refused_write_is_rolled_back_alone() {
        let f = fixture().await;
        let good = f.appt(0, 30, Booked);
        // Unknown visit type: a foreign-key failure inside the batch.
        let mut bad = f.appt(60, 90, Booked);
        bad.visit_type_id = VisitTypeId::new();
        let out = f.commit(vec![f.insert(&bad), f.insert(&good)]).await;
        assert!(matches!(&out[0], Err(OpError::Other(m)) if m.contains("FOREIGN KEY")));
        assert_eq!(out[1], Ok(good.clone()));
        assert_eq!(f.store.appointment(bad.id).await.unwrap(), None);
        assert!(f.store.history(bad.id).await.unwrap().is_empty());
        assert_eq!(f.actions(good.id).await, ["book"]);
    }

    #[tokio::test]
    async fn catalogue_errors_and_orderings_match_postgres() {
        let f = fixture().await;
        let s = &f.store;
        assert!(matches!(
            s.create_user(new_user("PAT@example.ORG", Role::Patient, None))
                .await,
            Err(DbError::Conflict("account"))
        ));
        assert!(matches!(
            s.create_user(new_user(
                "doc@example.org",
                Role::Doctor,
                Some(DoctorId::new())
            ))
            .await,
            Err(DbError::Missing("account"))
        ));
        assert!(matches!(
            s.create_doctor(ClinicId::new(), doctor_fields("X", &[]))
                .await,
            Err(DbError::Missing("clinic"))
        ));
        assert!(matches!(
            s.update_doctor(DoctorId::new(), doctor_fields("X", &[]))
                .await,
            Err(DbError::Missing("doctor"))
        ));
        assert!(matches!(
            s.update_clinic(ClinicId::new(), clinic_fields("X")).await,
            Err(DbError::Missing("clinic"))
        ));
        let stray = DoctorId::new();
        assert!(matches!(
            s.create_visit_type(stray, visit_type_record(stray, "X", false))
                .await,
            Err(DbError::Missing("doctor"))
        ));

        // A new default visit type replaces the old one; order of creation.
        let second = s
            .create_visit_type(f.doctor, visit_type_record(f.doctor, "Follow-up", true))
            .await
            .unwrap();
        let types = s.visit_types(f.doctor).await.unwrap();
        let names: Vec<(&str, bool)> = types
            .iter()
            .map(|v| (v.name.as_str(), v.is_default))
            .collect();
        assert_eq!(names, [("Consultation", false), ("Follow-up", true)]);
        assert_eq!(types[1].id, second.id);

        // Doctors: active only, by name, specialty matched case-insensitively.
        let clinic = s.doctor(f.doctor).await.unwrap().unwrap().clinic_id;
        let zed = s
            .create_doctor(clinic, doctor_fields("Dr Zed", &["ÄRZTIN", "cardiology"]))
            .await
            .unwrap();
        s.create_doctor(clinic, doctor_fields("Dr Bob", &["Dermatology"]))
            .await
            .unwrap();
        let mut off = doctor_fields("Dr Off", &["Cardiology"]);
        off.active = false;
        s.create_doctor(clinic, off).await.unwrap();
        let names = |list: Vec<Doctor>| list.into_iter().map(|d| d.name).collect::<Vec<_>>();
        assert_eq!(
            names(s.doctors(None, None).await.unwrap()),
            ["Dr Ada", "Dr Bob", "Dr Zed"]
        );
        assert_eq!(
            names(s.doctors(Some(clinic), Some("CARDIOLOGY")).await.unwrap()),
            ["Dr Ada", "Dr Zed"]
        );
        assert_eq!(
            names(s.doctors(None, Some("ärztin")).await.unwrap()),
            ["Dr Zed"]
        );
        assert_eq!(zed.languages, ["en", "de"]);
        assert!(
            s.doctors(Some(ClinicId::new()), None)
                .await
                .unwrap()
                .is_empty()
        );

        // Rules by weekday then start; exceptions by start.
        let hm = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap();
        for (weekday, start) in [(3, hm(14, 0)), (1, hm(9, 30)), (3, hm(8, 0))] {
            s.create_rule(
                f.doctor,
                RuleRecord {
                    id: Uuid::now_v7(),
                    weekday,
                    start_time: start,
                    end_time: hm(18, 0),
                    valid_from: NaiveDate::from_ymd_opt(2031, 1, 1),
                    valid_until: None,
                },
            )
            .await
            .unwrap();
        }
        let rules = s.rules(f.doctor).await.unwrap();
        let order: Vec<(i16, NaiveTime)> =
            rules.iter().map(|r| (r.weekday, r.start_time)).collect();
        assert_eq!(order, [(1, hm(9, 30)), (3, hm(8, 0)), (3, hm(14, 0))]);
        assert_eq!(rules[0].valid_from, NaiveDate::from_ymd_opt(2031, 1, 1));
        assert!(s.delete_rule(f.doctor, rules[0].id).await.unwrap());
        assert!(!s.delete_rule(f.doctor, rules[0].id).await.unwrap());

        let exception = ExceptionRecord {
            id: Uuid::now_v7(),
            kind: ExceptionKind::TimeOff,
            start: t(0),
            end: t(60),
            reason: "holiday".into(),
        };
        assert_eq!(
            s.create_exception(f.doctor, exception.clone())
                .await
                .unwrap()
                .reason,
            "holiday"
        );
        assert_eq!(s.exceptions(f.doctor, t(30)).await.unwrap().len(), 1);
        assert!(s.exceptions(f.doctor, t(60)).await.unwrap().is_empty());
        let schedule = s.load_schedule(f.doctor).await.unwrap().unwrap();
        assert_eq!(schedule.rules.len(), 2);
        assert_eq!(schedule.exceptions.len(), 1);
        assert_eq!(schedule.booking_horizon, Duration::days(60));
        assert!(s.load_schedule(DoctorId::new()).await.unwrap().is_none());
        s.ping().await.unwrap();
    }

    #[tokio::test]
    async fn import_and_sweep_write_history() {
        let f = fixture().await;
        let mut past: Vec<Appointment> = (0..3)
            .map(|i| f.appt(-10_000 + i * 60, -10_000 + i * 60 + 30, Completed))
            .collect();
        past[1].status = AppointmentStatus::NoShow;
        assert_eq!(f.store.import_past_appointments(&past).await.unwrap(), 3);
        let history = f.store.history(past[1].id).await.unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].action, "import");
        assert_eq!(history[0].note, "imported history");
        assert_eq!(history[0].to_status, AppointmentStatus::NoShow);

        let mut lapsed = f.appt(0, 30, Held);
        lapsed.hold_expires_at = Some(now() - Duration::seconds(5));
        let live = f.appt(60, 90, Held);
        f.commit(vec![f.insert(&lapsed), f.insert(&live)]).await;
        assert_eq!(f.store.sweep_expired_holds().await.unwrap(), 1);
        assert_eq!(f.actions(lapsed.id).await, ["hold", "expire"]);
        assert_eq!(f.store.sweep_expired_holds().await.unwrap(), 0);

        // Newest first; the doctor's view by start within the range.
        let mine = f.store.patient_appointments(f.patient).await.unwrap();
        let starts: Vec<DateTime<Utc>> = mine.iter().map(|a| a.time.start()).collect();
        let mut sorted = starts.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(starts, sorted);
        assert_eq!(mine.len(), 5);
        let day = f
            .store
            .doctor_appointments(f.doctor, span(-10_000, 100))
            .await
            .unwrap();
        assert_eq!(day.first().map(|a| a.id), Some(past[0].id));
        assert_eq!(day.last().map(|a| a.id), Some(live.id));

        // An active row in an import is refused as a whole.
        let clash = f.appt(60, 90, Booked);
        assert!(
            f.store
                .import_past_appointments(std::slice::from_ref(&clash))
                .await
                .is_err()
        );
        assert_eq!(f.store.appointment(clash.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn provider_alerts_follow_the_writes_a_doctor_must_hear_about() {
        let f = fixture().await;
        let alert = |kind: &str, id: AppointmentId| (kind.to_string(), id);

        // Inserts: a booking alerts, a hold does not, a lost race does not.
        let booked = f.appt(0, 30, Booked);
        let hold = f.appt(60, 90, Held);
        let clash = f.appt(15, 45, Booked);
        let out = f
            .commit(vec![f.insert(&booked), f.insert(&hold), f.insert(&clash)])
            .await;
        assert_eq!(out[2], Err(OpError::SlotTaken));
        assert_eq!(f.alerts(0).await, [alert("booked", booked.id)]);
        let first = f
            .store
            .provider_alerts_after(f.doctor, 0, 10)
            .await
            .unwrap();
        let a = &first[0];
        assert_eq!(
            (a.doctor_id, a.patient_id, a.status),
            (f.doctor, f.patient, Booked)
        );
        assert_eq!((a.start, a.end), (t(0), t(30)));
        assert_eq!(a.previous_start, None);
        assert_eq!(a.at, booked.created_at);
        let after_booking = a.id;

        // A used idempotency key writes nothing new.
        let mut keyed = f.appt(200, 230, Booked);
        keyed.idempotency_key = Some("k-1".into());
        f.commit_one(f.insert(&keyed)).await.unwrap();
        let mut again = f.appt(300, 330, Booked);
        again.idempotency_key = Some("k-1".into());
        assert!(matches!(
            f.commit_one(f.insert(&again)).await,
            Err(OpError::Duplicate(_))
        ));
        assert_eq!(f.alerts(after_booking).await, [alert("booked", keyed.id)]);
        let mark = f.last_alert_id().await;

        // Confirming a hold: "hold_confirmed" only.
        let confirm = WriteOp::SetStatus {
            id: hold.id,
            from: vec![Held],
            to: Booked,
            by: Some(f.patient),
            reason: None,
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: Some(now()),
        };
        f.commit_one(confirm).await.unwrap();
        assert_eq!(f.alerts(mark).await, [alert("hold_confirmed", hold.id)]);
        let mark = f.last_alert_id().await;

        // Released, expired (by the actor, by a new insert, by the sweep)
        // and refused changes: no alert.
        let released = f.appt(400, 430, Held);
        let mut lapsed = f.appt(500, 530, Held);
        lapsed.hold_expires_at = Some(now() - Duration::minutes(1));
        let mut lapsed2 = f.appt(600, 630, Held);
        lapsed2.hold_expires_at = Some(now() - Duration::minutes(1));
        let mut lapsed3 = f.appt(700, 730, Held);
        lapsed3.hold_expires_at = Some(now() - Duration::minutes(1));
        f.commit(vec![
            f.insert(&released),
            f.insert(&lapsed),
            f.insert(&lapsed2),
            f.insert(&lapsed3),
        ])
        .await;
        f.commit_one(f.status_change(released.id, &[Held, Booked], Cancelled))
            .await
            .unwrap();
        let expire = WriteOp::SetStatus {
            id: lapsed.id,
            from: vec![Held],
            to: Cancelled,
            by: None,
            reason: Some("hold_expired".into()),
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: None,
        };
        f.commit_one(expire).await.unwrap();
        let over = f.appt(700, 730, Booked);
        f.commit_one(f.insert(&over)).await.unwrap();
        assert_eq!(
            f.store
                .appointment(lapsed3.id)
                .await
                .unwrap()
                .unwrap()
                .status,
            Cancelled
        );
        assert_eq!(f.store.sweep_expired_holds().await.unwrap(), 1);
        assert_eq!(
            f.commit_one(f.status_change(booked.id, &[Held], Cancelled))
                .await,
            Err(OpError::InvalidTransition(Booked))
        );
        // Only the booking that replaced a lapsed hold.
        assert_eq!(f.alerts(mark).await, [alert("booked", over.id)]);
        let mark = f.last_alert_id().await;

        // Cancelling a booking alerts; completing one does not.
        f.commit_one(f.status_change(booked.id, &[Held, Booked], Cancelled))
            .await
            .unwrap();
        f.commit_one(f.status_change(hold.id, &[Booked], Completed))
            .await
            .unwrap();
        assert_eq!(f.alerts(mark).await, [alert("cancelled", booked.id)]);
        let cancelled = f
            .store
            .provider_alerts_after(f.doctor, mark, 10)
            .await
            .unwrap();
        assert_eq!(cancelled[0].status, Cancelled);
        let mark = f.last_alert_id().await;

        // Rescheduling a booking alerts with the old start; a hold does not.
        let moving = |id, from, to| WriteOp::Reschedule {
            id,
            time: span(from, to),
            block: span(from, to),
            by: f.patient,
            starts_after: None,
        };
        let held = f.appt(800, 830, Held);
        f.commit_one(f.insert(&held)).await.unwrap();
        f.commit_one(moving(held.id, 840, 870)).await.unwrap();
        f.commit_one(moving(keyed.id, 900, 930)).await.unwrap();
        let moved = f
            .store
            .provider_alerts_after(f.doctor, mark, 10)
            .await
            .unwrap();
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].kind.as_str(), moved[0].appointment_id),
            ("rescheduled", keyed.id)
        );
        assert_eq!(moved[0].previous_start, Some(t(200)));
        assert_eq!((moved[0].start, moved[0].end), (t(900), t(930)));
        assert_eq!(moved[0].status, Booked);

        // Imported history creates none.
        let past = f.appt(-10_000, -9_970, Completed);
        f.store.import_past_appointments(&[past]).await.unwrap();

        // Everything, in id order; paging; another doctor sees none of it.
        let all = f
            .store
            .provider_alerts_after(f.doctor, 0, 100)
            .await
            .unwrap();
        let kinds: Vec<&str> = all.iter().map(|a| a.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "booked",
                "booked",
                "hold_confirmed",
                "booked",
                "cancelled",
                "rescheduled"
            ]
        );
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        let page = f
            .store
            .provider_alerts_after(f.doctor, all[1].id, 2)
            .await
            .unwrap();
        assert_eq!(page, all[2..4]);
        assert!(
            f.store
                .provider_alerts_after(f.doctor, all[5].id, 100)
                .await
                .unwrap()
                .is_empty()
        );
        for limit in [0, -1] {
            assert!(
                f.store
                    .provider_alerts_after(f.doctor, 0, limit)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        assert!(
            f.store
                .provider_alerts_after(DoctorId::new(), 0, 100)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_alert_commits_with_its_write_or_not_at_all() {
        let f = fixture().await;
        let a = f.appt(0, 30, Booked);
        let b = f.appt(60, 90, Booked);
        // Another writer makes the alert insert fail for `b` alone.
        let raw = connect(&f.db.path()).unwrap();
        raw.execute_batch(&format!(
            "CREATE TRIGGER refuse_alert BEFORE INSERT ON provider_alerts
             WHEN NEW.appointment_id = '{}'
             BEGIN SELECT RAISE(ABORT, 'alert refused'); END;",
            uid(b.id.0)
        ))
        .unwrap();
        let out = f.commit(vec![f.insert(&a), f.insert(&b)]).await;
        assert_eq!(out[0], Ok(a.clone()));
        assert!(matches!(&out[1], Err(OpError::Other(m)) if m.contains("alert refused")));
        // The booking whose alert failed is rolled back with it.
        assert_eq!(f.store.appointment(b.id).await.unwrap(), None);
        assert!(f.store.history(b.id).await.unwrap().is_empty());
        assert_eq!(f.alerts(0).await, [("booked".to_string(), a.id)]);

        // Alerts are append-only.
        for sql in [
            "UPDATE provider_alerts SET kind = 'cancelled'",
            "DELETE FROM provider_alerts",
        ] {
            let err = raw.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        // The schema refuses a malformed alert.
        let bad = raw.execute(
            "INSERT INTO provider_alerts (doctor_id, appointment_id, patient_id, kind, at,
                starts_at, ends_at, status)
             VALUES (?1, ?2, ?3, 'rescheduled', 0, 1, 2, 'booked')",
            params![uid(f.doctor.0), uid(a.id.0), uid(f.patient.0)],
        );
        assert!(bad.is_err(), "a reschedule without previous_start");
    }

    #[tokio::test]
    async fn a_v1_database_upgrades_to_provider_alerts() {
        let db = TempDb::new();
        std::fs::create_dir_all(db.path().parent().unwrap()).unwrap();
        // A database as a V1-only build left it, with a booking in it.
        let doctor = DoctorId::new();
        let patient = UserId::new();
        let visit_type = VisitTypeId::new();
        let id = AppointmentId::new();
        {
            let mut raw = connect(&db.path()).unwrap();
            let tx = raw.transaction().unwrap();
            tx.execute_batch(MIGRATIONS[0].1).unwrap();
            tx.pragma_update(None, "user_version", 1).unwrap();
            tx.execute(
                "INSERT INTO clinics (id, name, time_zone) VALUES (?1, 'Old', 'UTC')",
                [uid(Uuid::now_v7())],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO doctors (id, clinic_id, name) SELECT ?1, id, 'Dr Old' FROM clinics",
                [uid(doctor.0)],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO users (id, email, password_hash, name, role)
                 VALUES (?1, 'old@example.org', 'x', 'Old', 'patient')",
                [uid(patient.0)],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO visit_types (id, doctor_id, name, duration_minutes, is_default)
                 VALUES (?1, ?2, 'Visit', 30, 1)",
                params![uid(visit_type.0), uid(doctor.0)],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO appointments (id, doctor_id, patient_id, visit_type_id, starts_at,
                    ends_at, block_start, block_end, status)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?6, 'booked')",
                params![
                    uid(id.0),
                    uid(doctor.0),
                    uid(patient.0),
                    uid(visit_type.0),
                    us(t(0)),
                    us(t(30)),
                ],
            )
            .unwrap();
            tx.commit().unwrap();
            let tables: i64 = raw
                .query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'provider_alerts'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(tables, 0);
        }

        let store = SqliteStore::open(&db.path(), test_cipher()).unwrap();
        let version: i64 = lock(&store.inner.writer)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            version,
            MIGRATIONS.last().map_or(0, |m| m.0),
            "upgraded through every later migration"
        );
        // The old data is intact and raised no alerts.
        let old = store.appointment(id).await.unwrap().unwrap();
        assert_eq!(old.status, Booked);
        assert!(
            store
                .provider_alerts_after(doctor, 0, 100)
                .await
                .unwrap()
                .is_empty()
        );
        // Writes to it now do.
        let cancel = WriteOp::SetStatus {
            id,
            from: vec![Held, Booked],
            to: Cancelled,
            by: Some(patient),
            reason: None,
            sealed_reason: None,
            starts_after: None,
            hold_valid_at: None,
        };
        store
            .commit_batch(doctor, vec![cancel.into()])
            .await
            .unwrap()[0]
            .as_ref()
            .unwrap();
        let alerts = store.provider_alerts_after(doctor, 0, 100).await.unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].kind.as_str(), alerts[0].appointment_id),
            ("cancelled", id)
        );
        drop(store);

        // Opening again applies nothing twice.
        let store = SqliteStore::open(&db.path(), test_cipher()).unwrap();
        let version: i64 = lock(&store.inner.writer)
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.last().map_or(0, |m| m.0));
        assert_eq!(
            store
                .provider_alerts_after(doctor, 0, 100)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
