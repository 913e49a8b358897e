//! Liveness, readiness and the Prometheus scrape endpoint.

use super::{ApiError, AppState};
use actors::domain::input::FieldError;
use actors::domain::model::Role;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use serde::Serialize;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

#[derive(Serialize, utoipa::ToSchema)]
struct Status {
    /// `ok` (alive) or `ready`.
    status: &'static str,
}

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Status)))]
async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Ready while the store answers and every core actor runs; bounded so a
/// hung store reads as not ready rather than as a hung probe. Not ready is
/// a 503 in the contract's error shape.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, body = Status),
        (status = 503, description = "ENGINE_UNAVAILABLE (details name the actors down), STORE_UNAVAILABLE"),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
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
    if let Some(Err(reason)) = state.cluster.as_ref().map(|c| c.readiness()) {
        tracing::warn!(%reason, "Not ready: cluster");
        return Err(ApiError::EngineUnavailable(vec![FieldError {
            field: "cluster".into(),
            message: reason,
        }]));
    }
    let timeout = Duration::from_millis(state.settings.database.acquire_timeout_ms + 1000);
    match tokio::time::timeout(timeout, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(Status { status: "ready" })),
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

/// The scrape, for operators only: the bearer is either `metrics.token`
/// (what Prometheus sends, `authorization: { credentials: ... }` in its
/// scrape config) or an admin's token (the console).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security(("bearer" = [])),
    responses(
        (status = 200, content_type = "text/plain", body = String,
         description = "The Prometheus text exposition format"),
        (status = 403, description = "FORBIDDEN: neither the scrape token nor an admin"),
    ))]
async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let bearer = super::auth::bearer(&headers).ok_or(ApiError::Unauthorized)?;
    let scraper = &state.settings.metrics.token;
    let is_scraper = !scraper.is_empty() && same_secret(bearer, scraper);
    if !is_scraper {
        let caller = state.tokens.verify(bearer).ok_or(ApiError::Unauthorized)?;
        if caller.role != Role::Admin {
            return Err(ApiError::Forbidden(
                "only operators may read metrics".into(),
            ));
        }
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    ))
}

/// Compares digests, so the time taken says nothing about how much of the
/// secret a guess got right.
fn same_secret(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}
