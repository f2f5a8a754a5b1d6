//! A patient's own data: profile, appointment details, export, erasure.
//! The store encrypts and decrypts; these handlers see plaintext.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Datelike, NaiveDate, Utc};
use docspot_actors::domain::{Appointment, AppointmentStatus, UserId};
use serde::{Deserialize, Serialize};

use super::{AppointmentOut, State, booking::visible_appointment};
use crate::{
    audit::{Action, Actor, Audit, Outcome},
    auth::{AuthUser, verify_password},
    domain::Role,
    error::ApiError,
    privacy::{self, ErasureReport, PatientExport},
    ratelimit::RateLimits,
    store::{AppointmentDetails, DetailsChange, ERASED_PASSWORD_HASH, PatientProfile},
};

/// Longest reason for visit, in characters.
const MAX_REASON: usize = 2000;
/// Longest doctor's notes, in characters.
const MAX_NOTES: usize = 20_000;

fn require_patient(user: &AuthUser) -> Result<(), ApiError> {
    if user.role == Role::Patient {
        Ok(())
    } else {
        Err(ApiError::forbidden("only patients have a patient profile"))
    }
}

/// A phone number: 3 to 32 characters of digits, spaces and `+ - ( ) .`,
/// with at least 3 digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    /// Parses a phone number.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let s = s.trim();
        let ok = (3..=32).contains(&s.chars().count())
            && s.chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c))
            && s.chars().filter(char::is_ascii_digit).count() >= 3;
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(ApiError::unprocessable(
                "invalid_phone",
                "phone: 3 to 32 characters of digits, spaces and + - ( ) .",
            ))
        }
    }
}

fn parse_birth_date(s: &str) -> Result<NaiveDate, ApiError> {
    let d = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        ApiError::unprocessable(
            "invalid_date_of_birth",
            "date_of_birth: expected YYYY-MM-DD",
        )
    })?;
    let today = Utc::now().date_naive();
    if d > today || d.year_ce().1 < 1880 {
        return Err(ApiError::unprocessable(
            "invalid_date_of_birth",
            "date_of_birth: must be in the past (and after 1880)",
        ));
    }
    Ok(d)
}

/// `GET/PUT /api/v1/me/profile` body.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProfileIo {
    /// Login e-mail (read only).
    #[serde(default, skip_deserializing)]
    pub email: String,
    /// Name (read only here).
    #[serde(default, skip_deserializing)]
    pub name: String,
    /// Phone number (absent or null: none).
    pub phone: Option<String>,
    /// Date of birth, YYYY-MM-DD (absent or null: none).
    pub date_of_birth: Option<String>,
}

async fn profile_out(state: &State, user: UserId) -> Result<HttpResponse, ApiError> {
    let account = state
        .store
        .user(user)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    let p = state.store.profile(user).await?;
    Ok(HttpResponse::Ok().json(ProfileIo {
        email: account.email,
        name: account.name,
        phone: p.phone,
        date_of_birth: p.date_of_birth.map(|d| d.format("%Y-%m-%d").to_string()),
    }))
}

/// The caller's patient profile.
#[utoipa::path(get, path = "/api/v1/me/profile", tag = "privacy", security(("bearer" = [])),
    responses((status = 200, body = ProfileIo), (status = 403, body = crate::error::Problem)))]
pub async fn get_profile(
    state: State,
    user: AuthUser,
    audit: Audit,
) -> Result<HttpResponse, ApiError> {
    require_patient(&user)?;
    audit.by_self(&user, Action::PatientRead).await?;
    profile_out(&state, user.id).await
}

/// Replaces the caller's phone number and date of birth (stored encrypted).
#[utoipa::path(put, path = "/api/v1/me/profile", tag = "privacy", request_body = ProfileIo,
    security(("bearer" = [])),
    responses((status = 200, body = ProfileIo), (status = 422, body = crate::error::Problem,
        description = "invalid_phone, invalid_date_of_birth")))]
pub async fn put_profile(
    state: State,
    user: AuthUser,
    audit: Audit,
    body: web::Json<ProfileIo>,
) -> Result<HttpResponse, ApiError> {
    require_patient(&user)?;
    let body = body.into_inner();
    let profile = PatientProfile {
        phone: body
            .phone
            .as_deref()
            .filter(|p| !p.trim().is_empty())
            .map(Phone::parse)
            .transpose()?
            .map(|p| p.0),
        date_of_birth: body
            .date_of_birth
            .as_deref()
            .filter(|d| !d.trim().is_empty())
            .map(parse_birth_date)
            .transpose()?,
    };
    state.store.set_profile(user.id, &profile).await?;
    audit.by_self(&user, Action::PatientUpdate).await?;
    profile_out(&state, user.id).await
}

/// `PUT /api/v1/appointments/{id}/details` body. Absent fields stay as they
/// are; an empty string clears one.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DetailsIn {
    /// Reason for visit (the patient only).
    pub reason: Option<String>,
    /// Doctor's notes (the doctor or a clinic admin only).
    pub notes: Option<String>,
}

/// An appointment with its details, as `GET /api/v1/appointments/{id}`
/// returns it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentView {
    /// The appointment.
    #[serde(flatten)]
    pub appointment: AppointmentOut,
    /// Reason for visit and doctor's notes, when any were written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<AppointmentDetails>,
}

/// The view of an appointment the caller may see (details included: the
/// patient, the doctor and the clinic's admins all may read them).
pub async fn appointment_view(state: &State, a: Appointment) -> Result<AppointmentView, ApiError> {
    let details = state.store.appointment_details(a.id).await?;
    let mut appointment = AppointmentOut::from(a);
    if let Some(why) = details.as_ref().and_then(|d| d.cancel_reason.clone()) {
        appointment.cancel_reason = Some(why);
    }
    Ok(AppointmentView {
        appointment,
        details,
    })
}

/// Writes the reason for visit (patient) or the doctor's notes (doctor,
/// clinic admin), stored encrypted apart from the appointment itself.
#[utoipa::path(put, path = "/api/v1/appointments/{id}/details", tag = "appointments",
    request_body = DetailsIn, security(("bearer" = [])),
    responses((status = 200, body = AppointmentView), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn put_details(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<DetailsIn>,
) -> Result<HttpResponse, ApiError> {
    let id = super::booking::appointment_id(&path)?;
    let a =
        visible_appointment(&state, &user, &audit, Action::AppointmentDetailsUpdate, id).await?;
    let staff = user.role != Role::Patient;
    let body = body.into_inner();
    if body.reason.is_none() && body.notes.is_none() {
        return Err(ApiError::unprocessable(
            "nothing_to_change",
            "send reason (patient) or notes (doctor, clinic admin)",
        ));
    }
    if body.reason.is_some() && staff {
        return Err(ApiError::forbidden(
            "only the patient writes the reason for visit",
        ));
    }
    if body.notes.is_some() && !staff {
        return Err(ApiError::forbidden(
            "only the doctor or a clinic admin writes notes",
        ));
    }
    let trim = |s: Option<String>, field: &'static str, max: usize| {
        s.map(|s| {
            let s = s.trim().to_string();
            if s.chars().count() > max {
                Err(ApiError::unprocessable(
                    "too_long",
                    format!("{field}: at most {max} characters"),
                ))
            } else {
                Ok(s)
            }
        })
        .transpose()
    };
    let change = DetailsChange {
        reason: trim(body.reason, "reason", MAX_REASON)?,
        notes: trim(body.notes, "notes", MAX_NOTES)?,
    };
    state
        .store
        .update_appointment_details(a.id, &change)
        .await?;
    audit
        .appointment(&state, &user, Action::AppointmentDetailsUpdate, &a)
        .await?;
    Ok(HttpResponse::Ok().json(appointment_view(&state, a).await?))
}

/// Everything DocSpot keeps about the caller, as JSON (right of access and
/// portability).
#[utoipa::path(get, path = "/api/v1/me/export", tag = "privacy", security(("bearer" = [])),
    responses((status = 200, body = PatientExport), (status = 403, body = crate::error::Problem)))]
pub async fn export(state: State, user: AuthUser, audit: Audit) -> Result<HttpResponse, ApiError> {
    require_patient(&user)?;
    // Recorded before any data leaves (reads fail closed).
    audit.by_self(&user, Action::PatientExport).await?;
    let account = state
        .store
        .user(user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    let data = privacy::export_patient(state.store.as_ref(), &account).await?;
    Ok(HttpResponse::Ok()
        .insert_header((
            "Content-Disposition",
            "attachment; filename=\"docspot-export.json\"",
        ))
        .json(data))
}

/// `POST /api/v1/me/erase` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EraseIn {
    /// The account's password, entered again.
    pub password: String,
}

/// Erases the caller's personal data (right to erasure): see
/// [`privacy::erase_patient`]. Needs the password again: an access token
/// alone (perhaps stolen) must not be enough to destroy an account.
#[utoipa::path(post, path = "/api/v1/me/erase", tag = "privacy", request_body = EraseIn,
    security(("bearer" = [])),
    responses((status = 200, body = ErasureReport), (status = 401, body = crate::error::Problem,
        description = "wrong_password"), (status = 429, body = crate::error::Problem,
        description = "too_many_failed_logins (shared with sign-in); see Retry-After")))]
pub async fn erase_me(
    state: State,
    req: HttpRequest,
    user: AuthUser,
    audit: Audit,
    body: web::Json<EraseIn>,
) -> Result<HttpResponse, ApiError> {
    require_patient(&user)?;
    let account = state
        .store
        .user(user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    // An account already erased has no password left; erasing it again is
    // harmless (idempotent) and finishes what a failed run left, so it is
    // allowed without one.
    if account.password_hash != ERASED_PASSWORD_HASH {
        // Password guesses here count with failed logins (the same account
        // key: the e-mail, as a login types it), so a stolen access token
        // is no way around the sign-in lock-out.
        let limits = req.app_data::<web::Data<RateLimits>>();
        if let Some(l) = limits {
            l.before_login(&req, &account.email)?;
        }
        let (password, hash) = (body.into_inner().password, account.password_hash);
        let ok = web::block(move || verify_password(&password, &hash))
            .await
            .unwrap_or(false);
        if let Some(l) = limits {
            if ok {
                l.login_succeeded(&account.email);
            } else {
                l.login_failed(&req, &account.email);
            }
        }
        if !ok {
            return Err(ApiError::new(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "wrong_password",
                "the password is not correct",
            ));
        }
    }
    erase(&state, &audit, &user, user.id).await
}

/// Erases a patient of the caller's clinic (platform admins: any patient):
/// see `clinic_may_erase`.
#[utoipa::path(post, path = "/api/v1/patients/{id}/erase", tag = "privacy",
    security(("bearer" = [])),
    responses((status = 200, body = ErasureReport), (status = 403, body = crate::error::Problem,
        description = "forbidden, or cross_clinic_patient: a platform admin must erase this patient"),
        (status = 404, body = crate::error::Problem)))]
pub async fn erase_patient(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if user.role != Role::ClinicAdmin {
        return Err(ApiError::forbidden("only clinic admins erase patients"));
    }
    let not_found = || ApiError::not_found("patient_not_found", "patient not found");
    let patient = UserId::parse(&path).map_err(|_| not_found())?;
    if !user.is_platform_admin() {
        clinic_may_erase(&state, &user, patient).await?;
    }
    erase(&state, &audit, &user, patient).await
}

/// Whether a clinic admin may erase `patient`: a patient of their clinic,
/// i.e. one with a real visit there (booked, completed or no-show; a hold
/// or a cancelled booking is too little to claim them), and with no
/// appointment anywhere else. Erasure wipes the account and cancels bookings
/// in every clinic, so a patient shared with another clinic is for a
/// platform admin to erase (403 `cross_clinic_patient`). An account erased
/// already may be erased again (to finish a failed run) on any appointment
/// there, since the erasure cancelled the visits that made it theirs. Not
/// theirs at all: 404, revealing nothing.
async fn clinic_may_erase(state: &State, user: &AuthUser, patient: UserId) -> Result<(), ApiError> {
    let erased = state
        .store
        .user(patient)
        .await?
        .is_some_and(|u| u.password_hash == ERASED_PASSWORD_HASH);
    let (mut ours, mut elsewhere) = (false, false);
    for a in state.store.patient_appointments(patient).await? {
        // A doctor that no longer exists: its clinic is unknown, so not ours.
        let mine = match state.store.doctor(a.doctor_id).await? {
            Some(d) => user.administers(d.clinic_id),
            None => false,
        };
        if !mine {
            elsewhere = true;
        } else if erased
            || matches!(
                a.status,
                AppointmentStatus::Booked
                    | AppointmentStatus::Completed
                    | AppointmentStatus::NoShow
            )
        {
            ours = true;
        }
    }
    if !ours {
        return Err(ApiError::not_found(
            "patient_not_found",
            "patient not found",
        ));
    }
    if elsewhere {
        return Err(ApiError::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "cross_clinic_patient",
            "the patient has appointments at other clinics too: a platform admin must erase this patient",
        ));
    }
    Ok(())
}

async fn erase(
    state: &State,
    audit: &Audit,
    user: &AuthUser,
    patient: UserId,
) -> Result<HttpResponse, ApiError> {
    let outcome = privacy::erase_patient(
        state.store.as_ref(),
        &state.calendars,
        patient,
        user.id,
        audit.note(user, Action::AppointmentCancel),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("patient_not_found", "patient not found"))?;
    // Only the patient's id goes into the (append-only) log, so the entry
    // outlives the erasure without keeping what was erased. Recorded even
    // when a cancellation failed: the personal data is gone by then.
    audit
        .own(
            Actor::user(user),
            Action::PatientErase,
            patient,
            Outcome::Success,
        )
        .await?;
    if let Some(e) = outcome.error {
        return Err(e);
    }
    Ok(HttpResponse::Ok().json(outcome.report))
}
