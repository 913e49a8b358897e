//! Drivers over REST: the location fallback, availability, the admin's
//! `nearby`, and answering offers.

use super::auth::Authenticated;
use super::error::{JsonBody, QueryParams, ValidBody, path_id};
use super::{ApiError, AppState};
use actors::domain::input::LocationInput;
use actors::domain::model::{Order, Role};
use actors::engine::dispatcher::OfferError;
use actors::engine::driver::DriverError;
use actors::metrics as m;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Instant;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/drivers/location", post(location))
        .route("/drivers/me/availability", put(availability))
        .route("/drivers/nearby", get(nearby))
        .route("/drivers/pending", get(pending))
        .route("/drivers/{id}/approve", post(approve))
        .route("/offers/{id}/accept", post(accept))
        .route("/offers/{id}/decline", post(decline))
}

impl From<DriverError> for ApiError {
    fn from(error: DriverError) -> ApiError {
        match error {
            // Only ever the caller's own driver row: its account is gone.
            DriverError::NotFound => ApiError::Unauthorized,
            DriverError::Pending => {
                ApiError::Forbidden("this driver is waiting for an admin's approval".into())
            }
            DriverError::Store(error) => error.into(),
            DriverError::Unavailable => ApiError::Internal("driver actor did not start".into()),
        }
    }
}

#[derive(Serialize)]
struct PendingList {
    drivers: Vec<actors::domain::model::Driver>,
}

/// Self-registered drivers waiting for approval, oldest first (admins).
async fn pending(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<PendingList>, ApiError> {
    who.require(&[Role::Admin])?;
    let drivers = state.store.pending_drivers(200).await?;
    Ok(Json(PendingList { drivers }))
}

/// An admin puts a driver on duty: from now on it may go online and be
/// offered orders. Approving twice is harmless.
async fn approve(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let admin = who.require(&[Role::Admin])?.user_id;
    let driver_id = path_id(&id, "driver")?;
    if !state
        .store
        .approve_driver(driver_id, chrono::Utc::now())
        .await?
    {
        return Err(ApiError::NotFound("driver"));
    }
    metrics::counter!(m::DRIVERS_APPROVED_TOTAL).increment(1);
    tracing::info!(driver_id, admin, "Driver approved");
    Ok(Json(json!({ "driverId": driver_id, "approved": true })))
}

async fn location(
    State(state): State<AppState>,
    who: Authenticated,
    ValidBody { parsed, .. }: ValidBody<LocationInput>,
) -> Result<Json<Value>, ApiError> {
    let driver_id = who.require(&[Role::Driver])?.user_id;
    let fix = parsed?;
    if state.location_limiter.check_key(&driver_id).is_err() {
        metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => "location").increment(1);
        return Err(ApiError::RateLimited);
    }
    let received_at = Instant::now();
    let driver = state.engine.drivers().open(driver_id).await?;
    metrics::counter!(m::LOCATION_UPDATES_TOTAL, "source" => "http").increment(1);
    if let Some(zones) = &state.zones {
        zones.observe_driver(driver_id, fix.at);
    }
    if !driver.located(fix, received_at) {
        return Err(DriverError::Unavailable.into());
    }
    Ok(Json(json!({ "ok": true })))
}

#[derive(Deserialize)]
struct AvailabilityInput {
    available: Option<bool>,
}

async fn availability(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<AvailabilityInput>,
) -> Result<Json<Value>, ApiError> {
    let driver_id = who.require(&[Role::Driver])?.user_id;
    let available = input
        .available
        .ok_or_else(|| ApiError::field("available", "is required"))?;
    state.engine.drivers().open(driver_id).await?;
    let setting = state
        .engine
        .drivers()
        .set_availability(driver_id, available)
        .await
        .map_err(|error| match error {
            DriverError::Store(error) => error.into(),
            DriverError::NotFound => ApiError::NotFound("driver"),
            DriverError::Pending => {
                ApiError::Forbidden("this driver is waiting for an admin's approval".into())
            }
            DriverError::Unavailable => ApiError::Internal("driver actor did not answer".into()),
        })?;
    Ok(Json(json!({ "available": setting })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NearbyQuery {
    lat: Option<f64>,
    lon: Option<f64>,
    radius_km: Option<f64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NearbyDriver {
    id: i64,
    distance_km: f64,
    lat: f64,
    lon: f64,
    active_orders: u32,
    available: bool,
}

async fn nearby(
    State(state): State<AppState>,
    who: Authenticated,
    QueryParams(q, mut p): QueryParams<NearbyQuery>,
) -> Result<Json<Value>, ApiError> {
    who.require(&[Role::Admin])?;
    let at = p.lat_lon("", q.lat, q.lon);
    let radius_km = p.number("radiusKm", q.radius_km.or(Some(5.0)), 0.01, 100.0);
    let limit = p.int("limit", q.limit.or(Some(20)), 1, 500) as usize;
    p.finish(|| ())?;
    let found = state
        .engine
        .geo()
        .within(at, radius_km, limit)
        .await
        .ok_or_else(|| ApiError::Internal("geo index did not answer".into()))?;
    let drivers: Vec<NearbyDriver> = found
        .into_iter()
        .map(|n| NearbyDriver {
            id: n.entry.id,
            distance_km: (n.distance_km * 1000.0).round() / 1000.0,
            lat: n.entry.at.lat,
            lon: n.entry.at.lon,
            active_orders: n.entry.active_orders,
            available: n.entry.available,
        })
        .collect();
    Ok(Json(json!({ "drivers": drivers })))
}

fn offer_error(error: OfferError) -> ApiError {
    match error {
        OfferError::NotFound => ApiError::NotFound("offer"),
        OfferError::Expired => ApiError::InvalidTransition("the offer has expired".into()),
        OfferError::Taken => ApiError::InvalidTransition("the order is no longer available".into()),
        OfferError::Unavailable => ApiError::StoreUnavailable,
    }
}

#[derive(Serialize)]
struct OrderBody {
    order: Order,
}

async fn accept(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<OrderBody>, ApiError> {
    let driver_id = who.require(&[Role::Driver])?.user_id;
    let offer_id = path_id(&id, "offer")?;
    match state
        .engine
        .dispatch()
        .respond(offer_id, driver_id, true)
        .await
    {
        Ok(Some(order)) => Ok(Json(OrderBody { order })),
        Ok(None) => Err(ApiError::Internal(
            "accept answered without an order".into(),
        )),
        Err(error) => Err(offer_error(error)),
    }
}

async fn decline(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let driver_id = who.require(&[Role::Driver])?.user_id;
    let offer_id = path_id(&id, "offer")?;
    state
        .engine
        .dispatch()
        .respond(offer_id, driver_id, false)
        .await
        .map_err(offer_error)?;
    Ok(Json(json!({ "ok": true })))
}
