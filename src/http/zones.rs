//! Service zones: `POST/GET /api/zones`, `GET/DELETE /api/zones/{id}`
//! (admins), and `PUT /api/restaurants/{id}/zone` `{"zoneId": N | null}`,
//! which limits a restaurant's deliveries to a zone (admins).

use super::auth::Authenticated;
use super::error::{JsonBody, path_id};
use super::{ApiError, AppState};
use crate::zones::{ZoneRecord, Zones};
use actors::domain::model::Role;
use actors::domain::zone::parse_geojson;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

const MAX_ZONES: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/zones", post(create).get(list))
        .route("/zones/{id}", get(show).delete(remove))
        .route("/restaurants/{id}/zone", put(set_restaurant_zone))
        .route("/zones/{id}/contains", post(contains))
}

fn admin(state: &AppState, who: &Authenticated) -> Result<Zones, ApiError> {
    who.require(&[Role::Admin])?;
    state
        .zones
        .clone()
        .ok_or_else(|| ApiError::Internal("zones are not loaded".into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    name: Option<String>,
    geometry: Option<Value>,
}

async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<CreateInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let zones = admin(&state, &who)?;
    let mut problems = Vec::new();
    let name = input.name.unwrap_or_default().trim().to_string();
    if name.is_empty() || name.chars().count() > 100 {
        problems.push(actors::domain::input::FieldError {
            field: "name".into(),
            message: "must be 1..100 characters".into(),
        });
    }
    let geometry = input.geometry.unwrap_or(Value::Null);
    // Accept a Feature too: its geometry is the zone.
    let geometry = if geometry["type"] == "Feature" {
        geometry["geometry"].clone()
    } else {
        geometry
    };
    if let Err(errors) = parse_geojson("geometry", &geometry) {
        problems.extend(errors);
    }
    if !problems.is_empty() {
        return Err(ApiError::Validation(problems));
    }
    if zones.store().zones().await?.len() >= MAX_ZONES {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_ZONES} zones; delete one first"
        )));
    }
    let zone = zones.store().create_zone(&name, &geometry).await?;
    zones.reload().await?;
    Ok((StatusCode::CREATED, Json(json!({ "zone": zone }))))
}

async fn list(State(state): State<AppState>, who: Authenticated) -> Result<Json<Value>, ApiError> {
    let zones = admin(&state, &who)?;
    Ok(Json(json!({ "zones": zones.store().zones().await? })))
}

async fn find(zones: &Zones, raw: &str) -> Result<ZoneRecord, ApiError> {
    let id = path_id(raw, "zone")?;
    zones
        .store()
        .zones()
        .await?
        .into_iter()
        .find(|z| z.id == id)
        .ok_or(ApiError::NotFound("zone"))
}

async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let zones = admin(&state, &who)?;
    Ok(Json(json!({ "zone": find(&zones, &id).await? })))
}

async fn remove(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let zones = admin(&state, &who)?;
    let id = path_id(&id, "zone")?;
    if !zones.store().delete_zone(id).await? {
        return Err(ApiError::NotFound("zone"));
    }
    zones.reload().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestaurantZoneInput {
    zone_id: Option<i64>,
}

async fn set_restaurant_zone(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: input, .. }: JsonBody<RestaurantZoneInput>,
) -> Result<Json<Value>, ApiError> {
    let zones = admin(&state, &who)?;
    let restaurant_id = path_id(&id, "restaurant")?;
    if state.store.restaurant(restaurant_id).await?.is_none() {
        return Err(ApiError::NotFound("restaurant"));
    }
    if let Some(zone_id) = input.zone_id
        && !zones.store().zones().await?.iter().any(|z| z.id == zone_id)
    {
        return Err(ApiError::field("zoneId", "no such zone"));
    }
    zones
        .store()
        .set_restaurant_zone(restaurant_id, input.zone_id)
        .await?;
    zones.reload().await?;
    Ok(Json(
        json!({ "restaurantId": restaurant_id, "zoneId": input.zone_id }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointInput {
    lat: f64,
    lon: f64,
}

/// Whether a point is inside the zone (for operators drawing zones).
async fn contains(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: point, .. }: JsonBody<PointInput>,
) -> Result<Json<Value>, ApiError> {
    let zones = admin(&state, &who)?;
    let zone = find(&zones, &id).await?;
    let at = actors::domain::model::LatLon {
        lat: point.lat,
        lon: point.lon,
    };
    Ok(Json(
        json!({ "inside": zones.containing(at).contains(&zone.id) }),
    ))
}
