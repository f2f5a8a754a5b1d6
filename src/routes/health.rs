//! Liveness and readiness.

use actix_web::{HttpResponse, http::StatusCode};
use serde_json::json;

use super::State;

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness: the database answers. 503 when it does not.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "ready"), (status = 503, description = "database unreachable")))]
pub async fn readyz(state: State) -> HttpResponse {
    let db = state.store.ping().await;
    let status = if db.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    HttpResponse::build(status).json(json!({
        "status": if db.is_ok() { "ready" } else { "degraded" },
        "checks": {
            "database": match &db { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
            "calendars_running": state.calendars.running(),
            "cross_node_push": state.bus.health.describe(),
        }
    }))
}
