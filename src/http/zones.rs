//! Service zones: `POST/GET /api/zones`, `GET/DELETE /api/zones/{id}`
//! (admins), and `PUT /api/restaurants/{id}/zone` `{"zoneId": N | null}`,
//! which limits a restaurant's deliveries to a zone (admins).

use super::auth::Authenticated;
use super::error::{JsonBody, path_id};
use super::{ApiError, AppState};
use crate::zones::{ZoneRecord, Zones};
use actors::domain::model::Role;
use actors::domain::zone::parse_geojson;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

const MAX_ZONES: usize = 1000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, remove))
        .routes(routes!(set_restaurant_zone))
        .routes(routes!(contains))
}

#[derive(Serialize, utoipa::ToSchema)]
struct ZoneBody {
    zone: ZoneRecord,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ZoneList {
    zones: Vec<ZoneRecord>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct RestaurantZone {
    restaurant_id: i64,
    zone_id: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct Inside {
    inside: bool,
}

fn admin(state: &AppState, who: &Authenticated) -> Result<Zones, ApiError> {
    who.require(&[Role::Admin])?;
    state
        .zones
        .clone()
        .ok_or_else(|| ApiError::Internal("zones are not loaded".into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Downtown",
    "geometry": { "type": "Polygon", "coordinates": [[
        [-97.76, 30.25], [-97.72, 30.25], [-97.72, 30.29], [-97.76, 30.29], [-97.76, 30.25]
    ]] }
}))]
#[schema(as = NewZoneInput)]
struct CreateInput {
    #[schema(value_type = String, required = true, min_length = 1, max_length = 100)]
    name: Option<String>,
    /// A GeoJSON Polygon or MultiPolygon (or a Feature of one).
    #[schema(value_type = Object, required = true)]
    geometry: Option<Value>,
}

#[utoipa::path(post, path = "/zones", tag = "zones",
    security(("bearer" = [])),
    request_body = CreateInput,
    responses(
        (status = 201, body = ZoneBody),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<CreateInput>,
) -> Result<(StatusCode, Json<ZoneBody>), ApiError> {
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
    Ok((StatusCode::CREATED, Json(ZoneBody { zone })))
}

#[utoipa::path(get, path = "/zones", tag = "zones",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ZoneList),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn list(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<ZoneList>, ApiError> {
    let zones = admin(&state, &who)?;
    Ok(Json(ZoneList {
        zones: zones.store().zones().await?,
    }))
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

#[utoipa::path(get, path = "/zones/{id}", tag = "zones",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = ZoneBody),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<ZoneBody>, ApiError> {
    let zones = admin(&state, &who)?;
    Ok(Json(ZoneBody {
        zone: find(&zones, &id).await?,
    }))
}

#[utoipa::path(delete, path = "/zones/{id}", tag = "zones",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RestaurantZoneInput {
    /// Null: the restaurant delivers within its radius only.
    zone_id: Option<i64>,
}

/// Limits a restaurant's deliveries to a zone, or lifts the limit.
#[utoipa::path(put, path = "/restaurants/{id}/zone", tag = "zones",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = RestaurantZoneInput,
    responses(
        (status = 200, body = RestaurantZone),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn set_restaurant_zone(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: input, .. }: JsonBody<RestaurantZoneInput>,
) -> Result<Json<RestaurantZone>, ApiError> {
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
    Ok(Json(RestaurantZone {
        restaurant_id,
        zone_id: input.zone_id,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PointInput {
    lat: f64,
    lon: f64,
}

/// Whether a point is inside the zone (for operators drawing zones).
#[utoipa::path(post, path = "/zones/{id}/contains", tag = "zones",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = PointInput,
    responses(
        (status = 200, body = Inside),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn contains(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: point, .. }: JsonBody<PointInput>,
) -> Result<Json<Inside>, ApiError> {
    let zones = admin(&state, &who)?;
    let zone = find(&zones, &id).await?;
    let at = actors::domain::model::LatLon {
        lat: point.lat,
        lon: point.lon,
    };
    Ok(Json(Inside {
        inside: zones.containing(at).contains(&zone.id),
    }))
}
