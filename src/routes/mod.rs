//! HTTP routes. Handlers parse input into domain types, check who may do
//! what, then hand appointment changes to the doctor's calendar actor; they
//! never write appointments themselves.

pub mod admin;
pub mod apidoc;
pub mod audit;
pub mod auth;
pub mod booking;
pub mod health;
pub mod privacy;
pub mod suggest;

use std::sync::Arc;

use actix_web::web;
use chrono::{DateTime, Utc};
use docspot_actors::{
    CalendarDirectory,
    domain::{Appointment, AppointmentStatus, ClinicId, DoctorId, Slot},
};
use serde::{Deserialize, Serialize};
use utoipa::OpenApi;

use self::apidoc::ProblemResponses;
use crate::{
    auth::{AuthUser, TokenKeys},
    config::Settings,
    domain::Role,
    error::ApiError,
    store::{Doctor, Store},
};

/// Shared state of every worker.
pub struct AppState {
    /// Storage.
    pub store: Arc<dyn Store>,
    /// Calendar actors.
    pub calendars: Arc<CalendarDirectory>,
    /// Token keys.
    pub keys: Arc<TokenKeys>,
    /// Settings.
    pub settings: Settings,
    /// The change bus (for its health).
    pub bus: Arc<crate::live::bus::Bus>,
    /// The suggestion model in use.
    pub suggester: Arc<crate::suggest::Suggester>,
}

/// Handler access to the state.
pub type State = web::Data<AppState>;

/// A free slot on the wire.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotOut {
    /// Visit start, RFC 3339 UTC.
    pub start: DateTime<Utc>,
    /// Visit end, RFC 3339 UTC.
    pub end: DateTime<Utc>,
}

impl From<Slot> for SlotOut {
    fn from(s: Slot) -> Self {
        SlotOut {
            start: s.start,
            end: s.end,
        }
    }
}

/// An appointment (or hold) on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppointmentOut {
    /// Identity.
    pub id: uuid::Uuid,
    /// Doctor.
    pub doctor_id: uuid::Uuid,
    /// Patient.
    pub patient_id: uuid::Uuid,
    /// Visit type.
    pub visit_type_id: uuid::Uuid,
    /// Visit start, RFC 3339 UTC.
    pub start: DateTime<Utc>,
    /// Visit end, RFC 3339 UTC.
    pub end: DateTime<Utc>,
    /// `held`, `booked`, `cancelled`, `completed` or `no_show`.
    #[schema(value_type = String)]
    pub status: AppointmentStatus,
    /// For holds: when the hold lapses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// For cancellations: why. A fixed code for cancellations the system
    /// made (`hold_expired`, `hold_released`, `patient data erased`); the
    /// canceller's own words where the caller may read the appointment's
    /// details (the cancellation's answer, `GET /api/v1/appointments/{id}`),
    /// which store them encrypted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

impl From<Appointment> for AppointmentOut {
    fn from(a: Appointment) -> Self {
        AppointmentOut {
            id: a.id.0,
            doctor_id: a.doctor_id.0,
            patient_id: a.patient_id.0,
            visit_type_id: a.visit_type_id.0,
            start: a.time.start(),
            end: a.time.end(),
            status: a.status,
            hold_expires_at: a.hold_expires_at,
            cancel_reason: a.cancel_reason,
            created_at: a.created_at,
        }
    }
}

/// A doctor id from a path segment: a malformed one names no doctor (404).
pub fn doctor_id(s: &str) -> Result<DoctorId, ApiError> {
    DoctorId::parse(s).map_err(|e| ApiError::not_found("doctor_not_found", e.to_string()))
}

/// Parses an RFC 3339 instant from a request field.
pub fn parse_instant(field: &str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::unprocessable(
                "invalid_time",
                format!("{field}: {s:?} is not an RFC 3339 date-time (e.g. 2026-03-08T09:30:00Z)"),
            )
        })
}

/// The doctor, if the caller may manage them (the doctor, or an admin of
/// their clinic).
pub async fn managed_doctor(
    state: &AppState,
    user: &AuthUser,
    id: DoctorId,
) -> Result<Doctor, ApiError> {
    let doctor = state
        .store
        .doctor(id)
        .await?
        .ok_or_else(|| ApiError::not_found("doctor_not_found", "doctor not found"))?;
    let allowed = match user.role {
        Role::Doctor => user.doctor_id == Some(id),
        Role::ClinicAdmin => user.administers(doctor.clinic_id),
        Role::Patient => false,
    };
    if allowed {
        Ok(doctor)
    } else {
        Err(ApiError::forbidden(
            "only this doctor or an admin of their clinic may do this",
        ))
    }
}

/// Requires a clinic admin of `clinic`.
pub fn require_admin(user: &AuthUser, clinic: ClinicId) -> Result<(), ApiError> {
    if user.administers(clinic) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only an admin of this clinic may do this",
        ))
    }
}

/// The OpenAPI 3 document.
#[derive(OpenApi)]
#[openapi(
    info(title = "DocSpot API", description = "Real-time doctor appointment booking."),
    paths(
        health::healthz, health::readyz,
        auth::register, auth::token, auth::logout,
        booking::list_doctors, booking::get_doctor, booking::doctor_slots, booking::doctor_visit_types,
        booking::create_appointment, booking::list_appointments, booking::get_appointment,
        booking::appointment_history, booking::reschedule, booking::cancel, booking::record_outcome,
        booking::create_hold, booking::confirm_hold, booking::release_hold, booking::doctor_day,
        suggest::suggestions,
        crate::web::ics::appointment_ics, crate::web::stats::doctor_stats,
        admin::create_clinic, admin::list_clinics, admin::get_clinic, admin::update_clinic,
        admin::create_doctor, admin::update_doctor, admin::create_doctor_account,
        admin::create_visit_type, admin::list_rules, admin::create_rule, admin::delete_rule,
        admin::list_exceptions, admin::create_exception, admin::delete_exception,
        audit::audit_log,
        privacy::get_profile, privacy::put_profile, privacy::put_details, privacy::export,
        privacy::erase_me, privacy::erase_patient,
    ),
    components(schemas(crate::error::Problem, SlotOut, AppointmentOut)),
    modifiers(&BearerAuth, &ProblemResponses),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

async fn openapi_json() -> web::Json<utoipa::openapi::OpenApi> {
    web::Json(ApiDoc::openapi())
}

/// Registers every route. The auth endpoints and booking/hold changes are
/// wrapped in rate limits (see [`crate::ratelimit`]).
pub fn configure(cfg: &mut web::ServiceConfig) {
    use crate::ratelimit::{limit_auth, limit_booking};
    use actix_web::middleware::from_fn;
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .service(
            web::scope("/api/v1")
                .route("/openapi.json", web::get().to(openapi_json))
                .route("/live", web::get().to(crate::live::session::live))
                .route(
                    "/auth/register",
                    web::post().to(auth::register).wrap(from_fn(limit_auth)),
                )
                .route(
                    "/auth/token",
                    web::post().to(auth::token).wrap(from_fn(limit_auth)),
                )
                .route(
                    "/auth/logout",
                    web::post().to(auth::logout).wrap(from_fn(limit_auth)),
                )
                .route("/doctors", web::get().to(booking::list_doctors))
                .route("/doctors/{id}", web::get().to(booking::get_doctor))
                .route("/doctors/{id}", web::put().to(admin::update_doctor))
                .route("/doctors/{id}/slots", web::get().to(booking::doctor_slots))
                .route("/doctors/{id}/day", web::get().to(booking::doctor_day))
                .route(
                    "/doctors/{id}/suggestions",
                    web::get().to(suggest::suggestions),
                )
                .route(
                    "/doctors/{id}/visit-types",
                    web::get().to(booking::doctor_visit_types),
                )
                .route(
                    "/doctors/{id}/visit-types",
                    web::post().to(admin::create_visit_type),
                )
                .route(
                    "/doctors/{id}/account",
                    web::post().to(admin::create_doctor_account),
                )
                .route("/doctors/{id}/rules", web::get().to(admin::list_rules))
                .route("/doctors/{id}/rules", web::post().to(admin::create_rule))
                .route(
                    "/doctors/{id}/rules/{rule_id}",
                    web::delete().to(admin::delete_rule),
                )
                .route(
                    "/doctors/{id}/exceptions",
                    web::get().to(admin::list_exceptions),
                )
                .route(
                    "/doctors/{id}/exceptions",
                    web::post().to(admin::create_exception),
                )
                .route(
                    "/doctors/{id}/exceptions/{exception_id}",
                    web::delete().to(admin::delete_exception),
                )
                .route(
                    "/appointments",
                    web::post()
                        .to(booking::create_appointment)
                        .wrap(from_fn(limit_booking)),
                )
                .route("/appointments", web::get().to(booking::list_appointments))
                .route(
                    "/appointments/{id}",
                    web::get().to(booking::get_appointment),
                )
                .route(
                    "/appointments/{id}/ics",
                    web::get().to(crate::web::ics::appointment_ics),
                )
                .route(
                    "/doctors/{id}/stats",
                    web::get().to(crate::web::stats::doctor_stats),
                )
                .route(
                    "/appointments/{id}/history",
                    web::get().to(booking::appointment_history),
                )
                .route(
                    "/appointments/{id}/reschedule",
                    web::post()
                        .to(booking::reschedule)
                        .wrap(from_fn(limit_booking)),
                )
                .route(
                    "/appointments/{id}/cancel",
                    web::post().to(booking::cancel).wrap(from_fn(limit_booking)),
                )
                .route(
                    "/appointments/{id}/outcome",
                    web::post()
                        .to(booking::record_outcome)
                        .wrap(from_fn(limit_booking)),
                )
                .route(
                    "/appointments/{id}/details",
                    web::put().to(privacy::put_details),
                )
                .route("/me/profile", web::get().to(privacy::get_profile))
                .route("/me/profile", web::put().to(privacy::put_profile))
                .route("/me/export", web::get().to(privacy::export))
                // The password check makes this a guessing target too.
                .route(
                    "/me/erase",
                    web::post().to(privacy::erase_me).wrap(from_fn(limit_auth)),
                )
                .route(
                    "/patients/{id}/erase",
                    web::post().to(privacy::erase_patient),
                )
                .route(
                    "/holds",
                    web::post()
                        .to(booking::create_hold)
                        .wrap(from_fn(limit_booking)),
                )
                .route(
                    "/holds/{id}/confirm",
                    web::post()
                        .to(booking::confirm_hold)
                        .wrap(from_fn(limit_booking)),
                )
                .route(
                    "/holds/{id}",
                    web::delete()
                        .to(booking::release_hold)
                        .wrap(from_fn(limit_booking)),
                )
                .route("/audit", web::get().to(audit::audit_log))
                .route("/clinics", web::post().to(admin::create_clinic))
                .route("/clinics", web::get().to(admin::list_clinics))
                .route("/clinics/{id}", web::get().to(admin::get_clinic))
                .route("/clinics/{id}", web::put().to(admin::update_clinic))
                .route(
                    "/clinics/{id}/doctors",
                    web::post().to(admin::create_doctor),
                ),
        );
}
