//! Operator drills: `POST /api/admin/faults` kills a core actor as a crash
//! would, so an operator (or a test) can watch the supervision tree start it
//! again. Off unless `supervision.fault_injection` is set; admins only.
//! `GET /api/admin/cluster`: which node holds which region, as this node
//! sees it (cluster mode).

use super::auth::Authenticated;
use super::error::JsonBody;
use super::{ApiError, AppState};
use actors::domain::model::Role;
use actors::engine::supervisor::CoreActor;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/faults", post(inject))
        .route("/admin/cluster", axum::routing::get(cluster))
}

async fn cluster(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    Ok(Json(match &state.cluster {
        Some(cluster) => {
            let mut status = serde_json::to_value(cluster.status())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            status["enabled"] = json!(true);
            status
        }
        None => json!({ "enabled": false }),
    }))
}

#[derive(Deserialize)]
struct FaultInput {
    actor: Option<String>,
}

async fn inject(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<FaultInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !state.settings.supervision.fault_injection {
        return Err(ApiError::NotFound("route"));
    }
    who.require(&[Role::Admin])?;
    let names: Vec<&str> = CoreActor::ALL.iter().map(|a| a.as_str()).collect();
    let actor = input
        .actor
        .as_deref()
        .and_then(CoreActor::parse)
        .ok_or_else(|| ApiError::field("actor", format!("must be one of {}", names.join(", "))))?;
    if !state.engine.fail(actor) {
        return Err(ApiError::InvalidTransition(format!(
            "{} is not running",
            actor.as_str()
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "killed": actor.as_str() })),
    ))
}
