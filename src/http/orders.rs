//! Orders: idempotent creation, listing per role, reading, history, and
//! status transitions through the order's actor.

use super::auth::Authenticated;
use super::error::{JsonBody, QueryParams, path_id};
use super::{ApiError, AppState};
use actors::domain::eta::{self, Eta, Leg};
use actors::domain::geo::distance_km;
use actors::domain::input::{FieldError, NewOrderInput, Problems};
use actors::domain::lifecycle::{self, Action};
use actors::domain::model::*;
use actors::domain::pricing;
use actors::engine::order::{TransitionCommand, now};
use actors::metrics as m;
use actors::store::{IdempotencyKey, OrderDraft, OrderQuery, OrderScope, PlaceOutcome, PricedLine};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};
use chrono::Duration;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", get(list).post(create))
        .route("/orders/{id}", get(show))
        .route("/orders/{id}/events", get(events))
        .route("/orders/{id}/status", patch(transition))
}

const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The idempotency key, from `Idempotency-Key` or `X-Idempotency-Key`.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers
        .get("idempotency-key")
        .or_else(|| headers.get("x-idempotency-key"))
    else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN);
    match key {
        Some(key) => Ok(Some(key.to_string())),
        None => Err(ApiError::field(
            "Idempotency-Key",
            format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters"),
        )),
    }
}

/// A digest of the request body that ignores key order and white space, so
/// a client that re-serialises the same request still matches.
fn request_hash(raw: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn created(body: String, replayed: bool) -> Response {
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::CONTENT_TYPE, "application/json");
    if replayed {
        response = response.header("idempotent-replayed", "true");
    }
    response
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn replay_or_refuse(outcome: PlaceOutcome) -> Result<Response, ApiError> {
    match outcome {
        PlaceOutcome::Replayed(body) => {
            metrics::counter!(m::ORDERS_REPLAYED_TOTAL).increment(1);
            Ok(created(body, true))
        }
        PlaceOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        PlaceOutcome::InProgress => Err(ApiError::IdempotencyInProgress),
        PlaceOutcome::Created(_) => Err(ApiError::Internal("unexpected creation".into())),
    }
}

async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    headers: HeaderMap,
    JsonBody { value: input, raw }: JsonBody<NewOrderInput>,
) -> Result<Response, ApiError> {
    let customer = *who.require(&[Role::Customer])?;
    let key = idempotency_key(&headers)?;
    let new = input.parse()?;
    let idempotency = key.map(|key| IdempotencyKey {
        key,
        request_hash: request_hash(&raw),
    });

    // A key seen before is answered from its record, whatever has changed
    // since (the restaurant may have closed): the first response stands.
    if let Some(idem) = &idempotency
        && let Some((body, hash)) = state
            .store
            .idempotent_response(customer.user_id, &idem.key)
            .await?
    {
        let outcome = match (hash == idem.request_hash, body.is_empty()) {
            (false, _) => PlaceOutcome::KeyReused,
            (true, false) => PlaceOutcome::Replayed(body),
            (true, true) => PlaceOutcome::InProgress,
        };
        return replay_or_refuse(outcome);
    }

    let restaurant = state
        .store
        .restaurant(new.restaurant_id)
        .await?
        .ok_or(ApiError::NotFound("restaurant"))?;
    if !restaurant.is_open {
        return Err(ApiError::RestaurantClosed);
    }
    let dropoff = LatLon {
        lat: new.delivery_address.lat,
        lon: new.delivery_address.lon,
    };
    let distance = distance_km(restaurant.location, dropoff);
    if distance > restaurant.delivery_radius_km {
        return Err(ApiError::OutOfRange(format!(
            "the address is {distance:.1} km away; this restaurant delivers within {} km",
            restaurant.delivery_radius_km
        )));
    }

    let menu: HashMap<i64, MenuItem> = state
        .store
        .menu(restaurant.id)
        .await?
        .into_iter()
        .map(|item| (item.id, item))
        .collect();
    let mut unavailable = Vec::new();
    let mut lines = Vec::with_capacity(new.lines.len());
    for (i, line) in new.lines.iter().enumerate() {
        match menu.get(&line.menu_item_id) {
            Some(item) if item.is_available => lines.push(PricedLine {
                menu_item_id: item.id,
                name: item.name.clone(),
                quantity: line.quantity,
                unit_price_cents: item.price_cents,
                special_instructions: line.special_instructions.clone(),
            }),
            Some(item) => unavailable.push(FieldError {
                field: format!("items[{i}].menuItemId"),
                message: format!("{} ({}) is unavailable", item.name, item.id),
            }),
            None => unavailable.push(FieldError {
                field: format!("items[{i}].menuItemId"),
                message: format!(
                    "item {} is not on this restaurant's menu",
                    line.menu_item_id
                ),
            }),
        }
    }
    if !unavailable.is_empty() {
        return Err(ApiError::ItemUnavailable(unavailable));
    }

    let price = pricing::price(
        lines.iter().map(|l| (l.unit_price_cents, l.quantity)),
        restaurant.delivery_fee_cents,
    );
    let placed_at = now();
    let food_ready_at = placed_at + Duration::minutes(i64::from(restaurant.prep_time_minutes));
    let estimated_delivery_at = eta::estimate_delivery(
        placed_at,
        food_ready_at,
        restaurant.location,
        dropoff,
        Leg::Unassigned {
            vehicle: VehicleType::Car,
        },
        state.settings.dispatch.road_factor,
    );
    let draft = OrderDraft {
        customer_id: customer.user_id,
        order: new,
        lines,
        subtotal_cents: price.subtotal_cents,
        delivery_fee_cents: price.delivery_fee_cents,
        service_fee_cents: price.service_fee_cents,
        total_cents: price.total_cents,
        estimated_delivery_at: Some(estimated_delivery_at),
        placed_at,
        idempotency,
    };
    match state.store.place_order(draft).await? {
        PlaceOutcome::Created(placed) => {
            metrics::counter!(m::ORDERS_CREATED_TOTAL).increment(1);
            tracing::info!(
                order_id = placed.order.id,
                customer_id = customer.user_id,
                "Order placed"
            );
            let body =
                serde_json::to_string(&placed).map_err(|e| ApiError::Internal(e.to_string()))?;
            // Durable already; if the actor cannot start now, the next
            // command on the order or the next start brings it up.
            if let Err(error) = state.engine.orders.placed(placed.order.clone()).await {
                tracing::warn!(order_id = placed.order.id, %error, "Order actor not started");
            }
            Ok(created(body, false))
        }
        other => replay_or_refuse(other),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    before: Option<i64>,
}

#[derive(Serialize)]
struct OrderList {
    orders: Vec<Order>,
}

async fn list(
    State(state): State<AppState>,
    who: Authenticated,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let caller = who.0;
    let mut p = Problems::default();
    let status = q.status.as_deref().and_then(|s| {
        let parsed = s.parse::<OrderStatus>().ok();
        if parsed.is_none() {
            p.add("status", "must be one of PLACED, CONFIRMED, PREPARING, READY_FOR_PICKUP, PICKED_UP, DELIVERED, CANCELLED");
        }
        parsed
    });
    let limit = p.int("limit", q.limit.or(Some(50)), 1, 100);
    let before = q.before.map(|b| p.int("before", Some(b), 1, i64::MAX));
    p.finish(|| ())?;

    let scope = match caller.role {
        Role::Customer => OrderScope::Customer(caller.user_id),
        Role::Driver => OrderScope::Driver(caller.user_id),
        Role::Restaurant => {
            OrderScope::Restaurant(caller.restaurant_id.ok_or(ApiError::Unauthorized)?)
        }
        Role::Admin => OrderScope::All,
    };
    let orders = state
        .store
        .list_orders(OrderQuery {
            scope,
            status,
            before,
            limit,
        })
        .await?;
    Ok(Json(OrderList { orders }))
}

/// The order as the caller may see it, or 404.
async fn visible_order(state: &AppState, caller: &Caller, raw_id: &str) -> Result<Order, ApiError> {
    let id = path_id(raw_id, "order")?;
    let order = state
        .store
        .order(id)
        .await?
        .ok_or(ApiError::NotFound("order"))?;
    if !lifecycle::can_see(&order, caller) {
        return Err(ApiError::NotFound("order"));
    }
    Ok(order)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OrderDetail {
    order: Order,
    items: Vec<OrderItem>,
    driver: Option<Driver>,
    driver_location: Option<DriverLocation>,
    eta: Option<Eta>,
}

/// The `eta` of an order: none once it is delivered or cancelled.
pub fn eta_of(order: &Order) -> Option<Eta> {
    if order.status.is_terminal() {
        return None;
    }
    order.estimated_delivery_at.map(|at| Eta::at(at, now()))
}

async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<OrderDetail>, ApiError> {
    let order = visible_order(&state, &who.0, &id).await?;
    let items = state.store.order_items(order.id).await?;
    let (driver, driver_location) = match order.driver_id {
        Some(driver_id) if !order.status.is_terminal() => {
            let location = state
                .engine
                .drivers
                .status(driver_id)
                .await
                .and_then(|s| s.location);
            (state.store.driver(driver_id).await?, location)
        }
        Some(driver_id) => (state.store.driver(driver_id).await?, None),
        None => (None, None),
    };
    Ok(Json(OrderDetail {
        eta: eta_of(&order),
        order,
        items,
        driver,
        driver_location,
    }))
}

#[derive(Serialize)]
struct EventList {
    events: Vec<OrderEvent>,
}

async fn events(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    let order = visible_order(&state, &who.0, &id).await?;
    let events = state.store.order_events(order.id).await?;
    Ok(Json(EventList { events }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransitionInput {
    action: Option<String>,
    expected_version: Option<i64>,
    reason: Option<String>,
}

#[derive(Serialize)]
struct OrderBody {
    order: Order,
}

async fn transition(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
    JsonBody { value: input, .. }: JsonBody<TransitionInput>,
) -> Result<Json<OrderBody>, ApiError> {
    let order_id = path_id(&id, "order")?;
    let mut p = Problems::default();
    let action = match input.action.as_deref() {
        None => {
            p.add("action", "is required");
            None
        }
        Some(raw) => {
            let parsed = raw.parse::<Action>().ok();
            if parsed.is_none() {
                p.add(
                    "action",
                    "must be one of confirm, start_preparing, mark_ready, pick_up, deliver, cancel",
                );
            }
            parsed
        }
    };
    let expected_version = input
        .expected_version
        .map(|v| p.int("expectedVersion", Some(v), 1, i64::MAX));
    let reason = p.optional_text("reason", &input.reason, 500);
    let action = p
        .finish(|| action)?
        .ok_or_else(|| ApiError::field("action", "is required"))?;

    let command = TransitionCommand {
        caller: who.0,
        action,
        expected_version,
        reason,
    };
    let order = state.engine.orders.transition(order_id, command).await?;
    tracing::info!(order_id, status = %order.status, version = order.version, "Order transitioned");
    Ok(Json(OrderBody { order }))
}
