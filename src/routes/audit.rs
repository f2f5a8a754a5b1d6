//! `GET /api/v1/audit`: clinic admins read their clinic's audit entries.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::parse_instant;
use crate::{
    audit::{Action, Actor, Audit, AuditEntry, AuditFilter, NewEntry, Outcome},
    auth::AuthUser,
    domain::Role,
    error::ApiError,
};

/// Default page size.
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
const MAX_LIMIT: usize = 1000;

/// `GET /api/v1/audit` filters. All optional; entries come by seq.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only entries about this patient (UUID).
    pub patient_id: Option<String>,
    /// Only entries by this user (UUID).
    pub actor_id: Option<String>,
    /// Only this action, e.g. `appointment.cancel`.
    pub action: Option<String>,
    /// Only entries at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Only entries before this instant (RFC 3339).
    pub to: Option<String>,
    /// Page cursor: only entries after this seq (the previous page's
    /// `next_after_seq`).
    pub after_seq: Option<i64>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<usize>,
    /// Platform admins only: one clinic's entries (clinic admins always see
    /// just their own clinic's).
    pub clinic_id: Option<String>,
}

/// A page of audit entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Entries by seq.
    pub entries: Vec<AuditEntry>,
    /// Pass as `after_seq` for the next page; absent on the last page.
    pub next_after_seq: Option<i64>,
}

fn uuid_param(name: &str, v: &Option<String>) -> Result<Option<Uuid>, ApiError> {
    v.as_deref()
        .map(|s| {
            Uuid::parse_str(s).map_err(|_| {
                ApiError::unprocessable("invalid_filter", format!("{name}: {s:?} is not a UUID"))
            })
        })
        .transpose()
}

impl AuditQuery {
    /// Parses the filters; `scope` is the caller's clinic (None: every clinic).
    fn parse(&self, scope: Option<Uuid>) -> Result<AuditFilter, ApiError> {
        let action = self
            .action
            .as_deref()
            .map(|a| a.parse::<Action>())
            .transpose()
            .map_err(|e| ApiError::unprocessable("invalid_filter", e))?;
        let from = self
            .from
            .as_deref()
            .map(|s| parse_instant("from", s))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|s| parse_instant("to", s))
            .transpose()?;
        let after_seq = self.after_seq.unwrap_or(0);
        if after_seq < 0 {
            return Err(ApiError::unprocessable(
                "invalid_filter",
                "after_seq must not be negative",
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::unprocessable(
                "invalid_filter",
                format!("limit must be between 1 and {MAX_LIMIT}"),
            ));
        }
        let requested = uuid_param("clinic_id", &self.clinic_id)?;
        let clinic_id = match (scope, requested) {
            (Some(own), Some(asked)) if own != asked => {
                return Err(ApiError::forbidden(
                    "clinic admins read only their own clinic's audit log",
                ));
            }
            (Some(own), _) => Some(own),
            (None, asked) => asked,
        };
        Ok(AuditFilter {
            clinic_id,
            patient_id: uuid_param("patient_id", &self.patient_id)?,
            actor_id: uuid_param("actor_id", &self.actor_id)?,
            action,
            from,
            to,
            after_seq,
            limit,
        })
    }
}

/// The audit log of the caller's clinic (clinic admins only; a platform
/// admin sees every clinic). Reading it is itself recorded.
#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(AuditQuery),
    security(("bearer" = [])),
    responses((status = 200, body = AuditPage),
        (status = 403, body = crate::error::Problem, description = "not a clinic admin"),
        (status = 422, body = crate::error::Problem, description = "invalid_filter, invalid_time")))]
pub async fn audit_log(
    user: AuthUser,
    audit: Audit,
    q: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    if user.role != Role::ClinicAdmin {
        audit
            .record(NewEntry {
                outcome: Outcome::Denied,
                ..audit.entry(Actor::user(&user), Action::AuditRead)
            })
            .await?;
        return Err(ApiError::forbidden("only clinic admins read the audit log"));
    }
    let filter = q.parse(user.clinic_id.map(|c| c.0))?;
    // Chain the records of changes committed so far (they wait in the
    // outbox for a moment), so the page shows every committed change.
    audit.flush().await?;
    audit
        .record(NewEntry {
            clinic_id: filter.clinic_id,
            patient_id: filter.patient_id,
            ..audit.entry(Actor::user(&user), Action::AuditRead)
        })
        .await?;
    let limit = filter.limit;
    let entries = audit.store().query(filter).await?;
    let next_after_seq = if entries.len() == limit {
        entries.last().map(|e| e.seq)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(AuditPage {
        entries,
        next_after_seq,
    }))
}
