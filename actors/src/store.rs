//! What a calendar actor needs from storage, as a trait.
//!
//! The server implements it for PostgreSQL (and later an embedded store); the
//! actors never see SQL. Writes come in batches so one transaction can commit
//! many claims ("group commit"); each operation has its own outcome so one
//! lost race does not fail its neighbours.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::{
    Appointment, AppointmentId, AppointmentStatus, ClinicId, DoctorId, DoctorSchedule, TimeRange,
    UserId,
};

/// The storage backend failed as a whole (connection lost, disk full, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("storage unavailable: {0}")]
pub struct StoreError(pub String);

/// One write in a batch.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Insert a new `held` or `booked` appointment. Expired holds that still
    /// occupy the range (left by a crashed node) are cancelled first.
    Insert {
        /// The appointment, fully formed by the calendar.
        appointment: Appointment,
        /// Who asked.
        by: UserId,
        /// For a hold: refuse it ([`OpError::TooManyHolds`]) if the patient
        /// would then hold more than this many live (unexpired) holds. The
        /// store counts in the write's transaction, so the cap holds across
        /// nodes, not only on the node that took the request.
        max_live_holds: Option<u32>,
    },
    /// Move an active appointment to a new time, atomically: if the new time
    /// is taken, nothing changes.
    Reschedule {
        /// Which appointment.
        id: AppointmentId,
        /// The new visit time.
        time: TimeRange,
        /// The new busy block.
        block: TimeRange,
        /// Who asked.
        by: UserId,
        /// Refuse if the *current* start is not after this instant
        /// (the patient cancellation cut-off).
        starts_after: Option<DateTime<Utc>>,
    },
    /// Change status (confirm a hold, cancel, mark completed or no-show).
    SetStatus {
        /// Which appointment.
        id: AppointmentId,
        /// Allowed current statuses.
        from: Vec<AppointmentStatus>,
        /// New status.
        to: AppointmentStatus,
        /// Who asked (`None` for the system, e.g. hold expiry).
        by: Option<UserId>,
        /// Why, as a fixed code (`hold_expired`, `hold_released`, …): kept
        /// in plaintext with the appointment and its history. Never free
        /// text: that goes in `sealed_reason`.
        reason: Option<String>,
        /// The canceller's own words, sealed by the store
        /// (`PrivacyStore::seal_cancel_reason` in the server) and stored
        /// encrypted with the appointment's details, in this write's
        /// transaction and only if it applies.
        sealed_reason: Option<Vec<u8>>,
        /// Refuse if the current start is not after this instant.
        starts_after: Option<DateTime<Utc>>,
        /// For confirming a hold: refuse if the hold lapsed before this.
        hold_valid_at: Option<DateTime<Utc>>,
    },
}

/// Who asked for a write, and from where: the audit record of the change.
///
/// The store writes it in the same transaction as the write it belongs to
/// (an outbox the server's audit log chains afterwards), and only if that
/// write applied. So a committed change always has its audit record, and
/// the caller does not wait for a second, separate audit commit. The
/// record names the appointment (and through it the patient) itself; the
/// calendar fills in the clinic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditNote {
    /// When it was asked for (UTC, microsecond precision).
    pub at: DateTime<Utc>,
    /// The stored action name, e.g. `appointment.create`.
    pub action: &'static str,
    /// Who asked (absent for the system).
    pub actor_id: Option<UserId>,
    /// As what: `patient`, `doctor`, `clinic_admin` or `system`.
    pub actor_role: &'static str,
    /// The client's address.
    pub client_ip: Option<std::net::IpAddr>,
    /// The request id.
    pub request_id: Option<String>,
    /// The doctor's clinic (the calendar sets it).
    pub clinic_id: Option<ClinicId>,
}

/// One write of a batch with its audit record, if the change is audited.
#[derive(Debug, Clone)]
pub struct Write {
    /// The change.
    pub op: WriteOp,
    /// Its audit record, written with it when it applies.
    pub audit: Option<AuditNote>,
}

impl From<WriteOp> for Write {
    /// A write without an audit record (system changes, tests).
    fn from(op: WriteOp) -> Self {
        Write { op, audit: None }
    }
}

/// Why a single write in a batch did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The exclusion constraint fired: another active appointment overlaps.
    #[error("slot taken")]
    SlotTaken,
    /// The patient already used this idempotency key; here is what it made.
    #[error("idempotency key already used")]
    Duplicate(Box<Appointment>),
    /// No such appointment.
    #[error("appointment not found")]
    NotFound,
    /// The appointment is not in a status that allows this change.
    #[error("appointment is {0}")]
    InvalidTransition(AppointmentStatus),
    /// Too close to the start for this change.
    #[error("cut-off passed")]
    CutoffPassed,
    /// The hold lapsed before it was confirmed.
    #[error("hold expired")]
    HoldExpired,
    /// The patient already holds `max_live_holds` live holds.
    #[error("too many holds (at most {0})")]
    TooManyHolds(u32),
    /// Anything else the store refused.
    #[error("{0}")]
    Other(String),
}

/// Storage as seen by a doctor's calendar.
#[async_trait]
pub trait CalendarStore: Send + Sync + 'static {
    /// The doctor's rules, exceptions, visit types and clinic settings;
    /// `None` if there is no such (active) doctor.
    async fn load_schedule(&self, doctor: DoctorId) -> Result<Option<DoctorSchedule>, StoreError>;

    /// Active (held or booked) appointments of the doctor ending after `since`.
    async fn load_active(
        &self,
        doctor: DoctorId,
        since: DateTime<Utc>,
    ) -> Result<Vec<Appointment>, StoreError>;

    /// Applies `writes` in one transaction, each with its audit record if
    /// it applied. The outer error means nothing was written; otherwise
    /// there is one outcome per write, in the order of `writes`. The store
    /// may apply them in another order (PostgreSQL inserts a batch's new
    /// appointments together): the writes of one batch concern different
    /// appointments and do not overlap, since a calendar sends one write per
    /// appointment at a time and checks overlaps before it sends.
    async fn commit_batch(
        &self,
        doctor: DoctorId,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<Appointment, OpError>>, StoreError>;
}
