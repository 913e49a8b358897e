//! Liveness, readiness and the Prometheus scrape endpoint.

use super::{ApiError, AppState};
use actors::domain::input::FieldError;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::time::Duration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready while the store answers and every core actor runs; bounded so a
/// hung store reads as not ready rather than as a hung probe. Not ready is
/// a 503 in the contract's error shape.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let health = state.engine.health();
    if !health.is_ready() {
        let mut details: Vec<FieldError> = health
            .down
            .iter()
            .map(|actor| FieldError {
                field: format!("actors.{}", actor.as_str()),
                message: "not running (restarting)".into(),
            })
            .collect();
        if health.recovering {
            details.push(FieldError {
                field: "orders".into(),
                message: "live orders are being read back from the store".into(),
            });
        }
        tracing::warn!(?health, "Not ready: engine");
        return Err(ApiError::EngineUnavailable(details));
    }
    let timeout = Duration::from_millis(state.settings.database.acquire_timeout_ms + 1000);
    match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({ "status": "ready" }))),
        Ok(Err(error)) => {
            tracing::warn!(%error, "Not ready: store unavailable");
            Err(ApiError::StoreUnavailable)
        }
        Err(_) => {
            tracing::warn!("Not ready: store did not answer in time");
            Err(ApiError::StoreUnavailable)
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}
