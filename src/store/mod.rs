//! Storage behind one trait, used by the HTTP handlers (directly for reads and
//! catalogue changes) and by the calendar actors (through
//! [`docspot_actors::store::CalendarStore`], for every appointment write).
//!
//! [`postgres::PgStore`] is the PostgreSQL implementation;
//! [`sqlite::SqliteStore`] is an embedded SQLite one (a single file, no
//! server) with the same behaviour.

pub mod postgres;
pub mod privacy;
pub mod sqlite;

pub use privacy::{
    AppointmentDetails, DetailsChange, ERASED_PASSWORD_HASH, EncryptedTable, Erasure,
    PatientProfile, PrivacyStore, RotateBatch,
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use docspot_actors::{
    domain::{
        Appointment, AppointmentId, AppointmentStatus, ClinicId, DoctorId, ExceptionKind,
        TimeRange, UserId, VisitTypeId,
    },
    store::{CalendarStore, StoreError},
};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{Email, Role};

/// Why a catalogue or account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A unique value is taken (e.g. an e-mail address).
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// A referenced row does not exist.
    #[error("{0} does not exist")]
    Missing(&'static str),
    /// The store failed.
    #[error(transparent)]
    Unavailable(#[from] StoreError),
}

/// A user account, with its password hash.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// Identity.
    pub id: UserId,
    /// Login e-mail (lower-cased).
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// For doctors: which doctor.
    pub doctor_id: Option<DoctorId>,
    /// For clinic admins: which clinic (`None`: every clinic).
    pub clinic_id: Option<ClinicId>,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A new user account.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login e-mail.
    pub email: Email,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// For doctors.
    pub doctor_id: Option<DoctorId>,
    /// For clinic admins.
    pub clinic_id: Option<ClinicId>,
    /// argon2id PHC string.
    pub password_hash: String,
}

/// A clinic.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Clinic {
    /// Identity.
    #[schema(value_type = String, format = Uuid)]
    pub id: ClinicId,
    /// Name.
    pub name: String,
    /// Postal address.
    pub address: String,
    /// Latitude (WGS 84).
    pub latitude: Option<f64>,
    /// Longitude (WGS 84).
    pub longitude: Option<f64>,
    /// IANA time zone.
    pub time_zone: String,
    /// Patients may not cancel later than this many minutes before the start.
    pub cancellation_cutoff_minutes: i32,
    /// How many days ahead patients may book.
    pub booking_horizon_days: i32,
}

/// A doctor as listed publicly.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Doctor {
    /// Identity.
    #[schema(value_type = String, format = Uuid)]
    pub id: DoctorId,
    /// Name.
    pub name: String,
    /// Specialties ("cardiology").
    pub specialties: Vec<String>,
    /// Languages spoken (BCP 47 tags).
    pub languages: Vec<String>,
    /// Clinic.
    #[schema(value_type = String, format = Uuid)]
    pub clinic_id: ClinicId,
    /// The clinic's IANA time zone (slots are laid out in it).
    pub time_zone: String,
    /// Whether the doctor takes bookings.
    pub active: bool,
}

/// Fields of a new or changed doctor.
#[derive(Debug, Clone)]
pub struct DoctorFields {
    /// Name.
    pub name: String,
    /// Specialties.
    pub specialties: Vec<String>,
    /// Languages.
    pub languages: Vec<String>,
    /// Takes bookings.
    pub active: bool,
}

/// Fields of a new or changed clinic.
#[derive(Debug, Clone)]
pub struct ClinicFields {
    /// Name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Latitude.
    pub latitude: Option<f64>,
    /// Longitude.
    pub longitude: Option<f64>,
    /// IANA zone (already validated).
    pub time_zone: String,
    /// Cut-off in minutes.
    pub cancellation_cutoff_minutes: i32,
    /// Horizon in days.
    pub booking_horizon_days: i32,
}

/// A visit type row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VisitTypeRecord {
    /// Identity.
    #[schema(value_type = String, format = Uuid)]
    pub id: VisitTypeId,
    /// Doctor.
    #[schema(value_type = String, format = Uuid)]
    pub doctor_id: DoctorId,
    /// Name.
    pub name: String,
    /// Visit length.
    pub duration_minutes: i32,
    /// Buffer before.
    pub buffer_before_minutes: i32,
    /// Buffer after.
    pub buffer_after_minutes: i32,
    /// Fee in minor units.
    pub fee_cents: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Used when a request names no visit type.
    pub is_default: bool,
}

impl From<VisitTypeRecord> for docspot_actors::domain::VisitType {
    /// The scheduling view of a stored visit type.
    fn from(v: VisitTypeRecord) -> Self {
        docspot_actors::domain::VisitType {
            id: v.id,
            name: v.name,
            duration_minutes: v.duration_minutes,
            buffer_before_minutes: v.buffer_before_minutes,
            buffer_after_minutes: v.buffer_after_minutes,
            fee_cents: v.fee_cents,
            currency: v.currency,
            is_default: v.is_default,
        }
    }
}

/// A weekly availability rule row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleRecord {
    /// Identity.
    pub id: Uuid,
    /// ISO weekday, 1 = Monday.
    pub weekday: i16,
    /// Local start ("09:00:00").
    #[schema(value_type = String)]
    pub start_time: NaiveTime,
    /// Local end; at or before start means the next day.
    #[schema(value_type = String)]
    pub end_time: NaiveTime,
    /// First date the rule applies.
    #[schema(value_type = Option<String>, format = Date)]
    pub valid_from: Option<NaiveDate>,
    /// Last date the rule applies.
    #[schema(value_type = Option<String>, format = Date)]
    pub valid_until: Option<NaiveDate>,
}

/// An availability exception row.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExceptionRecord {
    /// Identity.
    pub id: Uuid,
    /// `time_off` or `extra_hours`.
    #[schema(value_type = String)]
    pub kind: ExceptionKind,
    /// Start (UTC).
    pub start: DateTime<Utc>,
    /// End (UTC).
    pub end: DateTime<Utc>,
    /// Why.
    pub reason: String,
}

/// One entry of an appointment's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who (absent for the system, e.g. hold expiry).
    #[schema(value_type = Option<String>, format = Uuid)]
    pub by: Option<UserId>,
    /// What happened (`create`, `confirm`, `reschedule`, `cancel`, `expire`, …).
    pub action: String,
    /// Status before.
    #[schema(value_type = Option<String>)]
    pub from_status: Option<AppointmentStatus>,
    /// Status after.
    #[schema(value_type = String)]
    pub to_status: AppointmentStatus,
    /// Start before.
    pub from_start: Option<DateTime<Utc>>,
    /// Start after.
    pub to_start: DateTime<Utc>,
    /// Free text (cancellation reason).
    pub note: String,
}

/// One provider alert: something a doctor should be told about, written in
/// the same transaction as the appointment change it reports (a
/// transactional outbox). Alerts are append-only.
///
/// Exactly these changes create one:
/// - `booked`: a new appointment inserted as `booked` (not a hold);
/// - `hold_confirmed`: a hold confirmed (`held` → `booked`);
/// - `cancelled`: a `booked` appointment cancelled (not a released or
///   expired hold);
/// - `rescheduled`: a `booked` appointment moved (`previous_start` set).
///
/// Imported history creates none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ProviderAlert {
    /// Position in the outbox: strictly increasing and never reused, but not
    /// gap-free. A doctor's alerts are committed in id order, so paging with
    /// "after the last id seen" misses none.
    pub id: i64,
    /// Whose calendar changed.
    #[schema(value_type = String, format = Uuid)]
    pub doctor_id: DoctorId,
    /// Which appointment.
    #[schema(value_type = String, format = Uuid)]
    pub appointment_id: AppointmentId,
    /// The appointment's patient.
    #[schema(value_type = String, format = Uuid)]
    pub patient_id: UserId,
    /// `booked`, `hold_confirmed`, `cancelled` or `rescheduled`.
    pub kind: String,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// Start of the visit after the change.
    pub start: DateTime<Utc>,
    /// End of the visit after the change.
    pub end: DateTime<Utc>,
    /// For `rescheduled`: the start before the move.
    pub previous_start: Option<DateTime<Utc>>,
    /// The appointment's status after the change.
    #[schema(value_type = String)]
    pub status: AppointmentStatus,
}

/// What the suggestions endpoint showed a patient.
#[derive(Debug, Clone)]
pub struct SuggestionLog {
    /// To whom.
    pub patient: UserId,
    /// For which doctor.
    pub doctor: DoctorId,
    /// When.
    pub shown_at: DateTime<Utc>,
    /// The slot starts shown.
    pub starts: Vec<DateTime<Utc>>,
}

/// A past visit with the alternatives that were offered when it was booked.
#[derive(Debug, Clone)]
pub struct PastVisit {
    /// The visit.
    pub appointment: Appointment,
    /// Slot starts the patient was shown before booking it.
    pub offered: Vec<DateTime<Utc>>,
}

/// Outcome of presenting a refresh token.
#[derive(Debug, Clone)]
pub enum RefreshOutcome {
    /// Valid: it is now used up; issue a new one in `family`.
    Rotated {
        /// Whose.
        user: UserRecord,
        /// Rotation family.
        family: Uuid,
    },
    /// Unknown, expired or revoked.
    Invalid,
    /// Already used: a replay. The whole family has been revoked.
    Reused,
}

/// Everything DocSpot stores.
#[async_trait]
pub trait Store: CalendarStore + PrivacyStore {
    /// Whether the store answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates a user.
    async fn create_user(&self, user: NewUser) -> Result<UserRecord, DbError>;
    /// Looks a user up by (lower-cased) e-mail.
    async fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>, StoreError>;
    /// Looks a user up by id.
    async fn user(&self, id: UserId) -> Result<Option<UserRecord>, StoreError>;

    /// Stores a refresh token digest.
    async fn insert_refresh_token(
        &self,
        user: UserId,
        digest: &[u8],
        family: Uuid,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Uses a refresh token: rotates (storing `next` in the same family, in
    /// the same transaction, so a replay that revokes the family cannot miss
    /// it), refuses, or detects reuse.
    async fn use_refresh_token(
        &self,
        digest: &[u8],
        next: &[u8],
        next_expires: DateTime<Utc>,
    ) -> Result<RefreshOutcome, StoreError>;
    /// Logout: revokes the whole family (the login session) of the refresh
    /// token with this digest. Whether a live family was found.
    async fn revoke_refresh_family(&self, digest: &[u8]) -> Result<bool, StoreError>;

    /// Creates a clinic.
    async fn create_clinic(&self, fields: ClinicFields) -> Result<Clinic, DbError>;
    /// Changes a clinic.
    async fn update_clinic(&self, id: ClinicId, fields: ClinicFields) -> Result<Clinic, DbError>;
    /// One clinic.
    async fn clinic(&self, id: ClinicId) -> Result<Option<Clinic>, StoreError>;
    /// All clinics.
    async fn clinics(&self) -> Result<Vec<Clinic>, StoreError>;

    /// Creates a doctor in a clinic.
    async fn create_doctor(
        &self,
        clinic: ClinicId,
        fields: DoctorFields,
    ) -> Result<Doctor, DbError>;
    /// Changes a doctor.
    async fn update_doctor(&self, id: DoctorId, fields: DoctorFields) -> Result<Doctor, DbError>;
    /// One doctor.
    async fn doctor(&self, id: DoctorId) -> Result<Option<Doctor>, StoreError>;
    /// Active doctors, optionally of one clinic and/or with one specialty.
    async fn doctors(
        &self,
        clinic: Option<ClinicId>,
        specialty: Option<&str>,
    ) -> Result<Vec<Doctor>, StoreError>;

    /// Adds a visit type (a default one replaces the previous default).
    async fn create_visit_type(
        &self,
        doctor: DoctorId,
        v: VisitTypeRecord,
    ) -> Result<VisitTypeRecord, DbError>;
    /// The doctor's visit types.
    async fn visit_types(&self, doctor: DoctorId) -> Result<Vec<VisitTypeRecord>, StoreError>;

    /// Adds a weekly rule.
    async fn create_rule(&self, doctor: DoctorId, r: RuleRecord) -> Result<RuleRecord, DbError>;
    /// The doctor's weekly rules.
    async fn rules(&self, doctor: DoctorId) -> Result<Vec<RuleRecord>, StoreError>;
    /// Removes a rule; `false` if there was none.
    async fn delete_rule(&self, doctor: DoctorId, id: Uuid) -> Result<bool, StoreError>;

    /// Adds an exception.
    async fn create_exception(
        &self,
        doctor: DoctorId,
        e: ExceptionRecord,
    ) -> Result<ExceptionRecord, DbError>;
    /// The doctor's exceptions ending after `since`.
    async fn exceptions(
        &self,
        doctor: DoctorId,
        since: DateTime<Utc>,
    ) -> Result<Vec<ExceptionRecord>, StoreError>;
    /// Removes an exception; `false` if there was none.
    async fn delete_exception(&self, doctor: DoctorId, id: Uuid) -> Result<bool, StoreError>;

    /// One appointment.
    async fn appointment(&self, id: AppointmentId) -> Result<Option<Appointment>, StoreError>;
    /// The appointment a patient made with an idempotency key.
    async fn appointment_by_key(
        &self,
        patient: UserId,
        key: &str,
    ) -> Result<Option<Appointment>, StoreError>;
    /// A patient's appointments, newest first.
    async fn patient_appointments(&self, patient: UserId) -> Result<Vec<Appointment>, StoreError>;
    /// A doctor's appointments overlapping `range`, by start.
    async fn doctor_appointments(
        &self,
        doctor: DoctorId,
        range: TimeRange,
    ) -> Result<Vec<Appointment>, StoreError>;
    /// An appointment's history, oldest first.
    async fn history(&self, id: AppointmentId) -> Result<Vec<HistoryEntry>, StoreError>;

    /// The latest `limit` past visits with a known outcome (`completed` or
    /// `no_show`), for training suggestions, each with the slots the
    /// suggestions endpoint showed that patient for that doctor in the hour
    /// before booking (empty when none were shown).
    async fn past_outcomes(&self, limit: i64) -> Result<Vec<PastVisit>, StoreError>;

    /// Records the slots the suggestions endpoint showed a patient.
    async fn log_suggestions(
        &self,
        patient: UserId,
        doctor: DoctorId,
        starts: &[DateTime<Utc>],
    ) -> Result<(), StoreError>;

    /// Bulk-loads suggestion logs (patient, doctor, shown at, slots shown),
    /// e.g. the offered alternatives of imported history.
    async fn import_suggestion_logs(&self, logs: &[SuggestionLog]) -> Result<u64, StoreError>;

    /// Bulk-loads past (inactive) appointments, e.g. imported history.
    async fn import_past_appointments(&self, list: &[Appointment]) -> Result<u64, StoreError>;

    /// Cancels every lapsed hold (a crashed node's leftovers).
    async fn sweep_expired_holds(&self) -> Result<u64, StoreError>;

    /// The doctor's provider alerts with an id greater than `after_id`
    /// (0 for all), oldest first, at most `limit` of them (none if `limit`
    /// is not positive). A doctor reconnecting passes the last id they saw.
    /// The doctor's latest `limit` alerts, oldest first.
    async fn latest_provider_alerts(
        &self,
        doctor: DoctorId,
        limit: i64,
    ) -> Result<Vec<ProviderAlert>, StoreError>;

    async fn provider_alerts_after(
        &self,
        doctor: DoctorId,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<ProviderAlert>, StoreError>;

    /// Every alert about one of the doctor's appointments, oldest first: its
    /// history of changes (the outbox is append-only), which the `.ics`
    /// export turns into `SEQUENCE` and `LAST-MODIFIED`.
    async fn appointment_alerts(
        &self,
        doctor: DoctorId,
        appointment: AppointmentId,
    ) -> Result<Vec<ProviderAlert>, StoreError>;
}
