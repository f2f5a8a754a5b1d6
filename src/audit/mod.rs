//! The audit log: every read and change of a patient's data — who, what,
//! when, from where — append-only and tamper-evident.
//!
//! # The chain
//!
//! Entries form one hash chain per database: entry `n` (`seq`, gapless from 1)
//! stores `prev_hash` = the `hash` of entry `n - 1` (32 zero bytes for the
//! first) and `hash` = SHA-256 over a canonical encoding of all its fields
//! and `prev_hash` ([`AuditEntry::compute_hash`]). Altering, removing or
//! inserting an entry anywhere breaks the chain from there on; cutting
//! entries off the end is caught against the one-row `audit_head` table,
//! which every append updates in the same transaction. [`verify`] walks the
//! whole chain. Database triggers additionally refuse UPDATE and DELETE (and
//! TRUNCATE in PostgreSQL), so tampering needs someone who can drop them.
//!
//! Entries hold ids only — never names, e-mails or free text — so erasing
//! a patient's personal data leaves every entry (and so the chain) intact.
//!
//! # Writing
//!
//! One background writer task per process ([`AuditLog`]) takes entries from
//! a channel and appends everything waiting in one transaction (group
//! commit), so a burst of bookings costs one audit commit, not one each.
//! Inside the transaction the chain head row is locked (`FOR UPDATE` in
//! PostgreSQL; SQLite has one writer at a time anyway), which serializes the
//! appends of every node sharing the database: seq stays gapless and
//! `prev_hash` right.
//!
//! Reads record *before* the data leaves: the handler awaits its entry's
//! durable acknowledgement, so no read goes unrecorded.
//!
//! Changes to appointments (book, hold, confirm, move, cancel, outcome)
//! travel with the change instead: the handler hands the calendar actor an
//! [`AuditNote`], and the store writes it into the `audit_outbox` table in
//! the very transaction that commits the change (see
//! `docspot_actors::store::AuditNote`). A committed change therefore always
//! has its record — there is no window in which a crash leaves one without
//! the other — and the request does not wait for a second commit. The
//! writer moves outbox rows into the chain (in order of arrival, under the
//! head lock, deleting them from the outbox in the same transaction, in a
//! transaction of its own) before each append, shortly after a handler
//! nudges it after a change ([`Audit::committed`]), and at least every
//! [`SWEEP`]. Queries drain the outbox first ([`AuditLog::flush`]), so what
//! the API shows includes every committed change.
//!
//! A change request that applies nothing (an idempotent retry answered
//! with the original booking, a confirmation of a hold already booked, a
//! move to where the appointment already is) writes no outbox record; its
//! route records it as a read of the appointment instead.

pub mod postgres;
pub mod sqlite;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    net::IpAddr,
    pin::Pin,
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::StatusCode, web};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use docspot_actors::{
    domain::{Appointment, ClinicId, DoctorId, UserId},
    store::AuditNote,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    auth::AuthUser, config::Backend, error::ApiError, ratelimit::RateLimits, routes::AppState,
};

/// What an entry records. The strings are stable: they are stored, hashed
/// and filtered on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// One appointment (or its history) was shown.
    AppointmentRead,
    /// A list of appointments was shown (a patient's own, a doctor's calendar).
    AppointmentList,
    /// A doctor's day view (every patient booked that day) was shown.
    DoctorDayRead,
    /// An appointment was booked.
    AppointmentCreate,
    /// A slot was held.
    AppointmentHold,
    /// A hold was confirmed.
    AppointmentConfirm,
    /// An appointment was moved.
    AppointmentReschedule,
    /// An appointment (or a hold) was cancelled.
    AppointmentCancel,
    /// Attended or no-show was recorded.
    AppointmentOutcome,
    /// The reason for visit or the doctor's notes were written.
    AppointmentDetailsUpdate,
    /// A patient's record was read.
    PatientRead,
    /// A patient's record (profile) was changed.
    PatientUpdate,
    /// A patient's data was exported.
    PatientExport,
    /// A patient's personal data was erased.
    PatientErase,
    /// A live subscription started streaming patient data.
    LiveSubscribe,
    /// A password login succeeded.
    AuthLogin,
    /// A password login failed.
    AuthLoginFailed,
    /// A refresh token was exchanged.
    AuthRefresh,
    /// A refresh token was refused (invalid, expired or replayed).
    AuthRefreshFailed,
    /// An account was registered.
    AuthRegister,
    /// The audit log itself was queried.
    AuditRead,
}

impl Action {
    /// Every action, for parsing and documentation.
    pub const ALL: [Action; 21] = [
        Action::AppointmentRead,
        Action::AppointmentList,
        Action::DoctorDayRead,
        Action::AppointmentCreate,
        Action::AppointmentHold,
        Action::AppointmentConfirm,
        Action::AppointmentReschedule,
        Action::AppointmentCancel,
        Action::AppointmentOutcome,
        Action::AppointmentDetailsUpdate,
        Action::PatientRead,
        Action::PatientUpdate,
        Action::PatientExport,
        Action::PatientErase,
        Action::LiveSubscribe,
        Action::AuthLogin,
        Action::AuthLoginFailed,
        Action::AuthRefresh,
        Action::AuthRefreshFailed,
        Action::AuthRegister,
        Action::AuditRead,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::AppointmentRead => "appointment.read",
            Action::AppointmentList => "appointment.list",
            Action::DoctorDayRead => "doctor.day_read",
            Action::AppointmentCreate => "appointment.create",
            Action::AppointmentHold => "appointment.hold",
            Action::AppointmentConfirm => "appointment.confirm",
            Action::AppointmentReschedule => "appointment.reschedule",
            Action::AppointmentCancel => "appointment.cancel",
            Action::AppointmentOutcome => "appointment.outcome",
            Action::AppointmentDetailsUpdate => "appointment.details_update",
            Action::PatientRead => "patient.read",
            Action::PatientUpdate => "patient.update",
            Action::PatientExport => "patient.export",
            Action::PatientErase => "patient.erase",
            Action::LiveSubscribe => "live.subscribe",
            Action::AuthLogin => "auth.login",
            Action::AuthLoginFailed => "auth.login_failed",
            Action::AuthRefresh => "auth.refresh",
            Action::AuthRefreshFailed => "auth.refresh_failed",
            Action::AuthRegister => "auth.register",
            Action::AuditRead => "audit.read",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| format!("unknown audit action {s:?}"))
    }
}

/// How the recorded attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused (wrong password, not allowed).
    Denied,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
        }
    }
}

/// Who acted: a signed-in user with their role, `anonymous` (failed
/// logins, registrations before the account exists) or `system`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user, if any.
    pub id: Option<Uuid>,
    /// `patient`, `doctor`, `clinic_admin`, `anonymous` or `system`.
    pub role: &'static str,
}

impl Actor {
    /// DocSpot itself (sweeps, jobs).
    pub const SYSTEM: Actor = Actor {
        id: None,
        role: "system",
    };
    /// Nobody signed in.
    pub const ANONYMOUS: Actor = Actor {
        id: None,
        role: "anonymous",
    };

    /// A signed-in caller.
    pub fn user(u: &AuthUser) -> Self {
        Actor {
            id: Some(u.id.0),
            role: u.role.as_str(),
        }
    }
}

/// An entry before the writer gives it its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// When (UTC, microsecond precision: what both databases store).
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: Action,
    /// Whose data.
    pub patient_id: Option<Uuid>,
    /// Which record: type (`appointment`, `user`, `doctor`…) and id.
    pub resource: Option<(&'static str, Uuid)>,
    /// The clinic the data belongs to (scopes clinic admins' queries).
    pub clinic_id: Option<Uuid>,
    /// The peer address of the request.
    pub client_ip: Option<IpAddr>,
    /// The request id (as logged by the tracing middleware).
    pub request_id: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
}

impl NewEntry {
    /// An entry for `action` by `actor`, now, with nothing else filled in.
    pub fn new(actor: Actor, action: Action) -> Self {
        NewEntry {
            at: now_micros(),
            actor,
            action,
            patient_id: None,
            resource: None,
            clinic_id: None,
            client_ip: None,
            request_id: None,
            outcome: Outcome::Success,
        }
    }

    /// Places the entry in the chain after `prev_seq` / `prev_hash`.
    pub fn chain(self, prev_seq: i64, prev_hash: [u8; 32]) -> AuditEntry {
        self.unlinked().link(prev_seq, prev_hash)
    }

    /// The entry as stored, before it has a place in the chain (seq and
    /// hashes unset; see [`AuditEntry::link`]).
    pub fn unlinked(self) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at: self.at,
            actor_id: self.actor.id,
            actor_role: self.actor.role.to_string(),
            action: self.action.as_str().to_string(),
            patient_id: self.patient_id,
            resource_type: self.resource.map(|(t, _)| t.to_string()),
            resource_id: self.resource.map(|(_, id)| id),
            clinic_id: self.clinic_id,
            client_ip: self.client_ip.map(|ip| ip.to_string()),
            request_id: self.request_id,
            outcome: self.outcome.as_str().to_string(),
            prev_hash: Hash([0; 32]),
            hash: Hash([0; 32]),
        }
    }
}

/// Now, truncated to microseconds so the hashed instant survives a round
/// trip through either database unchanged.
fn now_micros() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
}

/// A SHA-256 digest, hex on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Hash(pub [u8; 32]);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl Serialize for Hash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl Hash {
    /// From stored bytes (which must be 32 long).
    pub fn from_slice(b: &[u8]) -> Result<Self, AuditError> {
        <[u8; 32]>::try_from(b)
            .map(Hash)
            .map_err(|_| AuditError(format!("a stored hash is {} bytes, not 32", b.len())))
    }
}

/// A stored entry, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, gapless from 1.
    pub seq: i64,
    /// When (UTC).
    pub at: DateTime<Utc>,
    /// Who (absent for `anonymous` and `system`).
    pub actor_id: Option<Uuid>,
    /// `patient`, `doctor`, `clinic_admin`, `anonymous` or `system`.
    pub actor_role: String,
    /// What, e.g. `appointment.cancel`.
    pub action: String,
    /// Whose data.
    pub patient_id: Option<Uuid>,
    /// Which record's type, e.g. `appointment`.
    pub resource_type: Option<String>,
    /// Which record.
    pub resource_id: Option<Uuid>,
    /// The clinic the data belongs to.
    pub clinic_id: Option<Uuid>,
    /// The client's address.
    pub client_ip: Option<String>,
    /// The request id.
    pub request_id: Option<String>,
    /// `success` or `denied`.
    pub outcome: String,
    /// The previous entry's hash (hex).
    #[schema(value_type = String)]
    pub prev_hash: Hash,
    /// SHA-256 over this entry's fields and `prev_hash` (hex).
    #[schema(value_type = String)]
    pub hash: Hash,
}

/// Domain separation: a version tag, so a future encoding can never collide
/// with this one.
const HASH_DOMAIN: &[u8] = b"docspot-audit-v1\0";

impl AuditEntry {
    /// The canonical encoding hashed into `hash`: a version tag, then every
    /// field in a fixed order, each as a presence byte (0 absent, 1 present)
    /// followed by a big-endian u32 length and the bytes (UUIDs as their 16
    /// raw bytes, the time as i64 microseconds since the epoch, big-endian),
    /// then `prev_hash`. Lengths make the encoding unambiguous: no two
    /// different entries encode to the same bytes.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        fn field(out: &mut Vec<u8>, v: Option<&[u8]>) {
            match v {
                None => out.push(0),
                Some(b) => {
                    out.push(1);
                    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(HASH_DOMAIN);
        field(&mut out, Some(&self.seq.to_be_bytes()));
        field(&mut out, Some(&self.at.timestamp_micros().to_be_bytes()));
        field(&mut out, self.actor_id.as_ref().map(|u| &u.as_bytes()[..]));
        field(&mut out, Some(self.actor_role.as_bytes()));
        field(&mut out, Some(self.action.as_bytes()));
        field(
            &mut out,
            self.patient_id.as_ref().map(|u| &u.as_bytes()[..]),
        );
        field(&mut out, self.resource_type.as_deref().map(str::as_bytes));
        field(
            &mut out,
            self.resource_id.as_ref().map(|u| &u.as_bytes()[..]),
        );
        field(&mut out, self.clinic_id.as_ref().map(|u| &u.as_bytes()[..]));
        field(&mut out, self.client_ip.as_deref().map(str::as_bytes));
        field(&mut out, self.request_id.as_deref().map(str::as_bytes));
        field(&mut out, Some(self.outcome.as_bytes()));
        field(&mut out, Some(&self.prev_hash.0));
        out
    }

    /// SHA-256 of [`Self::canonical_bytes`].
    pub fn compute_hash(&self) -> [u8; 32] {
        Sha256::digest(self.canonical_bytes()).into()
    }

    /// Places an entry (its seq and hashes not set yet, e.g. an outbox
    /// row) in the chain after `prev_seq` / `prev_hash`.
    pub fn link(mut self, prev_seq: i64, prev_hash: [u8; 32]) -> AuditEntry {
        self.seq = prev_seq + 1;
        self.prev_hash = Hash(prev_hash);
        self.hash = Hash(self.compute_hash());
        self
    }
}

/// Why the audit log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("audit log: {0}")]
pub struct AuditError(pub String);

impl AuditError {
    pub(crate) fn from(e: impl fmt::Display) -> Self {
        AuditError(e.to_string())
    }
}

impl From<AuditError> for ApiError {
    fn from(e: AuditError) -> Self {
        // Fail closed: without its audit entry a read is not served, and a
        // change is not confirmed (see the module documentation).
        tracing::error!(error = %e, "audit log unavailable");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "audit_unavailable",
            "the audit log could not be written; try again",
        )
    }
}

/// The chain head: the last entry's seq and hash (0 and zeros when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Last seq.
    pub seq: i64,
    /// Last hash.
    pub hash: Hash,
}

/// Filters for [`AuditStore::query`] (already parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries of this clinic (a clinic admin's scope).
    pub clinic_id: Option<Uuid>,
    /// Only entries about this patient.
    pub patient_id: Option<Uuid>,
    /// Only entries by this user.
    pub actor_id: Option<Uuid>,
    /// Only this action.
    pub action: Option<Action>,
    /// At or after.
    pub from: Option<DateTime<Utc>>,
    /// Before.
    pub to: Option<DateTime<Utc>>,
    /// Only entries after this seq (the page cursor).
    pub after_seq: i64,
    /// At most this many.
    pub limit: usize,
}

/// Most outbox rows one drain moves: bounds the transaction.
pub const OUTBOX_BATCH: usize = 2048;

/// Where the chain lives: PostgreSQL or the embedded SQLite file.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends `batch` in one transaction, in order, after the current head,
    /// and returns the chained entries. Durable when it returns.
    async fn append(&self, batch: Vec<NewEntry>) -> Result<Vec<AuditEntry>, AuditError>;
    /// Moves up to [`OUTBOX_BATCH`] waiting outbox rows (the records of
    /// committed calendar changes) into the chain, oldest first, deleting
    /// them from the outbox in the same transaction; returns how many.
    /// Unless `durable`, the commit may return before it is flushed (a
    /// lost drain leaves the rows in the outbox, to be chained again).
    async fn drain_batch(&self, durable: bool) -> Result<usize, AuditError>;
    /// Chains everything waiting in the outbox, durably.
    async fn drain(&self) -> Result<usize, AuditError> {
        let mut moved = 0;
        loop {
            let n = self.drain_batch(true).await?;
            moved += n;
            if n < OUTBOX_BATCH {
                return Ok(moved);
            }
        }
    }
    /// Entries matching `filter`, by seq.
    async fn query(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>, AuditError>;
    /// Up to `limit` entries with seq > `after`, by seq (for [`verify`]).
    async fn scan(&self, after: i64, limit: usize) -> Result<Vec<AuditEntry>, AuditError>;
    /// The recorded head.
    async fn head(&self) -> Result<Head, AuditError>;
    /// Records in the outbox, not chained yet.
    async fn pending(&self) -> Result<i64, AuditError>;
}

/// Opens the audit store of the database the settings name. The schema must
/// exist (migrations run first: [`crate::startup::open_store`]).
pub fn open(backend: &Backend) -> Result<Arc<dyn AuditStore>, AuditError> {
    Ok(match backend {
        Backend::Postgres(url) => Arc::new(postgres::PgAudit::connect(url)?),
        Backend::Sqlite(path) => Arc::new(sqlite::SqliteAudit::open(path)?),
    })
}

// ---------------------------------------------------------------------------
// Verification.

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// Every entry links to the one before and hashes right; the head row
    /// matches the last entry.
    Ok {
        /// Entries checked.
        count: i64,
        /// The last entry's hash.
        head_hash: Hash,
    },
    /// The first place the chain does not hold.
    Broken {
        /// The seq where it breaks.
        seq: i64,
        /// Why.
        reason: String,
    },
}

/// Walks the whole chain in batches of `batch` entries, checking that seqs
/// run 1, 2, 3… without gaps, that each `prev_hash` is the previous entry's
/// hash, that each hash matches its entry, and that the head row names the
/// last entry (so entries cut off the end are caught too).
pub async fn verify(store: &dyn AuditStore, batch: usize) -> Result<Verdict, AuditError> {
    let batch = batch.max(1);
    let mut prev = Head {
        seq: 0,
        hash: Hash([0; 32]),
    };
    loop {
        let page = store.scan(prev.seq, batch).await?;
        let done = page.len() < batch;
        for e in page {
            if let Some(broken) = check_link(&prev, &e) {
                return Ok(broken);
            }
            prev = Head {
                seq: e.seq,
                hash: e.hash,
            };
        }
        if done {
            break;
        }
    }
    let head = store.head().await?;
    if head.seq != prev.seq {
        return Ok(Verdict::Broken {
            seq: prev.seq + 1,
            reason: format!(
                "the chain ends at seq {} but the head records seq {}: entries are missing at the end",
                prev.seq, head.seq
            ),
        });
    }
    if head.hash != prev.hash {
        return Ok(Verdict::Broken {
            seq: prev.seq,
            reason: "the last entry's hash differs from the one the head records".into(),
        });
    }
    Ok(Verdict::Ok {
        count: prev.seq,
        head_hash: prev.hash,
    })
}

/// Checks one entry against its predecessor (pure).
pub fn check_link(prev: &Head, e: &AuditEntry) -> Option<Verdict> {
    let expected = prev.seq + 1;
    if e.seq != expected {
        return Some(Verdict::Broken {
            seq: expected,
            reason: format!("entry {expected} is missing (the next entry is {})", e.seq),
        });
    }
    if e.prev_hash != prev.hash {
        return Some(Verdict::Broken {
            seq: e.seq,
            reason: "prev_hash does not match the previous entry's hash".into(),
        });
    }
    if e.compute_hash() != e.hash.0 {
        return Some(Verdict::Broken {
            seq: e.seq,
            reason: "hash does not match the entry's contents (the entry was altered)".into(),
        });
    }
    None
}

// ---------------------------------------------------------------------------
// The writer.

/// Most entries one audit transaction takes: bounds the transaction and
/// the wait of the entries at the end of a long queue.
const MAX_BATCH: usize = 512;
/// Entries waiting for the writer before `record` waits for room:
/// backpressure instead of unbounded memory when the database is slow.
const QUEUE: usize = 8192;
/// How long `record` waits for its acknowledgement before answering 503.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// The writer drains the outbox at least this often, also without nudges:
/// records committed by a node that stopped before chaining them, or by a
/// command-line tool, are picked up by whichever node runs.
pub const SWEEP: Duration = Duration::from_secs(1);
/// After a nudge the writer waits this long for more before draining, so a
/// rush of bookings is chained in a few transactions, not one each. Nobody
/// waits for this: the records are durable in the outbox already, and
/// queries flush first.
const NUDGE_DELAY: Duration = Duration::from_millis(20);

/// An entry for the writer (`None`: a flush) and whoever waits for its
/// commit.
struct Pending {
    entry: Option<NewEntry>,
    ack: oneshot::Sender<Result<i64, AuditError>>,
}

/// The handle handlers record through: sends entries to the process's one
/// writer task and waits for them to be committed. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    /// Wakes the writer to chain the outbox (after a calendar change).
    nudge: Arc<tokio::sync::Notify>,
    store: Arc<dyn AuditStore>,
    /// A doctor's clinic never changes: remembered so entries about
    /// appointments cost no extra query after the first.
    clinics: Arc<Mutex<HashMap<DoctorId, ClinicId>>>,
}

impl AuditLog {
    /// Starts the writer task (call inside the runtime).
    pub fn start(store: Arc<dyn AuditStore>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let nudge = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(run_writer(store.clone(), rx, nudge.clone()));
        AuditLog {
            tx,
            nudge,
            store,
            clinics: Arc::default(),
        }
    }

    /// The store behind the log (queries and verification).
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Appends `entry` and waits until it is committed; returns its seq.
    pub async fn append(&self, entry: NewEntry) -> Result<i64, AuditError> {
        self.submit(Some(entry)).await
    }

    /// Waits until every outbox record committed so far is in the chain,
    /// durably (before answering a query, so it shows every committed
    /// change).
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.submit(None).await.map(|_| ())
    }

    /// Tells the writer that outbox records are waiting; does not wait.
    pub fn nudge(&self) {
        self.nudge.notify_one();
    }

    async fn submit(&self, entry: Option<NewEntry>) -> Result<i64, AuditError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Pending { entry, ack })
            .await
            .map_err(|_| AuditError("the audit writer has stopped".into()))?;
        match tokio::time::timeout(ACK_TIMEOUT, done).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(AuditError("the audit writer dropped an entry".into())),
            Err(_) => Err(AuditError("timed out waiting for the audit commit".into())),
        }
    }

    /// The clinic of `doctor` (cached).
    async fn clinic_of(&self, state: &AppState, doctor: DoctorId) -> Option<ClinicId> {
        if let Some(c) = self
            .clinics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&doctor)
        {
            return Some(*c);
        }
        let clinic = state.store.doctor(doctor).await.ok().flatten()?.clinic_id;
        self.clinics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(doctor, clinic);
        Some(clinic)
    }
}

/// The writer: waits for an entry, a flush, a (delayed) nudge or the
/// sweep; drains a batch of the outbox; then appends every entry that is
/// queued (up to [`MAX_BATCH`]) in one transaction and acknowledges each.
///
/// Why one task: the chain is a sequence, so appends are serialized anyway
/// (across nodes by the head row lock); one writer per node turns a burst
/// into one transaction instead of a queue of lock waiters.
///
/// Draining comes first so records of changes committed earlier precede
/// later reads in the chain; it is its own transaction, so an outbox it
/// cannot drain (logged) never stops reads from being recorded. A flush is
/// answered only once the outbox is empty (as far as this node can see),
/// after a durable drain.
async fn run_writer(
    store: Arc<dyn AuditStore>,
    mut rx: mpsc::Receiver<Pending>,
    nudge: Arc<tokio::sync::Notify>,
) {
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When a nudged drain is due: nudges only schedule it, so entries that
    // arrive meanwhile are not held up.
    let mut drain_at: Option<tokio::time::Instant> = None;
    // Flushes waiting for the outbox to be empty.
    let mut flushes: Vec<oneshot::Sender<Result<i64, AuditError>>> = Vec::new();
    // More outbox rows are waiting than one drain takes: go on at once.
    let mut backlog = false;
    loop {
        let mut batch = Vec::new();
        if !backlog {
            let due = drain_at;
            tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => batch.push(p),
                    None => return,
                },
                () = nudge.notified(), if due.is_none() => {
                    drain_at = Some(tokio::time::Instant::now() + NUDGE_DELAY);
                    continue;
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {}
                _ = sweep.tick() => {}
            }
        }
        drain_at = None;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut entries = Vec::with_capacity(batch.len());
        let mut acks = Vec::with_capacity(batch.len());
        for p in batch {
            match p.entry {
                Some(e) => {
                    entries.push(e);
                    acks.push(p.ack);
                }
                None => flushes.push(p.ack),
            }
        }

        match store.drain_batch(!flushes.is_empty()).await {
            Ok(moved) => {
                backlog = moved >= OUTBOX_BATCH;
                if !backlog {
                    for f in flushes.drain(..) {
                        let _ = f.send(Ok(0));
                    }
                }
            }
            Err(e) => {
                backlog = false;
                tracing::error!(error = %e, "audit outbox drain failed");
                for f in flushes.drain(..) {
                    let _ = f.send(Err(AuditError(e.0.clone())));
                }
            }
        }

        if entries.is_empty() {
            continue;
        }
        match store.append(entries).await {
            Ok(chained) => {
                for (ack, e) in acks.into_iter().zip(chained) {
                    let _ = ack.send(Ok(e.seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = acks.len(), "audit append failed");
                for ack in acks {
                    let _ = ack.send(Err(AuditError(e.0.clone())));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The request-side helper.

/// Handler argument that records audit entries for the request: carries the
/// log, the client's address and the request id, so a handler adds one line
/// per recorded action.
#[derive(Clone)]
pub struct Audit {
    log: AuditLog,
    client_ip: Option<IpAddr>,
    request_id: Option<String>,
}

impl FromRequest for Audit {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let log = req
            .app_data::<web::Data<AuditLog>>()
            .map(|d| d.get_ref().clone());
        // The client address as the rate limiter resolves it: the peer, or
        // behind a trusted proxy (`rate_limit.trusted_proxies`) the
        // right-most untrusted X-Forwarded-For entry. Never the header alone:
        // that is whatever the client says.
        let client_ip = match req.app_data::<web::Data<RateLimits>>() {
            Some(limits) => limits.request_ip(req),
            None => req.peer_addr().map(|a| a.ip()),
        };
        let request_id = req
            .extensions()
            .get::<tracing_actix_web::RequestId>()
            .map(|r| r.to_string());
        Box::pin(async move {
            let log = log.ok_or_else(|| AuditError("no audit log configured".into()))?;
            Ok(Audit {
                log,
                client_ip,
                request_id,
            })
        })
    }
}

impl Audit {
    /// The store behind the log (for queries).
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        self.log.store()
    }

    /// A new entry for this request.
    pub fn entry(&self, actor: Actor, action: Action) -> NewEntry {
        NewEntry {
            client_ip: self.client_ip,
            request_id: self.request_id.clone(),
            ..NewEntry::new(actor, action)
        }
    }

    /// The audit record of a calendar change `user` asks for: handed to
    /// the calendar actor, which commits it with the change (see the module
    /// documentation). Call [`Self::committed`] once the change is done.
    pub fn note(&self, user: &AuthUser, action: Action) -> AuditNote {
        AuditNote {
            at: now_micros(),
            action: action.as_str(),
            actor_id: Some(user.id),
            actor_role: user.role.as_str(),
            client_ip: self.client_ip,
            request_id: self.request_id.clone(),
            clinic_id: None,
        }
    }

    /// A change carrying a [`Self::note`] committed: the writer chains its
    /// record soon. Does not wait (the record is durable already).
    pub fn committed(&self) {
        self.log.nudge();
    }

    /// Waits until every committed change's record is in the chain.
    pub async fn flush(&self) -> Result<(), ApiError> {
        self.log.flush().await?;
        Ok(())
    }

    /// Records `entry` and waits for its commit.
    pub async fn record(&self, entry: NewEntry) -> Result<(), ApiError> {
        self.log.append(entry).await?;
        Ok(())
    }

    /// Records `action` by `user` on one appointment (patient, clinic and
    /// the appointment id filled in).
    pub async fn appointment(
        &self,
        state: &AppState,
        user: &AuthUser,
        action: Action,
        a: &Appointment,
    ) -> Result<(), ApiError> {
        self.appointment_outcome(state, user, action, a, Outcome::Success)
            .await
    }

    /// Like [`Self::appointment`], with the outcome (e.g. a refused
    /// attempt on someone else's appointment).
    pub async fn appointment_outcome(
        &self,
        state: &AppState,
        user: &AuthUser,
        action: Action,
        a: &Appointment,
        outcome: Outcome,
    ) -> Result<(), ApiError> {
        let clinic = self.log.clinic_of(state, a.doctor_id).await;
        self.record(NewEntry {
            patient_id: Some(a.patient_id.0),
            resource: Some(("appointment", a.id.0)),
            clinic_id: clinic.map(|c| c.0),
            outcome,
            ..self.entry(Actor::user(user), action)
        })
        .await
    }

    /// Records `action` by `user` on a doctor's calendar (a list or day
    /// view that shows the patients booked with `doctor`).
    pub async fn calendar(
        &self,
        user: &AuthUser,
        action: Action,
        doctor: DoctorId,
        clinic: ClinicId,
    ) -> Result<(), ApiError> {
        self.record(NewEntry {
            resource: Some(("doctor", doctor.0)),
            clinic_id: Some(clinic.0),
            ..self.entry(Actor::user(user), action)
        })
        .await
    }

    /// Like [`Self::calendar`], looking the doctor's clinic up.
    pub async fn doctor(
        &self,
        state: &AppState,
        user: &AuthUser,
        action: Action,
        doctor: DoctorId,
    ) -> Result<(), ApiError> {
        let clinic = self.log.clinic_of(state, doctor).await;
        self.record(NewEntry {
            resource: Some(("doctor", doctor.0)),
            clinic_id: clinic.map(|c| c.0),
            ..self.entry(Actor::user(user), action)
        })
        .await
    }

    /// Records `action` by `user` on their own data, done.
    pub async fn by_self(&self, user: &AuthUser, action: Action) -> Result<(), ApiError> {
        self.own(Actor::user(user), action, user.id, Outcome::Success)
            .await
    }

    /// Records `action` by a patient on their own data.
    pub async fn own(
        &self,
        actor: Actor,
        action: Action,
        patient: UserId,
        outcome: Outcome,
    ) -> Result<(), ApiError> {
        self.record(NewEntry {
            patient_id: Some(patient.0),
            resource: Some(("user", patient.0)),
            outcome,
            ..self.entry(actor, action)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> NewEntry {
        NewEntry {
            at: DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap(),
            actor: Actor {
                id: Some(Uuid::from_u128(1)),
                role: "patient",
            },
            action: Action::AppointmentCancel,
            patient_id: Some(Uuid::from_u128(1)),
            resource: Some(("appointment", Uuid::from_u128(2))),
            clinic_id: Some(Uuid::from_u128(3)),
            client_ip: Some("192.0.2.7".parse().unwrap()),
            request_id: Some("req-1".into()),
            outcome: Outcome::Success,
        }
    }

    #[test]
    fn the_hash_is_sha256_of_the_canonical_encoding_and_pinned() {
        let e = sample().chain(0, [0; 32]);
        assert_eq!(e.seq, 1);
        assert_eq!(e.hash.0, e.compute_hash());
        let direct: [u8; 32] = Sha256::digest(e.canonical_bytes()).into();
        assert_eq!(e.hash.0, direct);
        // Pinned: the encoding is a storage format; changing it would make
        // every existing chain fail verification. The value was computed
        // independently (Python hashlib) from the encoding as documented on
        // `canonical_bytes`.
        assert_eq!(
            e.hash.to_string(),
            "2e84347367add7f7aca5beaf640386f100dd777b8766371a4a7bf2e58da2f93d"
        );
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = sample().chain(6, [9; 32]);
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.seq += 1;
        variants.push(v);
        let mut v = base.clone();
        v.at += chrono::Duration::microseconds(1);
        variants.push(v);
        let mut v = base.clone();
        v.actor_id = None;
        variants.push(v);
        let mut v = base.clone();
        v.actor_role = "doctor".into();
        variants.push(v);
        let mut v = base.clone();
        v.action = "appointment.read".into();
        variants.push(v);
        let mut v = base.clone();
        v.patient_id = Some(Uuid::from_u128(9));
        variants.push(v);
        let mut v = base.clone();
        v.resource_type = Some("user".into());
        variants.push(v);
        let mut v = base.clone();
        v.resource_id = None;
        variants.push(v);
        let mut v = base.clone();
        v.clinic_id = None;
        variants.push(v);
        let mut v = base.clone();
        v.client_ip = Some("192.0.2.8".into());
        variants.push(v);
        let mut v = base.clone();
        v.request_id = None;
        variants.push(v);
        let mut v = base.clone();
        v.outcome = "denied".into();
        variants.push(v);
        let mut v = base.clone();
        v.prev_hash = Hash([8; 32]);
        variants.push(v);
        for v in variants {
            assert_ne!(v.compute_hash(), base.hash.0, "{v:?}");
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // Moving bytes between adjacent text fields must change the encoding.
        let mut a = sample().chain(0, [0; 32]);
        let mut b = a.clone();
        a.client_ip = Some("1.2.3.4".into());
        a.request_id = Some("5".into());
        b.client_ip = Some("1.2.3.".into());
        b.request_id = Some("45".into());
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
        // Absent differs from empty.
        let mut c = a.clone();
        c.request_id = Some(String::new());
        a.request_id = None;
        assert_ne!(a.canonical_bytes(), c.canonical_bytes());
    }

    #[test]
    fn links_are_checked() {
        let first = sample().chain(0, [0; 32]);
        let second = sample().chain(first.seq, first.hash.0);
        let genesis = Head {
            seq: 0,
            hash: Hash([0; 32]),
        };
        let after_first = Head {
            seq: 1,
            hash: first.hash,
        };
        assert_eq!(check_link(&genesis, &first), None);
        assert_eq!(check_link(&after_first, &second), None);
        // A gap.
        assert!(matches!(
            check_link(&genesis, &second),
            Some(Verdict::Broken { seq: 1, .. })
        ));
        // Altered contents.
        let mut altered = second.clone();
        altered.outcome = "denied".into();
        assert!(matches!(
            check_link(&after_first, &altered),
            Some(Verdict::Broken { seq: 2, ref reason }) if reason.contains("altered")
        ));
        // Re-hashed after altering: the link to the previous entry still holds,
        // but a forged predecessor does not.
        let forged_first = NewEntry {
            outcome: Outcome::Denied,
            ..sample()
        }
        .chain(0, [0; 32]);
        let forged_head = Head {
            seq: 1,
            hash: forged_first.hash,
        };
        assert!(matches!(
            check_link(&forged_head, &second),
            Some(Verdict::Broken { seq: 2, ref reason }) if reason.contains("prev_hash")
        ));
    }

    #[test]
    fn actions_round_trip_through_their_names() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(a));
        }
        assert!("appointment.delete".parse::<Action>().is_err());
    }
}
