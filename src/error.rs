//! The one mapping from errors to HTTP: RFC 9457 problem details with a
//! stable `code` that clients can branch on.

use actix_web::{HttpResponse, ResponseError, http::StatusCode, http::header};
use docspot_actors::{
    BookingError,
    domain::{ParseError, Slot},
    store::StoreError,
};
use serde::Serialize;

use crate::store::DbError;

/// An error answered as `application/problem+json`.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    alternatives: Option<Vec<Slot>>,
    /// For 429: seconds until a retry can succeed (`Retry-After`).
    retry_after: Option<u64>,
}

/// The problem document (RFC 9457) with DocSpot's extension members.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI reference naming the problem type (`/problems/{code}`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What went wrong this time.
    pub detail: String,
    /// Stable machine-readable code, e.g. `slot_taken`.
    pub code: String,
    /// For `slot_taken`: the nearest free slots.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<crate::routes::SlotOut>>)]
    pub alternatives: Option<Vec<Slot>>,
}

impl ApiError {
    /// An error with a status, a stable code and a human explanation.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            alternatives: None,
            retry_after: None,
        }
    }

    /// 429 with `code` and a `Retry-After` of `retry_after_secs`.
    pub fn too_many_requests(
        code: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after_secs),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422 with `code`.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 with `code`.
    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// 409 with `code`.
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        // A server-side failure's detail is for the log (with the request
        // id of the tracing span), not for the client: it can name tables,
        // constraints and hosts. The client gets the stable code and a
        // plain sentence.
        let detail = if self.status.is_server_error() {
            tracing::error!(code = self.code, detail = %self.detail, "request failed");
            if self.status == StatusCode::SERVICE_UNAVAILABLE {
                "temporarily unavailable; try again shortly".to_string()
            } else {
                "internal error".to_string()
            }
        } else {
            self.detail.clone()
        };
        let body = Problem {
            type_: format!("/problems/{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail,
            code: self.code.to_string(),
            alternatives: self.alternatives.clone(),
        };
        let mut res = HttpResponse::build(self.status);
        res.content_type("application/problem+json");
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.insert_header((header::RETRY_AFTER, "1"));
        }
        if let Some(secs) = self.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        res.json(body)
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        let code = match e.what {
            "email" => "invalid_email",
            "password" => "invalid_password",
            "time zone" => "invalid_time_zone",
            "time range" => "invalid_range",
            _ => "invalid_input",
        };
        ApiError::unprocessable(code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.0)
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict("account") => {
                ApiError::conflict("email_taken", "an account with this e-mail already exists")
            }
            DbError::Conflict(what) => {
                ApiError::conflict("already_exists", format!("{what} already exists"))
            }
            DbError::Missing(what) => ApiError::not_found("not_found", format!("{what} not found")),
            DbError::Unavailable(e) => e.into(),
        }
    }
}

impl From<BookingError> for ApiError {
    fn from(e: BookingError) -> Self {
        let detail = e.to_string();
        match e {
            BookingError::DoctorNotFound => ApiError::not_found("doctor_not_found", detail),
            BookingError::UnknownVisitType => ApiError::unprocessable("unknown_visit_type", detail),
            BookingError::SlotNotOffered => ApiError::unprocessable("slot_not_offered", detail),
            BookingError::SlotTaken { alternatives } => ApiError {
                alternatives: Some(alternatives),
                ..ApiError::conflict("slot_taken", detail)
            },
            BookingError::AppointmentNotFound => {
                ApiError::not_found("appointment_not_found", detail)
            }
            BookingError::InvalidTransition(_) => ApiError::conflict("invalid_transition", detail),
            BookingError::CutoffPassed => ApiError::conflict("cancellation_cutoff", detail),
            BookingError::NotStarted => ApiError::conflict("not_started", detail),
            BookingError::HoldExpired => ApiError::new(StatusCode::GONE, "hold_expired", detail),
            BookingError::Busy => ApiError::conflict("appointment_busy", detail),
            BookingError::TooManyHolds(_) => ApiError::conflict("too_many_holds", detail),
            BookingError::Unavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "calendar_unavailable",
                detail,
            ),
        }
    }
}

/// Turns extractor failures (bad JSON, query, path or form) into problems.
pub fn json_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as E;
    match &err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            err.to_string(),
        ),
        E::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        _ => ApiError::bad_request("invalid_json", err.to_string()),
    }
    .into()
}

/// Query-string failures.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}

/// Path-segment failures.
pub fn path_error(
    err: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::not_found("not_found", err.to_string()).into()
}

/// Form-body failures.
pub fn form_error(
    err: actix_web::error::UrlencodedError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_form", err.to_string()).into()
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body(e: &ApiError) -> serde_json::Value {
        let bytes = e.error_response().into_body().try_into_bytes().unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn server_failures_keep_their_detail_out_of_the_response() {
        let e: ApiError = StoreError(
            "db error: ERROR 23514: new row for relation \"users\" violates check constraint"
                .into(),
        )
        .into();
        let b = body(&e);
        assert_eq!(b["status"], 503);
        assert_eq!(b["code"], "store_unavailable");
        assert!(!b.to_string().contains("users"), "{b}");
        // Client mistakes keep theirs: it tells them what to fix.
        let b = body(&ApiError::unprocessable(
            "invalid_range",
            "from must be before to",
        ));
        assert_eq!(b["detail"], "from must be before to");
    }
}
