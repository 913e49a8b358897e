//! Orders: idempotent creation, listing per role, reading, history, and
//! status transitions through the order's actor.

use super::auth::Authenticated;
use super::error::{JsonBody, QueryParams, ValidBody, path_id};
use super::{ApiError, AppState};
use actors::domain::eta::Eta;
use actors::domain::input::{NewOrderInput, Problems};
use actors::domain::lifecycle::{self, Action};
use actors::domain::model::*;
use actors::domain::quote::{Rejection, quote};
use actors::engine::order::{CommandError, TransitionCommand};
use actors::metrics as m;
use actors::store::{IdempotencyKey, OrderQuery, OrderScope, PlaceOutcome, StoreError};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show))
        .routes(routes!(events))
        .routes(routes!(transition))
}

pub(crate) const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

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

/// The idempotency keys of order creations still running on this node, with
/// the digest of their body. A duplicate that arrives meanwhile is answered
/// at once (409 `IDEMPOTENCY_IN_PROGRESS`, or 422 for another body) instead
/// of queueing behind the first on the key's row: the client learns its
/// first attempt is alive, and retries. One entry per request in flight, so
/// it is bounded by the connections the server accepts.
#[derive(Default)]
pub struct KeysInFlight {
    held: std::sync::Mutex<std::collections::HashMap<(UserId, String), String>>,
}

/// A key held for one request; released when the request ends, however.
pub struct KeyHold<'a> {
    keys: &'a KeysInFlight,
    key: (UserId, String),
}

impl KeysInFlight {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(UserId, String), String>> {
        // Every edit is one insert or remove: a panic cannot leave it half done.
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hold(&self, user_id: UserId, key: &IdempotencyKey) -> Result<KeyHold<'_>, ApiError> {
        let id = (user_id, key.key.clone());
        let mut held = self.lock();
        if let Some(hash) = held.get(&id) {
            metrics::counter!(m::IDEMPOTENCY_IN_PROGRESS_TOTAL).increment(1);
            return Err(if *hash == key.request_hash {
                ApiError::IdempotencyInProgress
            } else {
                ApiError::IdempotencyKeyReused
            });
        }
        held.insert(id.clone(), key.request_hash.clone());
        Ok(KeyHold {
            keys: self,
            key: id,
        })
    }
}

impl Drop for KeyHold<'_> {
    fn drop(&mut self) {
        self.keys.lock().remove(&self.key);
    }
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

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        match rejection {
            Rejection::RestaurantClosed => ApiError::RestaurantClosed,
            Rejection::OutOfRange {
                distance_km,
                radius_km,
            } => ApiError::OutOfRange(format!(
                "the address is {distance_km:.1} km away; this restaurant delivers within {radius_km} km"
            )),
            Rejection::ItemsUnavailable(fields) => ApiError::ItemUnavailable(fields),
        }
    }
}

/// Parses, reads, quotes, places and announces: the rules of placing an
/// order are `actors::domain::quote`'s.
/// Places an order (customers). With an `Idempotency-Key`, a retry gets
/// the first response again, marked `Idempotent-Replayed: true`.
#[utoipa::path(post, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255,
         description = "Makes the creation safe to retry: the same key and body answer with the first response. `X-Idempotency-Key` is read too."),
    ),
    request_body = NewOrderInput,
    responses(
        (status = 201, body = PlacedOrder, headers(
            ("Idempotent-Replayed" = String, description = "`true` when this is the stored first response"),
        )),
        (status = 403, description = "FORBIDDEN: customers only"),
        (status = 404, description = "NOT_FOUND: the restaurant"),
        (status = 409, description = "IDEMPOTENCY_IN_PROGRESS: the first request with this key is still running"),
        (status = 422, description = "RESTAURANT_CLOSED, ITEM_UNAVAILABLE (details name the items), OUT_OF_RANGE, OUT_OF_ZONE, IDEMPOTENCY_KEY_REUSED"),
        (status = 429, description = "RATE_LIMITED: `orders.per_customer_per_minute`"),
    ))]
async fn create(
    State(state): State<AppState>,
    who: Authenticated,
    headers: HeaderMap,
    ValidBody { parsed, raw }: ValidBody<NewOrderInput>,
) -> Result<Response, ApiError> {
    let customer = *who.require(&[Role::Customer])?;
    let key = idempotency_key(&headers)?;
    let new = parsed?;
    let idempotency = key.map(|key| IdempotencyKey {
        key,
        request_hash: request_hash(&raw),
    });

    // A duplicate of a request still running here is told so at once.
    let _hold = match &idempotency {
        Some(idem) => Some(state.keys_in_flight.hold(customer.user_id, idem)?),
        None => None,
    };
    // A key seen before is answered from its record, whatever has changed
    // since (the restaurant may have closed): the first response stands.
    if let Some(idem) = &idempotency
        && let Some(record) = state
            .store
            .idempotent_response(customer.user_id, &idem.key)
            .await?
    {
        return replay_or_refuse(record.outcome_for(&idem.request_hash));
    }
    // Each new order is an actor and a frame on the restaurant's tablets:
    // a customer places a few an hour, not hundreds a second.
    if state.order_limiter.check_key(&customer.user_id).is_err() {
        metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => "orders").increment(1);
        return Err(ApiError::RateLimited);
    }

    let restaurant = state
        .store
        .restaurant(new.restaurant_id)
        .await?
        .ok_or(ApiError::NotFound("restaurant"))?;
    let menu = state.store.menu(restaurant.id).await?;
    let address = LatLon {
        lat: new.delivery_address.lat,
        lon: new.delivery_address.lon,
    };
    let draft = quote(
        customer.user_id,
        &restaurant,
        &menu,
        new,
        now(),
        state.settings.dispatch.road_factor,
    )?;
    if let Some(zones) = &state.zones
        && let Err(out) = zones.check_delivery(restaurant.id, address)
    {
        return Err(ApiError::OutOfZone(format!(
            "the address is outside this restaurant's delivery zone {}",
            out.zone_id
        )));
    }
    // Cluster mode: the store refuses an order of a region another node
    // serves (it runs the order's actor): that node writes it instead.
    let (outcome, forwarded) = match state
        .store
        .place_order(draft.clone(), idempotency.clone())
        .await
    {
        Ok(outcome) => (outcome, false),
        Err(StoreError::NotServed { region, owner }) => {
            let Some(commands) = state.cluster.as_ref().and_then(|c| c.commands()) else {
                return Err(ApiError::not_served_here(region, owner));
            };
            match commands
                .forward_place(&region, &draft, idempotency.as_ref())
                .await
            {
                Ok(answer) => (answer?, true),
                Err(error) => {
                    tracing::warn!(%region, %error, "New order not forwarded");
                    return Err(ApiError::not_served_here(region, owner));
                }
            }
        }
        Err(error) => return Err(error.into()),
    };
    match outcome {
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
            // command on the order or the next start brings it up. A
            // forwarded order's actor is its owner's.
            if !forwarded && let Err(error) = state.engine.orders().placed(&placed.order).await {
                tracing::warn!(order_id = placed.order.id, %error, "Order actor not started");
            }
            Ok(created(body, false))
        }
        other => replay_or_refuse(other),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
    #[param(minimum = 1, maximum = 100, default = 50)]
    limit: Option<i64>,
    /// Orders with ids below this one (the next page).
    #[param(minimum = 1)]
    before: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct OrderList {
    orders: Vec<Order>,
}

/// The caller's orders, newest first: a customer's own, a driver's, a
/// restaurant's, or all (admins).
#[utoipa::path(get, path = "/orders", tag = "orders",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = OrderList)))]
async fn list(
    State(state): State<AppState>,
    who: Authenticated,
    QueryParams(q, mut p): QueryParams<ListQuery>,
) -> Result<Json<OrderList>, ApiError> {
    let caller = who.0;
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

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct OrderDetail {
    order: Order,
    items: Vec<OrderItem>,
    driver: Option<Driver>,
    driver_location: Option<DriverLocation>,
    eta: Option<Eta>,
}

/// An order with its items, driver, the driver's last position and the
/// ETA. Orders the caller may not see are 404, as missing ones.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = OrderDetail)))]
async fn show(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<OrderDetail>, ApiError> {
    let order = visible_order(&state, &who.0, &id).await?;
    let items = state.store.order_items(order.id).await?;
    let (driver, driver_location) = match order.driver_id {
        Some(driver_id) if !order.status.is_terminal() => {
            let location = state.engine.drivers().location(driver_id).await;
            (state.store.driver(driver_id).await?, location)
        }
        Some(driver_id) => (state.store.driver(driver_id).await?, None),
        None => (None, None),
    };
    Ok(Json(OrderDetail {
        eta: Eta::of(&order, now()),
        order,
        items,
        driver,
        driver_location,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
struct EventList {
    events: Vec<OrderEvent>,
}

/// An order's history, oldest first.
#[utoipa::path(get, path = "/orders/{id}/events", tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    responses((status = 200, body = EventList)))]
async fn events(
    State(state): State<AppState>,
    who: Authenticated,
    Path(id): Path<String>,
) -> Result<Json<EventList>, ApiError> {
    let order = visible_order(&state, &who.0, &id).await?;
    let events = state.store.order_events(order.id).await?;
    Ok(Json(EventList { events }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct TransitionInput {
    #[schema(value_type = ActionSchema, required = true)]
    action: Option<String>,
    /// Refused with 409 `VERSION_CONFLICT` unless the order is at this version.
    #[schema(minimum = 1)]
    expected_version: Option<i64>,
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// The actions of `PATCH /api/orders/{id}/status`; who may take which is
/// `actors::domain::lifecycle`'s.
#[derive(utoipa::ToSchema)]
#[schema(as = Action)]
#[allow(dead_code)]
enum ActionSchema {
    #[schema(rename = "confirm")]
    Confirm,
    #[schema(rename = "start_preparing")]
    StartPreparing,
    #[schema(rename = "mark_ready")]
    MarkReady,
    #[schema(rename = "pick_up")]
    PickUp,
    #[schema(rename = "deliver")]
    Deliver,
    #[schema(rename = "cancel")]
    Cancel,
}

#[derive(Serialize, utoipa::ToSchema)]
struct OrderBody {
    order: Order,
}

/// Moves an order along its lifecycle.
#[utoipa::path(patch, path = "/orders/{id}/status", tag = "orders",
    security(("bearer" = [])),
    params(("id" = i64, Path, minimum = 1)),
    request_body = TransitionInput,
    responses(
        (status = 200, body = OrderBody),
        (status = 403, description = "FORBIDDEN: the caller may not take this action"),
        (status = 409, description = "INVALID_TRANSITION, VERSION_CONFLICT"),
    ))]
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

    let caller = who.0;
    let command = TransitionCommand {
        caller,
        action,
        expected_version,
        reason,
    };
    let order = match state
        .engine
        .orders()
        .transition(order_id, command.clone())
        .await
    {
        Ok(order) => order,
        // Cluster mode: another node runs this order; ask it.
        Err(CommandError::Store(StoreError::NotServed { region, owner })) => {
            match state.cluster.as_ref().and_then(|c| c.commands()) {
                Some(commands) => match commands
                    .forward_transition(&region, order_id, &command)
                    .await
                {
                    Ok(answer) => answer?,
                    Err(error) => {
                        tracing::warn!(order_id, %region, %error, "Command not forwarded");
                        return Err(ApiError::not_served_here(region, owner));
                    }
                },
                None => return Err(ApiError::not_served_here(region, owner)),
            }
        }
        Err(error) => return Err(error.into()),
    };
    tracing::info!(order_id, status = %order.status, version = order.version, "Order transitioned");
    if let (Some(driver_id), Action::PickUp | Action::Deliver) = (caller.driver_id, action) {
        check_proximity(&state, driver_id, action, &order).await;
    }
    Ok(Json(OrderBody { order }))
}

/// A driver's pick-up or delivery far from the restaurant or the address
/// (or with no recent fix) is flagged: counted by action and logged with
/// the distance, for operators to follow up. Not refused: a GPS fix
/// downtown drifts by hundreds of metres and a phone loses its fix
/// indoors, and refusing would leave the food in the customer's hands
/// while the app says it is not delivered (README "Driver onboarding").
async fn check_proximity(state: &AppState, driver_id: i64, action: Action, order: &Order) {
    let target = match action {
        Action::PickUp => match state.store.restaurant(order.restaurant_id).await {
            Ok(Some(restaurant)) => restaurant.location,
            _ => return,
        },
        _ => LatLon {
            lat: order.delivery_address.lat,
            lon: order.delivery_address.lon,
        },
    };
    let limit_km = state.settings.drivers.proximity_km;
    let distance_km = state.engine.drivers().location(driver_id).await.map(|fix| {
        actors::domain::geo::distance_km(
            LatLon {
                lat: fix.lat,
                lon: fix.lon,
            },
            target,
        )
    });
    let flag = match distance_km {
        Some(km) if km <= limit_km => return,
        Some(_) => "far",
        None => "no_fix",
    };
    metrics::counter!(m::DRIVER_EVENTS_FLAGGED_TOTAL, "action" => action.as_str(), "reason" => flag)
        .increment(1);
    tracing::warn!(
        order_id = order.id,
        driver_id,
        action = action.as_str(),
        distance_km,
        limit_km,
        "Driver event flagged: not near the place"
    );
}
