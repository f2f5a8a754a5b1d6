//! `GET /api/v1/doctors/{id}/suggestions`: free slots, best first, for the
//! signed-in patient.

use actix_web::{HttpResponse, web};
use chrono::{DateTime, Duration, Utc};
use docspot_actors::{
    calendar::FreeSlots,
    domain::{TimeRange, VisitTypeId, parse_time_zone},
};
use docspot_ml::{RankQuery, rank_earliest_first};
use serde::{Deserialize, Serialize};

use super::{State, parse_instant};
use crate::{
    audit::{Action, Audit},
    auth::AuthUser,
    domain::Role,
    error::ApiError,
    suggest::{has_outcome, past_appointment},
};

/// Query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct SuggestQuery {
    /// Range start, RFC 3339 (default now).
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// Range end, RFC 3339 (default from + 14 days).
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// Visit type (default: the doctor's default).
    #[param(format = Uuid)]
    pub visit_type: Option<String>,
    /// How many suggestions (1–100, default 5).
    pub limit: Option<usize>,
}

/// One suggested slot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// Visit start.
    pub start: DateTime<Utc>,
    /// Visit end.
    pub end: DateTime<Utc>,
    /// Higher is better (model: P(pick) × P(show)).
    pub score: f64,
    /// Estimated probability the patient attends (model only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub show_probability: Option<f64>,
    /// Why, in a few words.
    pub reasons: Vec<String>,
}

/// Suggestions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SuggestionsOut {
    /// `model` or `earliest_first`.
    pub ranking: &'static str,
    /// Why earliest-first was used, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Best first.
    pub suggestions: Vec<Suggestion>,
}

/// Free slots ranked for the signed-in patient by how likely they are to take
/// the slot and turn up; earliest-first (and said so) without a model.
#[utoipa::path(get, path = "/api/v1/doctors/{id}/suggestions", tag = "doctors", params(SuggestQuery),
    security(("bearer" = [])),
    responses((status = 200, body = SuggestionsOut), (status = 404, body = crate::error::Problem),
        (status = 422, body = crate::error::Problem)))]
pub async fn suggestions(
    state: State,
    user: AuthUser,
    audit: Audit,
    path: web::Path<String>,
    q: web::Query<SuggestQuery>,
) -> Result<HttpResponse, ApiError> {
    let doctor_id = super::doctor_id(&path)?;
    let now = Utc::now();
    let from = q
        .from
        .as_deref()
        .map(|s| parse_instant("from", s))
        .transpose()?
        .unwrap_or(now);
    let to =
        q.to.as_deref()
            .map(|s| parse_instant("to", s))
            .transpose()?
            .unwrap_or(from + Duration::days(14));
    let range = super::booking::within_query_limit(&state, TimeRange::new(from, to)?)?;
    let limit = q.limit.unwrap_or(5);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::unprocessable(
            "invalid_limit",
            "limit must be 1 to 100",
        ));
    }
    let visit_type = q
        .visit_type
        .as_deref()
        .map(VisitTypeId::parse)
        .transpose()?;
    // The calendar's live view: a slot taken a moment ago is not offered.
    let free = state
        .calendars
        .ask(doctor_id, FreeSlots { visit_type, range })
        .await?;
    let doctor = state
        .store
        .doctor(doctor_id)
        .await?
        .ok_or_else(|| ApiError::not_found("doctor_not_found", "doctor not found"))?;
    let starts: Vec<DateTime<Utc>> = free.iter().map(|s| s.start).collect();
    let end_of = |start: DateTime<Utc>| {
        free.iter()
            .find(|s| s.start == start)
            .map_or(start, |s| s.end)
    };

    // Ranking reads the patient's visit history and the shown slots are
    // stored against them: a read of their data, recorded before it runs.
    if user.role == Role::Patient {
        audit.by_self(&user, Action::PatientRead).await?;
    }
    let (ranking, note, ranked) = match state.suggester.current() {
        Some(model) => {
            let history: Vec<_> = state
                .store
                .patient_appointments(user.id)
                .await?
                .iter()
                .filter(|a| has_outcome(a))
                .map(past_appointment)
                .collect();
            let tz = parse_time_zone(&doctor.time_zone)?;
            let doctor_key = doctor_id.to_string();
            let vt_key = visit_type.map(|v| v.to_string());
            let ranked = model.rank_query(&RankQuery {
                history: &history,
                candidates: &starts,
                now,
                tz,
                doctor_id: Some(&doctor_key),
                visit_type: vt_key.as_deref(),
            });
            ("model", None, ranked)
        }
        None => (
            "earliest_first",
            Some("no suggestion model has been trained yet (docspot train)".to_string()),
            rank_earliest_first(&starts),
        ),
    };
    let suggestions: Vec<Suggestion> = ranked
        .into_iter()
        .take(limit)
        .map(|r| Suggestion {
            start: r.start,
            end: end_of(r.start),
            score: r.score,
            show_probability: r.show_probability,
            reasons: r.reasons,
        })
        .collect();
    // Remember what was offered: a booking made from it later teaches the
    // preference model, and ranking quality can be measured on real history.
    let shown: Vec<DateTime<Utc>> = suggestions.iter().map(|s| s.start).collect();
    if !shown.is_empty()
        && let Err(e) = state
            .store
            .log_suggestions(user.id, doctor_id, &shown)
            .await
    {
        tracing::warn!(error = %e, "could not record shown suggestions");
    }
    Ok(HttpResponse::Ok().json(SuggestionsOut {
        ranking,
        note,
        suggestions,
    }))
}
