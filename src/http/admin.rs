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
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(inject))
        .routes(routes!(cluster))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterView {
    enabled: bool,
    #[serde(flatten)]
    status: Option<crate::cluster::ClusterStatus>,
}

/// Whether cluster mode is on and, when it is, who holds each region.
/// `ClusterView`'s shape, spelled out: utoipa turns a flattened `Option`
/// into an `allOf` with `null`, which `{"enabled": false}` does not match
/// (schemathesis found it).
#[derive(utoipa::ToSchema)]
#[schema(as = ClusterView)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // a schema only
struct ClusterViewSchema {
    enabled: bool,
    /// With cluster mode on only, as the two below.
    node_id: Option<String>,
    nodes: Option<Vec<String>>,
    regions: Option<Vec<crate::cluster::RegionStatus>>,
}

/// The cluster as this node sees it: its id, the live nodes, and each
/// region's holder (admins).
#[utoipa::path(get, path = "/admin/cluster", tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ClusterViewSchema),
        (status = 401, description = "UNAUTHORIZED: no or bad token"),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn cluster(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<ClusterView>, ApiError> {
    who.require(&[Role::Admin])?;
    Ok(Json(ClusterView {
        enabled: state.cluster.is_some(),
        status: state.cluster.as_ref().map(|cluster| cluster.status()),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
struct FaultInput {
    /// A core actor's name (`CoreActor::ALL`).
    #[schema(value_type = String, required = true)]
    actor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Killed {
    killed: &'static str,
}

/// Kills a core actor, for drills (admins; 404 unless
/// `supervision.fault_injection` is on).
#[utoipa::path(post, path = "/admin/faults", tag = "admin",
    security(("bearer" = [])),
    request_body = FaultInput,
    responses(
        (status = 202, body = Killed),
        (status = 403, description = "FORBIDDEN: admins only"),
        (status = 404, description = "NOT_FOUND: fault injection is off"),
        (status = 409, description = "INVALID_TRANSITION: the actor is not running"),
    ))]
async fn inject(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<FaultInput>,
) -> Result<(StatusCode, Json<Killed>), ApiError> {
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
        Json(Killed {
            killed: actor.as_str(),
        }),
    ))
}
