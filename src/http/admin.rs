//! Operator drills: `POST /api/admin/faults` kills a core actor as a crash
//! would, so an operator (or a test) can watch the supervision tree start it
//! again. Off unless `supervision.fault_injection` is set; admins only.

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
    Router::new().route("/admin/faults", post(inject))
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
