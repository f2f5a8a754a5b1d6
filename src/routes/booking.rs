//! Public doctor listing and slots, and everything a patient does with
//! appointments and holds. Every change goes through the doctor's calendar
//! actor: handler → actor (decides in memory) → store (batched commit).

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{Duration, NaiveDate, TimeZone};
use docspot_actors::{
    calendar::{Cancel, Claim, Confirm, FreeSlots, RecordOutcome, Reschedule},
    domain::{
        Appointment, AppointmentId, AppointmentStatus, ClinicId, DoctorId, TimeRange, VisitTypeId,
        parse_time_zone,
    },
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{AppointmentOut, SlotOut, State, doctor_id, managed_doctor, parse_instant};
use crate::{
    audit::{Action, Audit, Outcome},
    auth::AuthUser,
    domain::Role,
    error::ApiError,
    store::{Doctor, HistoryEntry, VisitTypeRecord},
};

/// `GET /api/v1/doctors` filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DoctorFilter {
    /// Only this clinic.
    #[param(format = Uuid)]
    pub clinic: Option<String>,
    /// Only doctors with this specialty (case-insensitive).
    pub specialty: Option<String>,
    /// Only doctors whose name contains this text (case-insensitive).
    pub name: Option<String>,
}

/// Doctor list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DoctorsOut {
    /// Doctors.
    pub doctors: Vec<Doctor>,
}

/// Lists active doctors.
#[utoipa::path(get, path = "/api/v1/doctors", tag = "doctors", params(DoctorFilter),
    responses((status = 200, body = DoctorsOut)))]
pub async fn list_doctors(
    state: State,
    q: web::Query<DoctorFilter>,
) -> Result<HttpResponse, ApiError> {
    let clinic = q.clinic.as_deref().map(ClinicId::parse).transpose()?;
    let specialty = q
        .specialty
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let mut doctors = state.store.doctors(clinic, specialty).await?;
    // A clinic lists tens of doctors, not millions: filtering the names here
    // keeps both stores' queries as they are.
    if let Some(name) = q.name.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        let needle = name.to_lowercase();
        doctors.retain(|d| d.name.to_lowercase().contains(&needle));
    }
    Ok(HttpResponse::Ok().json(DoctorsOut { doctors }))
}

/// An appointment id from a path segment: a malformed one names no
/// appointment (404).
pub(crate) fn appointment_id(s: &str) -> Result<AppointmentId, ApiError> {
    AppointmentId::parse(s).map_err(|e| ApiError::not_found("appointment_not_found", e.to_string()))
}

/// One doctor.
#[utoipa::path(get, path = "/api/v1/doctors/{id}", tag = "doctors",
    responses((status = 200, body = Doctor), (status = 404, body = crate::error::Problem)))]
pub async fn get_doctor(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let id = doctor_id(&path)?;
    let d = state
        .store
        .doctor(id)
        .await?
        .ok_or_else(|| ApiError::not_found("doctor_not_found", "doctor not found"))?;
    Ok(HttpResponse::Ok().json(d))
}

/// Visit type list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VisitTypesOut {
    /// Visit types.
    pub visit_types: Vec<VisitTypeRecord>,
}

/// A doctor's visit types.
#[utoipa::path(get, path = "/api/v1/doctors/{id}/visit-types", tag = "doctors",
    responses((status = 200, body = VisitTypesOut)))]
pub async fn doctor_visit_types(
    state: State,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = doctor_id(&path)?;
    let v = state.store.visit_types(id).await?;
    Ok(HttpResponse::Ok().json(VisitTypesOut { visit_types: v }))
}

/// `GET /api/v1/doctors/{id}/slots` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SlotQuery {
    /// Range start, RFC 3339.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Range end, RFC 3339.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Visit type (default: the doctor's default).
    #[param(format = Uuid)]
    pub visit_type: Option<String>,
}

/// Free slots.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlotsOut {
    /// Free slots, earliest first.
    pub slots: Vec<SlotOut>,
}

/// `from`..`to` (RFC 3339) of a query, at most `limits.max_slot_query_days`
/// long.
fn bounded_range(state: &State, from: &str, to: &str) -> Result<TimeRange, ApiError> {
    let range = TimeRange::new(parse_instant("from", from)?, parse_instant("to", to)?)?;
    within_query_limit(state, range)
}

/// `range` if it is at most `limits.max_slot_query_days` long: no one asks
/// for ten years at once.
pub(crate) fn within_query_limit(state: &State, range: TimeRange) -> Result<TimeRange, ApiError> {
    let max = Duration::days(state.settings.limits.max_slot_query_days);
    if range.duration() > max {
        return Err(ApiError::unprocessable(
            "range_too_long",
            format!("ask for at most {} days at a time", max.num_days()),
        ));
    }
    Ok(range)
}

/// Free slots of a doctor, computed by the doctor's calendar in memory.
#[utoipa::path(get, path = "/api/v1/doctors/{id}/slots", tag = "doctors", params(SlotQuery),
    responses((status = 200, body = SlotsOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn doctor_slots(
    state: State,
    path: web::Path<String>,
    q: web::Query<SlotQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = doctor_id(&path)?;
    let (Some(from), Some(to)) = (&q.from, &q.to) else {
        return Err(ApiError::unprocessable(
            "missing_range",
            "from and to (RFC 3339) are required",
        ));
    };
    let range = bounded_range(&state, from, to)?;
    let visit_type = q
        .visit_type
        .as_deref()
        .map(VisitTypeId::parse)
        .transpose()?;
    let slots = state
        .calendars
        .ask(id, FreeSlots { visit_type, range })
        .await?;
    Ok(HttpResponse::Ok().json(SlotsOut {
        slots: slots.into_iter().map(SlotOut::from).collect(),
    }))
}

/// `POST /api/v1/appointments` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct BookIn {
    /// Doctor.
    #[schema(format = Uuid)]
    pub doctor_id: String,
    /// Visit start, RFC 3339.
    #[schema(format = DateTime)]
    pub start: String,
    /// Visit type (default: the doctor's default).
    #[schema(format = Uuid)]
    pub visit_type_id: Option<String>,
    /// Confirm this hold instead of claiming afresh.
    #[schema(format = Uuid)]
    pub hold_id: Option<String>,
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get("Idempotency-Key") else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= 255);
    match s {
        Some(s) => Ok(Some(s.to_string())),
        None => Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        )),
    }
}

fn require_patient(user: &AuthUser) -> Result<(), ApiError> {
    if user.role == Role::Patient {
        Ok(())
    } else {
        Err(ApiError::forbidden("only patients book appointments"))
    }
}

/// Books a slot (or confirms a hold). Retries with the same
/// `Idempotency-Key` return the same appointment and never book twice.
#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments", request_body = BookIn,
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes retries safe")),
    security(("bearer" = [])),
    responses((status = 201, body = AppointmentOut),
        (status = 409, body = crate::error::Problem, description = "slot_taken, with alternatives"),
        (status = 422, body = crate::error::Problem, description = "slot_not_offered, invalid input")))]
pub async fn create_appointment(
    state: State,
    user: AuthUser,
    audit: Audit,
    req: HttpRequest,
    body: web::Json<BookIn>,
) -> Result<HttpResponse, ApiError> {
    require_patient(&user)?;
    let key = idempotency_key(&req)?;
    let doctor = DoctorId::parse(&body.doctor_id)?;
    let start = parse_instant("start", &body.start)?;
    let visit_type = body
        .visit_type_id
        .as_deref()
        .map(VisitTypeId::parse)
        .transpose()?;

    if let Some(hold) = &body.hold_id {
        let hold = AppointmentId::parse(hold)?;
        let a = own_appointment(&state, &user, &audit, Action::AppointmentConfirm, hold).await?;
        if a.doctor_id != doctor || a.time.start() != start {
            return Err(ApiError::unprocessable(
                "hold_mismatch",
                "the hold is for another doctor or start time",
            ));
        }
        let booked = state
            .calendars
            .ask(
                doctor,
                Confirm {
                    hold_id: hold,
                    by: user.id,
                    audit: Some(audit.note(&user, Action::AppointmentConfirm)),
                },
            )
            .await?;
        let unchanged = a.status == AppointmentStatus::Booked;
        settle_audit(&audit, &state, &user, &booked, unchanged).await?;
        return Ok(HttpResponse::Created().json(AppointmentOut::from(booked)));
    }

    // A retry after the original committed: answer from the record.
    if let Some(key) = &key
        && let Some(existing) = state.store.appointment_by_key(user.id, key).await?
    {
        audit
            .appointment(&state, &user, Action::AppointmentRead, &existing)
            .await?;
        return same_request(existing, doctor, start);
    }
    let id = AppointmentId::new();
    let a = state
        .calendars
        .ask(
            doctor,
            Claim {
                id,
                patient: user.id,
                visit_type,
                start,
                hold: false,
                idempotency_key: key,
                max_live_holds: None,
                audit: Some(audit.note(&user, Action::AppointmentCreate)),
            },
        )
        .await?;
    // Another id: a retry answered with the original booking.
    settle_audit(&audit, &state, &user, &a, a.id != id).await?;
    same_request(a, doctor, start)
}

/// After a calendar change that carried an audit note: a request that
/// applied nothing wrote no outbox record, so what it shows is recorded as a
/// read; otherwise the audit writer is nudged to chain the change's record.
async fn settle_audit(
    audit: &Audit,
    state: &super::AppState,
    user: &AuthUser,
    shown: &Appointment,
    unchanged: bool,
) -> Result<(), ApiError> {
    if unchanged {
        audit
            .appointment(state, user, Action::AppointmentRead, shown)
            .await
    } else {
        audit.committed();
        Ok(())
    }
}

/// Answers an idempotent request, refusing a key reused for another request.
fn same_request(
    a: Appointment,
    doctor: DoctorId,
    start: chrono::DateTime<chrono::Utc>,
) -> Result<HttpResponse, ApiError> {
    if a.doctor_id != doctor || a.time.start() != start {
        return Err(ApiError::unprocessable(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request",
        ));
    }
    Ok(HttpResponse::Created().json(AppointmentOut::from(a)))
}

/// `GET /api/v1/appointments` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// For clinic admins (required) and doctors: whose calendar.
    #[param(format = Uuid)]
    pub doctor_id: Option<String>,
    /// With `to`: only appointments overlapping `from`..`to` (RFC 3339, at
    /// most `limits.max_slot_query_days` long). Without both: a patient's
    /// whole list, or a calendar's last year and next two.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// End of the window (exclusive); see `from`.
    #[param(format = DateTime)]
    pub to: Option<String>,
}

/// Appointment list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentsOut {
    /// Newest first.
    pub appointments: Vec<AppointmentOut>,
}

/// The caller's appointments: a patient's own; a doctor's calendar; for a
/// clinic admin, the calendar of `doctor_id`. Newest first.
#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments", params(ListQuery),
    security(("bearer" = [])), responses((status = 200, body = AppointmentsOut)))]
pub async fn list_appointments(
    state: State,
    user: AuthUser,
    audit: Audit,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let window = match (&q.from, &q.to) {
        (Some(from), Some(to)) => Some(bounded_range(&state, from, to)?),
        (None, None) => None,
        _ => {
            return Err(ApiError::unprocessable(
                "missing_range",
                "give both from and to (RFC 3339), or neither",
            ));
        }
    };
    let list = match user.role {
        Role::Patient => {
            audit.by_self(&user, Action::AppointmentList).await?;
            let mut v = state.store.patient_appointments(user.id).await?;
            if let Some(w) = window {
                v.retain(|a| a.time.overlaps(&w));
            }
            v
        }
        Role::Doctor | Role::ClinicAdmin => {
            let doctor = match (&q.doctor_id, user.doctor_id) {
                (Some(d), _) => DoctorId::parse(d)?,
                (None, Some(d)) => d,
                (None, None) => {
                    return Err(ApiError::unprocessable(
                        "doctor_id_required",
                        "clinic admins list one doctor's calendar: pass doctor_id",
                    ));
                }
            };
            let d = managed_doctor(&state, &user, doctor).await?;
            audit
                .calendar(&user, Action::AppointmentList, d.id, d.clinic_id)
                .await?;
            let now = chrono::Utc::now();
            let range = match window {
                Some(w) => w,
                None => TimeRange::new(now - Duration::days(366), now + Duration::days(731))?,
            };
            let mut v = state.store.doctor_appointments(doctor, range).await?;
            v.reverse();
            v
        }
    };
    Ok(HttpResponse::Ok().json(AppointmentsOut {
        appointments: list.into_iter().map(AppointmentOut::from).collect(),
    }))
}

/// Loads an appointment the caller may see: the patient's own, the doctor's,
/// or one in an admin's clinic. Others get 404 so ids leak nothing, and
/// their attempt at `action` is recorded as denied.
pub(crate) async fn visible_appointment(
    state: &State,
    user: &AuthUser,
    audit: &Audit,
    action: Action,
    id: AppointmentId,
) -> Result<Appointment, ApiError> {
    let not_found = || ApiError::not_found("appointment_not_found", "appointment not found");
    let a = state.store.appointment(id).await?.ok_or_else(not_found)?;
    let ok = match user.role {
        Role::Patient => a.patient_id == user.id,
        Role::Doctor => user.doctor_id == Some(a.doctor_id),
        Role::ClinicAdmin => match state.store.doctor(a.doctor_id).await? {
            Some(d) => user.administers(d.clinic_id),
            None => false,
        },
    };
    if ok {
        Ok(a)
    } else {
        audit
            .appointment_outcome(state, user, action, &a, Outcome::Denied)
            .await?;
        Err(not_found())
    }
}

/// Like [`visible_appointment`], but only the patient's own.
async fn own_appointment(
    state: &State,
    user: &AuthUser,
    audit: &Audit,
    action: Action,
    id: AppointmentId,
) -> Result<Appointment, ApiError> {
    let a = visible_appointment(state, user, audit, action, id).await?;
    if a.patient_id == user.id {
        Ok(a)
    } else {
        audit
            .appointment_outcome(state, user, action, &a, Outcome::Denied)
            .await?;
        Err(ApiError::not_found(
            "appointment_not_found",
            "appointment not found",
        ))
    }
}

/// One appointment.
#[utoipa::path(get, path = "/api/v1/appointments/{id}", tag = "appointments",
    security(("bearer" = [])), responses((status = 200, body = super::privacy::AppointmentView), (status = 404, body = crate::error::Problem)))]
pub async fn get_appointment(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let a = read_appointment(&state, &user, &audit, appointment_id(&path)?).await?;
    // With the reason for visit and doctor's notes, which everyone who may
    // see the appointment may read.
    Ok(HttpResponse::Ok().json(super::privacy::appointment_view(&state, a).await?))
}

/// Loads an appointment the caller may see and records the read (a refusal
/// is recorded by [`visible_appointment`]).
pub(crate) async fn read_appointment(
    state: &State,
    user: &AuthUser,
    audit: &Audit,
    id: AppointmentId,
) -> Result<Appointment, ApiError> {
    let a = visible_appointment(state, user, audit, Action::AppointmentRead, id).await?;
    audit
        .appointment(state, user, Action::AppointmentRead, &a)
        .await?;
    Ok(a)
}

/// An appointment's history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryOut {
    /// Entries, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// An appointment's full history of changes, oldest first.
#[utoipa::path(get, path = "/api/v1/appointments/{id}/history", tag = "appointments",
    security(("bearer" = [])), responses((status = 200, body = HistoryOut)))]
pub async fn appointment_history(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let a = read_appointment(&state, &user, &audit, appointment_id(&path)?).await?;
    let history = state.store.history(a.id).await?;
    Ok(HttpResponse::Ok().json(HistoryOut { history }))
}

/// `POST /api/v1/appointments/{id}/reschedule` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RescheduleIn {
    /// New start, RFC 3339.
    #[schema(format = DateTime)]
    pub start: String,
}

/// Moves an appointment atomically; if the new time is taken, nothing changes.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/reschedule", tag = "appointments",
    request_body = RescheduleIn, security(("bearer" = [])),
    responses((status = 200, body = AppointmentOut), (status = 409, body = crate::error::Problem)))]
pub async fn reschedule(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<RescheduleIn>,
) -> Result<HttpResponse, ApiError> {
    let a = visible_appointment(
        &state,
        &user,
        &audit,
        Action::AppointmentReschedule,
        appointment_id(&path)?,
    )
    .await?;
    let start = parse_instant("start", &body.start)?;
    let moved = state
        .calendars
        .ask(
            a.doctor_id,
            Reschedule {
                id: a.id,
                start,
                by: user.id,
                enforce_cutoff: user.role == Role::Patient,
                audit: Some(audit.note(&user, Action::AppointmentReschedule)),
            },
        )
        .await?;
    // Moved to where it already was: nothing was written.
    settle_audit(&audit, &state, &user, &moved, moved.block == a.block).await?;
    Ok(HttpResponse::Ok().json(AppointmentOut::from(moved)))
}

/// `POST /api/v1/appointments/{id}/cancel` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct CancelIn {
    /// Why, in the canceller's words (at most 500 characters): patient
    /// data, stored encrypted with the appointment's details and erased with
    /// them; the history records only that the appointment was cancelled.
    pub reason: Option<String>,
}

/// Cancels an appointment. Patients must respect the clinic's cut-off.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/cancel", tag = "appointments",
    request_body = CancelIn, security(("bearer" = [])),
    responses((status = 200, body = AppointmentOut), (status = 409, body = crate::error::Problem, description = "cancellation_cutoff, invalid_transition")))]
pub async fn cancel(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
    body: Option<web::Json<CancelIn>>,
) -> Result<HttpResponse, ApiError> {
    let a = visible_appointment(
        &state,
        &user,
        &audit,
        Action::AppointmentCancel,
        appointment_id(&path)?,
    )
    .await?;
    let reason = body
        .and_then(|b| b.into_inner().reason)
        .map(|r| r.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty());
    // Sealed here, stored by the cancellation's own write: no plaintext of
    // it reaches the appointment row, its history or the change bus.
    let sealed_reason = reason
        .as_deref()
        .map(|r| state.store.seal_cancel_reason(a.id, r))
        .transpose()?;
    let cancelled = state
        .calendars
        .ask(
            a.doctor_id,
            Cancel {
                id: a.id,
                by: user.id,
                reason: None,
                sealed_reason,
                enforce_cutoff: user.role == Role::Patient,
                holds_only: false,
                audit: Some(audit.note(&user, Action::AppointmentCancel)),
            },
        )
        .await?;
    audit.committed();
    let mut out = AppointmentOut::from(cancelled);
    out.cancel_reason = out.cancel_reason.or(reason);
    Ok(HttpResponse::Ok().json(out))
}

/// `POST /api/v1/appointments/{id}/outcome` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct OutcomeIn {
    /// `completed` or `no_show`.
    pub status: String,
}

/// Records whether the patient came (doctor or clinic admin).
#[utoipa::path(post, path = "/api/v1/appointments/{id}/outcome", tag = "appointments",
    request_body = OutcomeIn, security(("bearer" = [])),
    responses((status = 200, body = AppointmentOut), (status = 403, body = crate::error::Problem)))]
pub async fn record_outcome(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
    body: web::Json<OutcomeIn>,
) -> Result<HttpResponse, ApiError> {
    let a = visible_appointment(
        &state,
        &user,
        &audit,
        Action::AppointmentOutcome,
        appointment_id(&path)?,
    )
    .await?;
    if user.role == Role::Patient {
        return Err(ApiError::forbidden(
            "only the doctor or a clinic admin records outcomes",
        ));
    }
    let status = match body.status.as_str() {
        "completed" => AppointmentStatus::Completed,
        "no_show" => AppointmentStatus::NoShow,
        _ => {
            return Err(ApiError::unprocessable(
                "invalid_status",
                "status must be completed or no_show",
            ));
        }
    };
    let done = state
        .calendars
        .ask(
            a.doctor_id,
            RecordOutcome {
                id: a.id,
                status,
                by: user.id,
                audit: Some(audit.note(&user, Action::AppointmentOutcome)),
            },
        )
        .await?;
    audit.committed();
    Ok(HttpResponse::Ok().json(AppointmentOut::from(done)))
}

/// `POST /api/v1/holds` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct HoldIn {
    /// Doctor.
    #[schema(format = Uuid)]
    pub doctor_id: String,
    /// Visit start, RFC 3339.
    #[schema(format = DateTime)]
    pub start: String,
    /// Visit type (default: the doctor's default).
    #[schema(format = Uuid)]
    pub visit_type_id: Option<String>,
}

/// Holds a slot for a few minutes (`calendar.hold_ttl_secs`) while the
/// patient confirms. The hold lapses by itself.
#[utoipa::path(post, path = "/api/v1/holds", tag = "holds", request_body = HoldIn,
    security(("bearer" = [])),
    responses((status = 201, body = AppointmentOut, description = "status held, with hold_expires_at"),
        (status = 409, body = crate::error::Problem)))]
pub async fn create_hold(
    state: State,
    user: AuthUser,
    audit: Audit,
    body: web::Json<HoldIn>,
) -> Result<HttpResponse, ApiError> {
    require_patient(&user)?;
    let doctor = DoctorId::parse(&body.doctor_id)?;
    let start = parse_instant("start", &body.start)?;
    let visit_type = body
        .visit_type_id
        .as_deref()
        .map(VisitTypeId::parse)
        .transpose()?;
    // No hoarding: a patient holds only a few slots at a time. The store
    // enforces the cap in the hold's own transaction (the arbiter, whatever
    // node takes the request: see `WriteOp::Insert::max_live_holds`). This
    // count under the patient's gate is the fast path: it answers most
    // refusals without a trip through a calendar, and keeps this node's
    // parallel requests from racing each other to the store.
    let _gate = hold_gate(user.id).await;
    let cap = state.settings.security.max_holds_per_patient;
    let now = chrono::Utc::now();
    let holding = state
        .store
        .patient_appointments(user.id)
        .await?
        .iter()
        .filter(|a| {
            a.status == AppointmentStatus::Held && a.hold_expires_at.is_some_and(|t| t > now)
        })
        .count();
    if holding >= cap {
        return Err(ApiError::conflict(
            "too_many_holds",
            format!(
                "you already hold {holding} slots; confirm or release one first (at most {cap})"
            ),
        ));
    }
    let a = state
        .calendars
        .ask(
            doctor,
            Claim {
                id: AppointmentId::new(),
                patient: user.id,
                visit_type,
                start,
                hold: true,
                idempotency_key: None,
                max_live_holds: Some(u32::try_from(cap).unwrap_or(u32::MAX)),
                audit: Some(audit.note(&user, Action::AppointmentHold)),
            },
        )
        .await?;
    audit.committed();
    Ok(HttpResponse::Created().json(AppointmentOut::from(a)))
}

/// Serializes one patient's hold requests on this node.
///
/// Why a fixed set of striped locks rather than one lock per patient: the
/// memory stays bounded whatever the number of patients, and two patients
/// sharing a stripe only wait for each other's short count-and-claim. The
/// gate is only a fast path: across nodes (and should a claim outlive its
/// request) the store's count in the hold's transaction decides.
async fn hold_gate(
    patient: docspot_actors::domain::UserId,
) -> tokio::sync::MutexGuard<'static, ()> {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    static STRIPES: std::sync::OnceLock<Vec<tokio::sync::Mutex<()>>> = std::sync::OnceLock::new();
    let stripes = STRIPES.get_or_init(|| (0..64).map(|_| tokio::sync::Mutex::new(())).collect());
    let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(patient.0) as usize;
    stripes[h % stripes.len()].lock().await
}

/// Turns a hold into a booking.
#[utoipa::path(post, path = "/api/v1/holds/{id}/confirm", tag = "holds", security(("bearer" = [])),
    responses((status = 200, body = AppointmentOut), (status = 410, body = crate::error::Problem, description = "hold_expired")))]
pub async fn confirm_hold(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let a = own_appointment(
        &state,
        &user,
        &audit,
        Action::AppointmentConfirm,
        appointment_id(&path)?,
    )
    .await?;
    let booked = state
        .calendars
        .ask(
            a.doctor_id,
            Confirm {
                hold_id: a.id,
                by: user.id,
                audit: Some(audit.note(&user, Action::AppointmentConfirm)),
            },
        )
        .await?;
    let unchanged = a.status == AppointmentStatus::Booked;
    settle_audit(&audit, &state, &user, &booked, unchanged).await?;
    Ok(HttpResponse::Ok().json(AppointmentOut::from(booked)))
}

/// Releases a hold before it lapses.
#[utoipa::path(delete, path = "/api/v1/holds/{id}", tag = "holds", security(("bearer" = [])),
    responses((status = 200, body = AppointmentOut)))]
pub async fn release_hold(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let a = own_appointment(
        &state,
        &user,
        &audit,
        Action::AppointmentCancel,
        appointment_id(&path)?,
    )
    .await?;
    if a.status != AppointmentStatus::Held {
        return Err(ApiError::conflict(
            "invalid_transition",
            format!("the appointment is {}", a.status),
        ));
    }
    let released = state
        .calendars
        .ask(
            a.doctor_id,
            Cancel {
                id: a.id,
                by: user.id,
                reason: Some("hold_released".into()),
                sealed_reason: None,
                enforce_cutoff: false,
                holds_only: true,
                audit: Some(audit.note(&user, Action::AppointmentCancel)),
            },
        )
        .await?;
    audit.committed();
    Ok(HttpResponse::Ok().json(AppointmentOut::from(released)))
}

/// `GET /api/v1/doctors/{id}/day` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DayQuery {
    /// Local date in the clinic's zone, `YYYY-MM-DD` (default: today).
    #[param(format = Date)]
    pub date: Option<String>,
}

/// A doctor's day (the doctor or a clinic admin): every appointment that day
/// in the clinic's time zone, by start.
#[utoipa::path(get, path = "/api/v1/doctors/{id}/day", tag = "doctors", params(DayQuery),
    security(("bearer" = [])), responses((status = 200, body = AppointmentsOut)))]
pub async fn doctor_day(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
    q: web::Query<DayQuery>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    let tz = parse_time_zone(&doctor.time_zone)?;
    let date = match &q.date {
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
            ApiError::unprocessable("invalid_date", format!("date: {d:?} is not YYYY-MM-DD"))
        })?,
        None => chrono::Utc::now().with_timezone(&tz).date_naive(),
    };
    if !(1900..=9999).contains(&chrono::Datelike::year(&date)) {
        return Err(ApiError::unprocessable(
            "invalid_date",
            "date must be between 1900 and 9999",
        ));
    }
    let midnight = |d: NaiveDate| {
        let local = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        docspot_actors::slots::local_to_utc(tz, local, false)
    };
    let next = date.succ_opt().unwrap_or(date);
    let range = TimeRange::new(midnight(date), midnight(next))?;
    audit
        .calendar(&user, Action::DoctorDayRead, doctor.id, doctor.clinic_id)
        .await?;
    let list = state.store.doctor_appointments(doctor.id, range).await?;
    let offset =
        chrono::Offset::fix(&tz.offset_from_utc_datetime(&range.start().naive_utc())).to_string();
    Ok(HttpResponse::Ok().json(json!({
        "doctor_id": doctor.id,
        "date": date,
        "time_zone": doctor.time_zone,
        "utc_offset_at_start": offset,
        "appointments": list.into_iter().map(AppointmentOut::from).collect::<Vec<_>>(),
    })))
}
