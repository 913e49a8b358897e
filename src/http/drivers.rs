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
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use std::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(location))
        .routes(routes!(availability))
        .routes(routes!(nearby))
        .routes(routes!(pending))
        .routes(routes!(approve))
        .routes(routes!(accept))
        .routes(routes!(decline))
}

/// `{"ok": true}`: done, nothing else to say.
#[derive(Serialize, utoipa::ToSchema)]
struct Done {
    ok: bool,
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

#[derive(Serialize, utoipa::ToSchema)]
struct PendingList {
    drivers: Vec<actors::domain::model::Driver>,
}

/// Self-registered drivers waiting for approval, oldest first (admins).
#[utoipa::path(get, path = "/drivers/pending", tag = "drivers",
    security(("bearer" = [])),
    responses(
        (status = 200, body = PendingList),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn pending(
    State(state): State<AppState>,
    who: Authenticated,
) -> Result<Json<PendingList>, ApiError> {
    who.require(&[Role::Admin])?;
    let drivers = state.store.pending_drivers(200).await?;
    Ok(Json(PendingList { drivers }))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct Approved {
    driver_id: i64,
    approved: bool,
}

/// An admin puts a driver on duty: from now on it may go online and be
/// offered orders. Approving twice is harmless.
#[utoipa::path(post, path = "/drivers/{id}/approve", tag = "drivers",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = Approved),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn approve(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Approved>, ApiError> {
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
    Ok(Json(Approved {
        driver_id,
        approved: true,
    }))
}

/// The driver's position, when the WebSocket is not open (drivers).
#[utoipa::path(post, path = "/drivers/location", tag = "drivers",
    security(("bearer" = [])),
    request_body = LocationInput,
    responses(
        (status = 200, body = Done),
        (status = 403, description = "FORBIDDEN: drivers only, and approved ones"),
        (status = 429, description = "RATE_LIMITED: `drivers.location_updates_per_sec`"),
    ))]
async fn location(
    State(state): State<AppState>,
    who: Authenticated,
    ValidBody { parsed, .. }: ValidBody<LocationInput>,
) -> Result<Json<Done>, ApiError> {
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
    Ok(Json(Done { ok: true }))
}

#[derive(Deserialize, Serialize, utoipa::ToSchema)]
struct AvailabilityInput {
    #[schema(value_type = bool, required = true)]
    available: Option<bool>,
}

/// Goes online or offline (drivers).
#[utoipa::path(put, path = "/drivers/me/availability", tag = "drivers",
    security(("bearer" = [])),
    request_body = AvailabilityInput,
    responses(
        (status = 200, body = AvailabilityInput),
        (status = 403, description = "FORBIDDEN: drivers only, and approved ones"),
    ))]
async fn availability(
    State(state): State<AppState>,
    who: Authenticated,
    JsonBody { value: input, .. }: JsonBody<AvailabilityInput>,
) -> Result<Json<AvailabilityInput>, ApiError> {
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
    Ok(Json(AvailabilityInput {
        available: Some(setting),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct NearbyQuery {
    #[param(value_type = f64, required = true, minimum = -90, maximum = 90)]
    lat: Option<f64>,
    #[param(value_type = f64, required = true, minimum = -180, maximum = 180)]
    lon: Option<f64>,
    #[param(minimum = 0.01, maximum = 100, default = 5)]
    radius_km: Option<f64>,
    #[param(minimum = 1, maximum = 500, default = 20)]
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct NearbyList {
    drivers: Vec<NearbyDriver>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct NearbyDriver {
    id: i64,
    distance_km: f64,
    lat: f64,
    lon: f64,
    active_orders: u32,
    available: bool,
}

/// Drivers near a point, nearest first, from the live index (admins).
#[utoipa::path(get, path = "/drivers/nearby", tag = "drivers",
    security(("bearer" = [])),
    params(NearbyQuery),
    responses(
        (status = 200, body = NearbyList),
        (status = 403, description = "FORBIDDEN: admins only"),
    ))]
async fn nearby(
    State(state): State<AppState>,
    who: Authenticated,
    QueryParams(q, mut p): QueryParams<NearbyQuery>,
) -> Result<Json<NearbyList>, ApiError> {
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
    Ok(Json(NearbyList { drivers }))
}

fn offer_error(error: OfferError) -> ApiError {
    match error {
        OfferError::NotFound => ApiError::NotFound("offer"),
        OfferError::Expired => ApiError::InvalidTransition("the offer has expired".into()),
        OfferError::Taken => ApiError::InvalidTransition("the order is no longer available".into()),
        OfferError::Unavailable => ApiError::StoreUnavailable,
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct OrderBody {
    order: Order,
}

/// Takes the order offered (drivers): it is theirs from now on.
#[utoipa::path(post, path = "/offers/{id}/accept", tag = "drivers",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = OrderBody),
        (status = 403, description = "FORBIDDEN: drivers only"),
        (status = 409, description = "INVALID_TRANSITION: the offer expired or the order was taken"),
    ))]
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

/// Turns the offer down (drivers): the dispatcher offers the order to another.
#[utoipa::path(post, path = "/offers/{id}/decline", tag = "drivers",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses(
        (status = 200, body = Done),
        (status = 403, description = "FORBIDDEN: drivers only"),
        (status = 409, description = "INVALID_TRANSITION: the offer expired or the order was taken"),
    ))]
async fn decline(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    let driver_id = who.require(&[Role::Driver])?.user_id;
    let offer_id = path_id(&id, "offer")?;
    state
        .engine
        .dispatch()
        .respond(offer_id, driver_id, false)
        .await
        .map_err(offer_error)?;
    Ok(Json(Done { ok: true }))
}
