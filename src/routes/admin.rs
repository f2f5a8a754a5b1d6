//! Clinic administration: clinics, doctors, doctor logins, visit types and
//! availability. Schedule changes tell the doctor's calendar to reload.

use actix_web::{HttpResponse, web};
use chrono::{NaiveDate, NaiveTime};
use docspot_actors::domain::{
    ClinicId, ExceptionKind, TimeRange, VisitTypeId, parse_time_zone, weekday_from_iso,
};
use serde::Deserialize;
use uuid::Uuid;

use super::{State, auth::parse_name, doctor_id, managed_doctor, parse_instant, require_admin};
use crate::{
    auth::{AuthUser, hash_password_blocking},
    domain::{Email, Password, Role},
    error::ApiError,
    routes::auth::AccountOut,
    store::{
        Clinic, ClinicFields, Doctor, DoctorFields, ExceptionRecord, NewUser, RuleRecord,
        VisitTypeRecord,
    },
};

/// Clinic fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ClinicIn {
    /// Name.
    pub name: String,
    /// Address.
    #[serde(default)]
    pub address: String,
    /// Latitude.
    pub latitude: Option<f64>,
    /// Longitude.
    pub longitude: Option<f64>,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Patient cancellation cut-off in minutes (default 1440).
    pub cancellation_cutoff_minutes: Option<i32>,
    /// Booking horizon in days (default 60).
    pub booking_horizon_days: Option<i32>,
}

impl ClinicIn {
    fn parse(self) -> Result<ClinicFields, ApiError> {
        parse_time_zone(&self.time_zone)?;
        if self.latitude.is_some_and(|l| !(-90.0..=90.0).contains(&l))
            || self
                .longitude
                .is_some_and(|l| !(-180.0..=180.0).contains(&l))
        {
            return Err(ApiError::unprocessable(
                "invalid_coordinates",
                "latitude must be within ±90 and longitude within ±180",
            ));
        }
        let cutoff = self.cancellation_cutoff_minutes.unwrap_or(1440);
        let horizon = self.booking_horizon_days.unwrap_or(60);
        if !(0..=525_600).contains(&cutoff) || !(1..=730).contains(&horizon) {
            return Err(ApiError::unprocessable(
                "invalid_policy",
                "cancellation_cutoff_minutes must be 0..525600 and booking_horizon_days 1..730",
            ));
        }
        Ok(ClinicFields {
            name: parse_name("name", &self.name)?,
            address: self.address.chars().take(500).collect(),
            latitude: self.latitude,
            longitude: self.longitude,
            time_zone: self.time_zone,
            cancellation_cutoff_minutes: cutoff,
            booking_horizon_days: horizon,
        })
    }
}

fn clinic_id(s: &str) -> Result<ClinicId, ApiError> {
    ClinicId::parse(s).map_err(|e| ApiError::not_found("clinic_not_found", e.to_string()))
}

/// Creates a clinic (platform admins only).
#[utoipa::path(post, path = "/api/v1/clinics", tag = "admin", request_body = ClinicIn,
    security(("bearer" = [])), responses((status = 201, body = Clinic)))]
pub async fn create_clinic(
    state: State,
    user: AuthUser,
    body: web::Json<ClinicIn>,
) -> Result<HttpResponse, ApiError> {
    if !user.is_platform_admin() {
        return Err(ApiError::forbidden("only a platform admin creates clinics"));
    }
    let c = state
        .store
        .create_clinic(body.into_inner().parse()?)
        .await?;
    Ok(HttpResponse::Created().json(c))
}

/// Clinic list. (Lists are wrapped in an object named after their items;
/// one typed struct serves both the answer and its OpenAPI schema, so the
/// two cannot drift apart.)
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ClinicsOut {
    /// Clinics.
    pub clinics: Vec<Clinic>,
}

/// Lists clinics (public).
#[utoipa::path(get, path = "/api/v1/clinics", tag = "admin", responses((status = 200, body = ClinicsOut)))]
pub async fn list_clinics(state: State) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(ClinicsOut {
        clinics: state.store.clinics().await?,
    }))
}

/// One clinic (public).
#[utoipa::path(get, path = "/api/v1/clinics/{id}", tag = "admin", responses((status = 200, body = Clinic)))]
pub async fn get_clinic(state: State, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let c = state
        .store
        .clinic(clinic_id(&path)?)
        .await?
        .ok_or_else(|| ApiError::not_found("clinic_not_found", "clinic not found"))?;
    Ok(HttpResponse::Ok().json(c))
}

/// Changes a clinic (its admins).
#[utoipa::path(put, path = "/api/v1/clinics/{id}", tag = "admin", request_body = ClinicIn,
    security(("bearer" = [])), responses((status = 200, body = Clinic)))]
pub async fn update_clinic(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<ClinicIn>,
) -> Result<HttpResponse, ApiError> {
    let id = clinic_id(&path)?;
    require_admin(&user, id)?;
    let c = state
        .store
        .update_clinic(id, body.into_inner().parse()?)
        .await?;
    // Time zone, cut-off and horizon feed every calendar of the clinic.
    for d in state.store.doctors(Some(id), None).await? {
        state.calendars.schedule_changed(d.id);
    }
    Ok(HttpResponse::Ok().json(c))
}

/// Doctor fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DoctorIn {
    /// Name.
    pub name: String,
    /// Specialties.
    #[serde(default)]
    pub specialties: Vec<String>,
    /// Languages (BCP 47).
    #[serde(default)]
    pub languages: Vec<String>,
    /// Takes bookings (default true).
    pub active: Option<bool>,
}

impl DoctorIn {
    fn parse(self) -> Result<DoctorFields, ApiError> {
        let clean = |v: Vec<String>| -> Result<Vec<String>, ApiError> {
            if v.len() > 20 || v.iter().any(|s| s.trim().is_empty() || s.len() > 100) {
                return Err(ApiError::unprocessable(
                    "invalid_list",
                    "at most 20 entries of 1 to 100 characters",
                ));
            }
            Ok(v.into_iter().map(|s| s.trim().to_string()).collect())
        };
        Ok(DoctorFields {
            name: parse_name("name", &self.name)?,
            specialties: clean(self.specialties)?,
            languages: clean(self.languages)?,
            active: self.active.unwrap_or(true),
        })
    }
}

/// Adds a doctor to a clinic (its admins).
#[utoipa::path(post, path = "/api/v1/clinics/{id}/doctors", tag = "admin", request_body = DoctorIn,
    security(("bearer" = [])), responses((status = 201, body = Doctor)))]
pub async fn create_doctor(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<DoctorIn>,
) -> Result<HttpResponse, ApiError> {
    let clinic = clinic_id(&path)?;
    require_admin(&user, clinic)?;
    let d = state
        .store
        .create_doctor(clinic, body.into_inner().parse()?)
        .await?;
    Ok(HttpResponse::Created().json(d))
}

/// Changes a doctor (admins of their clinic).
#[utoipa::path(put, path = "/api/v1/doctors/{id}", tag = "admin", request_body = DoctorIn,
    security(("bearer" = [])), responses((status = 200, body = Doctor)))]
pub async fn update_doctor(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<DoctorIn>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    require_admin(&user, doctor.clinic_id)?;
    let d = state
        .store
        .update_doctor(doctor.id, body.into_inner().parse()?)
        .await?;
    state.calendars.schedule_changed(d.id);
    Ok(HttpResponse::Ok().json(d))
}

/// A login for a doctor.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct AccountIn {
    /// Login e-mail.
    #[schema(format = Email)]
    pub email: String,
    /// 8 to 1024 characters.
    pub password: String,
    /// Display name.
    pub name: String,
}

/// Creates the doctor's login (admins of their clinic).
#[utoipa::path(post, path = "/api/v1/doctors/{id}/account", tag = "admin", request_body = AccountIn,
    security(("bearer" = [])), responses((status = 201, body = AccountOut)))]
pub async fn create_doctor_account(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<AccountIn>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    require_admin(&user, doctor.clinic_id)?;
    let body = body.into_inner();
    let email = Email::parse(&body.email)?;
    let password = Password::parse(&body.password)?;
    let name = parse_name("name", &body.name)?;
    let password_hash = hash_password_blocking(password.expose().to_string()).await?;
    let account = state
        .store
        .create_user(NewUser {
            email,
            name,
            role: Role::Doctor,
            doctor_id: Some(doctor.id),
            clinic_id: Some(doctor.clinic_id),
            password_hash,
        })
        .await?;
    Ok(HttpResponse::Created().json(AccountOut::from(account)))
}

/// Visit type fields.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct VisitTypeIn {
    /// Name.
    pub name: String,
    /// Length, 5 to 480 minutes.
    pub duration_minutes: i32,
    /// Buffer before, 0 to 240 minutes.
    #[serde(default)]
    pub buffer_before_minutes: i32,
    /// Buffer after, 0 to 240 minutes.
    #[serde(default)]
    pub buffer_after_minutes: i32,
    /// Fee in minor units.
    #[serde(default)]
    pub fee_cents: i64,
    /// ISO 4217 code (default USD).
    pub currency: Option<String>,
    /// Make it the default.
    #[serde(default)]
    pub is_default: bool,
}

/// Adds a visit type (the doctor or an admin).
#[utoipa::path(post, path = "/api/v1/doctors/{id}/visit-types", tag = "admin", request_body = VisitTypeIn,
    security(("bearer" = [])), responses((status = 201, body = VisitTypeRecord)))]
pub async fn create_visit_type(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<VisitTypeIn>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    let b = body.into_inner();
    if !(5..=480).contains(&b.duration_minutes)
        || !(0..=240).contains(&b.buffer_before_minutes)
        || !(0..=240).contains(&b.buffer_after_minutes)
        || b.fee_cents < 0
    {
        return Err(ApiError::unprocessable(
            "invalid_visit_type",
            "duration 5..480 minutes, buffers 0..240 minutes, fee ≥ 0",
        ));
    }
    let currency = b.currency.unwrap_or_else(|| "USD".into()).to_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err(ApiError::unprocessable(
            "invalid_currency",
            "currency must be an ISO 4217 code such as EUR",
        ));
    }
    let v = state
        .store
        .create_visit_type(
            doctor.id,
            VisitTypeRecord {
                id: VisitTypeId::new(),
                doctor_id: doctor.id,
                name: parse_name("name", &b.name)?,
                duration_minutes: b.duration_minutes,
                buffer_before_minutes: b.buffer_before_minutes,
                buffer_after_minutes: b.buffer_after_minutes,
                fee_cents: b.fee_cents,
                currency,
                is_default: b.is_default,
            },
        )
        .await?;
    state.calendars.schedule_changed(doctor.id);
    Ok(HttpResponse::Created().json(v))
}

/// A weekly rule.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RuleIn {
    /// ISO weekday, 1 = Monday … 7 = Sunday.
    pub weekday: i16,
    /// Local start, `HH:MM`.
    pub start_time: String,
    /// Local end, `HH:MM`; at or before start means the next day.
    pub end_time: String,
    /// First date (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub valid_from: Option<String>,
    /// Last date (`YYYY-MM-DD`).
    #[schema(format = Date)]
    pub valid_until: Option<String>,
}

fn parse_time(field: &str, s: &str) -> Result<NaiveTime, ApiError> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .map_err(|_| {
            ApiError::unprocessable("invalid_time", format!("{field}: {s:?} is not HH:MM"))
        })
}

fn parse_date(field: &str, s: &Option<String>) -> Result<Option<NaiveDate>, ApiError> {
    s.as_deref()
        .map(|d| {
            NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                ApiError::unprocessable("invalid_date", format!("{field}: {d:?} is not YYYY-MM-DD"))
            })
        })
        .transpose()
}

/// A doctor's weekly rules.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct RulesOut {
    /// Rules.
    pub rules: Vec<RuleRecord>,
}

/// The doctor's weekly rules.
#[utoipa::path(get, path = "/api/v1/doctors/{id}/rules", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = RulesOut)))]
pub async fn list_rules(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    Ok(HttpResponse::Ok().json(RulesOut {
        rules: state.store.rules(doctor.id).await?,
    }))
}

/// Adds a weekly rule.
#[utoipa::path(post, path = "/api/v1/doctors/{id}/rules", tag = "admin", request_body = RuleIn,
    security(("bearer" = [])), responses((status = 201, body = RuleRecord)))]
pub async fn create_rule(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<RuleIn>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    weekday_from_iso(body.weekday)?;
    let start_time = parse_time("start_time", &body.start_time)?;
    let end_time = parse_time("end_time", &body.end_time)?;
    let valid_from = parse_date("valid_from", &body.valid_from)?;
    let valid_until = parse_date("valid_until", &body.valid_until)?;
    if let (Some(a), Some(b)) = (valid_from, valid_until)
        && b < a
    {
        return Err(ApiError::unprocessable(
            "invalid_range",
            "valid_until is before valid_from",
        ));
    }
    let r = state
        .store
        .create_rule(
            doctor.id,
            RuleRecord {
                id: Uuid::now_v7(),
                weekday: body.weekday,
                start_time,
                end_time,
                valid_from,
                valid_until,
            },
        )
        .await?;
    state.calendars.schedule_changed(doctor.id);
    Ok(HttpResponse::Created().json(r))
}

/// Removes a weekly rule.
#[utoipa::path(delete, path = "/api/v1/doctors/{id}/rules/{rule_id}", tag = "admin",
    security(("bearer" = [])), responses((status = 204)))]
pub async fn delete_rule(
    state: State,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path.0)?).await?;
    let id = Uuid::parse_str(&path.1)
        .map_err(|_| ApiError::not_found("rule_not_found", "rule not found"))?;
    if !state.store.delete_rule(doctor.id, id).await? {
        return Err(ApiError::not_found("rule_not_found", "rule not found"));
    }
    state.calendars.schedule_changed(doctor.id);
    Ok(HttpResponse::NoContent().finish())
}

/// An exception.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ExceptionIn {
    /// `time_off` or `extra_hours`.
    pub kind: String,
    /// Start, RFC 3339.
    #[schema(format = DateTime)]
    pub start: String,
    /// End, RFC 3339.
    #[schema(format = DateTime)]
    pub end: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A doctor's exceptions.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ExceptionsOut {
    /// Exceptions.
    pub exceptions: Vec<ExceptionRecord>,
}

/// The doctor's current and future exceptions.
#[utoipa::path(get, path = "/api/v1/doctors/{id}/exceptions", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = ExceptionsOut)))]
pub async fn list_exceptions(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    let since = chrono::Utc::now() - chrono::Duration::days(1);
    Ok(HttpResponse::Ok().json(ExceptionsOut {
        exceptions: state.store.exceptions(doctor.id, since).await?,
    }))
}

/// Adds time off or extra hours.
#[utoipa::path(post, path = "/api/v1/doctors/{id}/exceptions", tag = "admin", request_body = ExceptionIn,
    security(("bearer" = [])), responses((status = 201, body = ExceptionRecord)))]
pub async fn create_exception(
    state: State,
    user: AuthUser,
    path: web::Path<String>,
    body: web::Json<ExceptionIn>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path)?).await?;
    let kind: ExceptionKind = body.kind.parse()?;
    let range = TimeRange::new(
        parse_instant("start", &body.start)?,
        parse_instant("end", &body.end)?,
    )?;
    if range.duration() > chrono::Duration::days(366) {
        return Err(ApiError::unprocessable(
            "range_too_long",
            "an exception spans at most 366 days",
        ));
    }
    let e = state
        .store
        .create_exception(
            doctor.id,
            ExceptionRecord {
                id: Uuid::now_v7(),
                kind,
                start: range.start(),
                end: range.end(),
                reason: body.reason.chars().take(500).collect(),
            },
        )
        .await?;
    state.calendars.schedule_changed(doctor.id);
    Ok(HttpResponse::Created().json(e))
}

/// Removes an exception.
#[utoipa::path(delete, path = "/api/v1/doctors/{id}/exceptions/{exception_id}", tag = "admin",
    security(("bearer" = [])), responses((status = 204)))]
pub async fn delete_exception(
    state: State,
    user: AuthUser,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let doctor = managed_doctor(&state, &user, doctor_id(&path.0)?).await?;
    let id = Uuid::parse_str(&path.1)
        .map_err(|_| ApiError::not_found("exception_not_found", "exception not found"))?;
    if !state.store.delete_exception(doctor.id, id).await? {
        return Err(ApiError::not_found(
            "exception_not_found",
            "exception not found",
        ));
    }
    state.calendars.schedule_changed(doctor.id);
    Ok(HttpResponse::NoContent().finish())
}
