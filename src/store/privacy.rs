//! Storage of the encrypted patient data that lives outside the booking
//! path (profile, appointment details), key rotation batches and erasure.
//!
//! Both backends implement [`PrivacyStore`]; they encrypt on write and
//! decrypt on read with the [`FieldCipher`] they were opened with, so
//! everything above the store sees plaintext domain types.

use async_trait::async_trait;
use chrono::NaiveDate;
use docspot_actors::{
    domain::{AppointmentId, UserId},
    store::StoreError,
};
use serde::Serialize;
use uuid::Uuid;

use super::SuggestionLog;
use crate::crypto::{CryptoError, FieldAad, FieldCipher};

/// Associated-data names of the encrypted columns (`table.column`).
pub mod columns {
    /// `users.email_enc`.
    pub const USER_EMAIL: &str = "users.email";
    /// `users.name_enc`.
    pub const USER_NAME: &str = "users.name";
    /// `patient_profiles.phone_enc`.
    pub const PHONE: &str = "patient_profiles.phone";
    /// `patient_profiles.date_of_birth_enc`.
    pub const DATE_OF_BIRTH: &str = "patient_profiles.date_of_birth";
    /// `appointment_details.reason_enc`.
    pub const REASON: &str = "appointment_details.reason";
    /// `appointment_details.notes_enc`.
    pub const NOTES: &str = "appointment_details.notes";
    /// `appointment_details.cancel_reason_enc`.
    pub const CANCEL_REASON: &str = "appointment_details.cancel_reason";
}

/// The fixed cancellation codes the system writes to
/// `appointments.cancel_reason` and the history (plaintext, not patient
/// data); any other text there predates V7 and is sealed at start-up.
pub const CANCEL_CODES: [&str; 3] = ["hold_expired", "hold_released", "patient data erased"];

/// The password hash an erasure leaves (the stores' erase SQL writes this
/// literal): no PHC parser accepts it, so no password verifies, and it marks
/// the account as erased.
pub const ERASED_PASSWORD_HASH: &str = "!erased";

/// What an erased account shows as its name.
pub const ERASED_NAME: &str = "erased patient";

/// A patient's profile (plaintext; stored encrypted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PatientProfile {
    /// Phone number.
    pub phone: Option<String>,
    /// Date of birth.
    #[schema(value_type = Option<String>, format = Date)]
    pub date_of_birth: Option<NaiveDate>,
}

/// The reason for a visit, the doctor's notes and the reason given for a
/// cancellation (plaintext; stored encrypted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppointmentDetails {
    /// Why the patient comes (written by the patient).
    pub reason: Option<String>,
    /// The doctor's notes (written by the doctor or a clinic admin).
    pub notes: Option<String>,
    /// Why the appointment was cancelled, as the canceller wrote it (set by
    /// the cancellation itself, not by `PUT .../details`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
}

/// A change of appointment details: `None` leaves a field as it is, an
/// empty string clears it.
#[derive(Debug, Clone, Default)]
pub struct DetailsChange {
    /// New reason.
    pub reason: Option<String>,
    /// New notes.
    pub notes: Option<String>,
}

/// A table with encrypted columns, for key rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EncryptedTable {
    /// `users`: e-mail and name.
    Users,
    /// `patient_profiles`: phone and date of birth.
    PatientProfiles,
    /// `appointment_details`: reason, notes and cancellation reason.
    AppointmentDetails,
}

impl EncryptedTable {
    /// Every table with encrypted columns.
    pub const ALL: [EncryptedTable; 3] = [
        EncryptedTable::Users,
        EncryptedTable::PatientProfiles,
        EncryptedTable::AppointmentDetails,
    ];

    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            EncryptedTable::Users => "users",
            EncryptedTable::PatientProfiles => "patient_profiles",
            EncryptedTable::AppointmentDetails => "appointment_details",
        }
    }

    /// Its (uuid) primary key column.
    pub fn key(self) -> &'static str {
        match self {
            EncryptedTable::Users => "id",
            EncryptedTable::PatientProfiles => "user_id",
            EncryptedTable::AppointmentDetails => "appointment_id",
        }
    }

    /// Its encrypted columns with their associated-data names.
    pub fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            EncryptedTable::Users => &[
                ("email_enc", columns::USER_EMAIL),
                ("name_enc", columns::USER_NAME),
            ],
            EncryptedTable::PatientProfiles => &[
                ("phone_enc", columns::PHONE),
                ("date_of_birth_enc", columns::DATE_OF_BIRTH),
            ],
            EncryptedTable::AppointmentDetails => &[
                ("reason_enc", columns::REASON),
                ("notes_enc", columns::NOTES),
                ("cancel_reason_enc", columns::CANCEL_REASON),
            ],
        }
    }
}

/// One rotation batch's result.
#[derive(Debug, Clone, Copy, Default)]
pub struct RotateBatch {
    /// The last primary key looked at (`None`: the table had no more rows).
    pub last: Option<Uuid>,
    /// Rows looked at.
    pub scanned: u64,
    /// Rows re-encrypted (the others were under the active key already).
    pub rewritten: u64,
}

/// What erasing a patient removed.
#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct Erasure {
    /// Appointment details deleted.
    pub details_deleted: u64,
    /// Refresh tokens revoked.
    pub tokens_revoked: u64,
}

/// Encrypted patient data, rotation and erasure.
#[async_trait]
pub trait PrivacyStore: Send + Sync {
    /// The patient's profile (empty if none was saved).
    async fn profile(&self, user: UserId) -> Result<PatientProfile, StoreError>;
    /// Replaces the patient's profile.
    async fn set_profile(&self, user: UserId, p: &PatientProfile) -> Result<(), StoreError>;
    /// An appointment's details, if any were written.
    async fn appointment_details(
        &self,
        id: AppointmentId,
    ) -> Result<Option<AppointmentDetails>, StoreError>;
    /// Changes an appointment's details (which must exist as an appointment).
    async fn update_appointment_details(
        &self,
        id: AppointmentId,
        change: &DetailsChange,
    ) -> Result<AppointmentDetails, StoreError>;
    /// Seals a free-text cancellation reason of appointment `id` for the
    /// cancellation's own write (`WriteOp::SetStatus::sealed_reason`), which
    /// stores it in `appointment_details` in the same transaction as the
    /// status change; only a fixed code, if any, is kept in plaintext.
    fn seal_cancel_reason(&self, id: AppointmentId, reason: &str) -> Result<Vec<u8>, StoreError>;
    /// The suggestion logs of a patient, oldest first.
    async fn suggestion_logs_of(&self, patient: UserId) -> Result<Vec<SuggestionLog>, StoreError>;
    /// Erases a patient's personal data in one transaction: e-mail (and its
    /// blind index, so the address may register again), name, profile,
    /// appointment details; disables the password and revokes refresh
    /// tokens. Appointments stay (times, status, doctor) for statistics.
    /// Idempotent. `Ok(None)`: no such patient.
    async fn erase_patient(&self, patient: UserId) -> Result<Option<Erasure>, StoreError>;
    /// Re-encrypts under the active key the rows of `table` with a primary
    /// key greater than `after` (all rows for `None`), at most `limit` of
    /// them, in one transaction. Rows already under the active key are left
    /// alone, so a rerun skips them.
    async fn rotate_batch(
        &self,
        table: EncryptedTable,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<RotateBatch, StoreError>;
}

/// Opens an optional encrypted text field.
pub(crate) fn open_text(
    cipher: &FieldCipher,
    column: &'static str,
    row: Uuid,
    enc: Option<&[u8]>,
) -> Result<Option<String>, CryptoError> {
    enc.map(|e| cipher.decrypt_str(FieldAad::new(column, row), e))
        .transpose()
}

/// Seals an optional text field; empty text is stored as no value.
pub(crate) fn seal_text(
    cipher: &FieldCipher,
    column: &'static str,
    row: Uuid,
    text: Option<&str>,
) -> Result<Option<Vec<u8>>, CryptoError> {
    text.filter(|t| !t.is_empty())
        .map(|t| cipher.encrypt_str(FieldAad::new(column, row), t))
        .transpose()
}

/// The stored form of a profile.
pub(crate) struct SealedProfile {
    pub phone: Option<Vec<u8>>,
    pub date_of_birth: Option<Vec<u8>>,
}

impl SealedProfile {
    pub(crate) fn seal(
        cipher: &FieldCipher,
        user: UserId,
        p: &PatientProfile,
    ) -> Result<Self, CryptoError> {
        let dob = p.date_of_birth.map(|d| d.format("%Y-%m-%d").to_string());
        Ok(Self {
            phone: seal_text(cipher, columns::PHONE, user.0, p.phone.as_deref())?,
            date_of_birth: seal_text(cipher, columns::DATE_OF_BIRTH, user.0, dob.as_deref())?,
        })
    }

    pub(crate) fn open(
        &self,
        cipher: &FieldCipher,
        user: UserId,
    ) -> Result<PatientProfile, CryptoError> {
        let dob = open_text(
            cipher,
            columns::DATE_OF_BIRTH,
            user.0,
            self.date_of_birth.as_deref(),
        )?;
        Ok(PatientProfile {
            phone: open_text(cipher, columns::PHONE, user.0, self.phone.as_deref())?,
            date_of_birth: dob
                .map(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d"))
                .transpose()
                .map_err(|_| CryptoError::NotText)?,
        })
    }
}

/// The stored form of appointment details: the sealed reason, notes and
/// cancellation reason.
pub(crate) fn open_details(
    cipher: &FieldCipher,
    id: AppointmentId,
    [reason, notes, cancel_reason]: [Option<&[u8]>; 3],
) -> Result<AppointmentDetails, CryptoError> {
    Ok(AppointmentDetails {
        reason: open_text(cipher, columns::REASON, id.0, reason)?,
        notes: open_text(cipher, columns::NOTES, id.0, notes)?,
        cancel_reason: open_text(cipher, columns::CANCEL_REASON, id.0, cancel_reason)?,
    })
}

/// Seals a cancellation reason (see [`PrivacyStore::seal_cancel_reason`]).
pub(crate) fn seal_cancel_reason(
    cipher: &FieldCipher,
    id: AppointmentId,
    reason: &str,
) -> Result<Vec<u8>, StoreError> {
    cipher
        .encrypt_str(FieldAad::new(columns::CANCEL_REASON, id.0), reason)
        .map_err(|e| StoreError(e.to_string()))
}

/// The user fields as stored: blind index, sealed e-mail, sealed name.
pub(crate) struct SealedUser {
    pub email_hash: Vec<u8>,
    pub email: Vec<u8>,
    pub name: Vec<u8>,
}

impl SealedUser {
    pub(crate) fn seal(
        cipher: &FieldCipher,
        id: UserId,
        email: &str,
        name: &str,
    ) -> Result<Self, CryptoError> {
        let email = email.trim().to_lowercase();
        Ok(Self {
            email_hash: cipher.email_index(&email),
            email: cipher.encrypt_str(FieldAad::new(columns::USER_EMAIL, id.0), &email)?,
            name: cipher.encrypt_str(FieldAad::new(columns::USER_NAME, id.0), name)?,
        })
    }
}

/// Opens a user's e-mail and name; an erased account (no ciphertexts) has
/// no e-mail and [`ERASED_NAME`].
pub(crate) fn open_user(
    cipher: &FieldCipher,
    id: Uuid,
    email: Option<&[u8]>,
    name: Option<&[u8]>,
) -> Result<(String, String), CryptoError> {
    Ok((
        open_text(cipher, columns::USER_EMAIL, id, email)?.unwrap_or_default(),
        open_text(cipher, columns::USER_NAME, id, name)?.unwrap_or_else(|| ERASED_NAME.into()),
    ))
}

/// Re-encrypts one row's columns (`values` in the order of
/// [`EncryptedTable::columns`]); `None` when all are under the active key.
pub(crate) fn reencrypt_row(
    cipher: &FieldCipher,
    table: EncryptedTable,
    row: Uuid,
    values: Vec<Option<Vec<u8>>>,
) -> Result<Option<Vec<Option<Vec<u8>>>>, CryptoError> {
    let mut changed = false;
    let mut out: Vec<Option<Vec<u8>>> = Vec::with_capacity(values.len());
    for ((_, aad), value) in table.columns().iter().zip(values) {
        out.push(match value {
            Some(v) => match cipher.reencrypt(FieldAad::new(aad, row), &v)? {
                Some(new) => {
                    changed = true;
                    Some(new)
                }
                None => Some(v),
            },
            None => None,
        });
    }
    Ok(changed.then_some(out))
}
