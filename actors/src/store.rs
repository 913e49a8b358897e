//! The `Store` port: everything dispatchd keeps durably, as one trait.
//!
//! `dispatchd::store` implements it for Postgres and SQLite. Order actors are
//! the only callers that write an order after it is placed; they await their
//! own writes so that commands on one order are serialised.

use crate::domain::input::{MenuItemPatch, NewMenuItem, NewRestaurant, RestaurantPatch};
use crate::domain::model::*;
pub use crate::domain::quote::{OrderDraft, PricedLine};
use async_trait::async_trait;
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time; nothing changed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An optimistic write lost: the row changed since it was read.
    #[error("version conflict")]
    Conflict,
    #[error("email already registered")]
    EmailTaken,
    /// A row the write names is not there: in practice the caller's own
    /// account, deleted while its token is still valid (401, not 500).
    #[error("a referenced row does not exist")]
    UnknownReference,
    /// Cluster mode: this node does not hold the order's region (any
    /// more), so the write was refused, by the node itself or by the
    /// database's record of region owners; nothing changed. `owner` is the
    /// node that holds it, when known.
    #[error("region {region} is not served by this node")]
    NotServed {
        region: String,
        owner: Option<String>,
    },
    /// Anything else (a bug or a schema mismatch). Logged, answered as 500.
    #[error("store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A user account with the secrets and links the gateway needs.
#[derive(Debug, Clone)]
pub struct Account {
    pub user: User,
    pub password_hash: String,
    /// For restaurant staff.
    pub restaurant_id: Option<RestaurantId>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password_hash: String,
    pub name: String,
    pub role: Role,
    /// For drivers: creates their `drivers` row in the same transaction.
    pub vehicle_type: Option<VehicleType>,
    /// For restaurant staff.
    pub restaurant_id: Option<RestaurantId>,
}

#[derive(Debug, Clone, Default)]
pub struct RestaurantFilter {
    /// Bounding box prefilter: (min lat, max lat, min lon, max lon).
    pub bounds: Option<(f64, f64, f64, f64)>,
    pub cuisine: Option<String>,
    pub open_only: bool,
}

/// A latitude/longitude box, bounds included (cluster mode: a region's
/// grid cell, with a hair of margin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoBox {
    pub min_lat: f64,
    pub max_lat: f64,
    pub min_lon: f64,
    pub max_lon: f64,
}

/// Whose orders a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderScope {
    Customer(UserId),
    Restaurant(RestaurantId),
    Driver(DriverId),
    All,
}

#[derive(Debug, Clone, Copy)]
pub struct OrderQuery {
    pub scope: OrderScope,
    pub status: Option<OrderStatus>,
    /// Only orders with a smaller id (keyset pagination, newest first).
    pub before: Option<OrderId>,
    pub limit: i64,
}

#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    /// A digest of the canonical request body.
    pub request_hash: String,
}

/// What the store keeps of a key: the digest of the body it first came
/// with, and the response once that request finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub response_body: Option<String>,
}

impl IdempotencyRecord {
    /// The one rule for a key seen before (CONTRACT.md "Idempotent order
    /// creation"): another body is a reuse; the same body replays the first
    /// response, or is still in progress if there is none yet.
    pub fn outcome_for(&self, request_hash: &str) -> PlaceOutcome {
        match &self.response_body {
            _ if self.request_hash != request_hash => PlaceOutcome::KeyReused,
            Some(body) => PlaceOutcome::Replayed(body.clone()),
            None => PlaceOutcome::InProgress,
        }
    }
}

#[derive(Debug, Clone)]
pub enum PlaceOutcome {
    Created(Box<PlacedOrder>),
    /// A request with this key was already answered: its body, verbatim.
    Replayed(String),
    /// The key was used before with a different body.
    KeyReused,
    /// The key is held by a request that has not finished.
    InProgress,
}

/// A change to one order, written with its event in one transaction, and only
/// if the order is still at `from_version`.
#[derive(Debug, Clone)]
pub struct OrderChange {
    pub order: Order,
    pub from_version: i64,
    pub event: NewOrderEvent,
}

#[derive(Debug, Clone)]
pub struct NewOrderEvent {
    pub kind: OrderEventType,
    pub from_status: Option<OrderStatus>,
    pub to_status: Option<OrderStatus>,
    pub actor_id: Option<UserId>,
    pub actor_role: Option<Role>,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl NewOrderEvent {
    /// The first event of every order, as the store writes it and as the
    /// engine announces it.
    pub fn placed(order: &Order) -> NewOrderEvent {
        NewOrderEvent {
            kind: OrderEventType::OrderPlaced,
            from_status: None,
            to_status: Some(OrderStatus::Placed),
            actor_id: Some(order.customer_id),
            actor_role: Some(Role::Customer),
            at: order.placed_at,
            data: serde_json::json!({ "totalCents": order.total_cents }),
        }
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the store is reachable (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    async fn count_users(&self) -> StoreResult<i64>;
    async fn create_user(&self, user: NewUser) -> StoreResult<User>;
    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>>;
    async fn account_by_id(&self, id: UserId) -> StoreResult<Option<Account>>;
    async fn driver(&self, id: DriverId) -> StoreResult<Option<Driver>>;
    /// Whether an admin approved this driver (`None`: no such driver).
    async fn driver_approved(&self, id: DriverId) -> StoreResult<Option<bool>>;
    /// Approves a driver; false if there is no such driver.
    async fn approve_driver(&self, id: DriverId, at: DateTime<Utc>) -> StoreResult<bool>;
    /// Drivers waiting for approval, oldest first.
    async fn pending_drivers(&self, limit: i64) -> StoreResult<Vec<Driver>>;

    async fn list_restaurants(&self, filter: &RestaurantFilter) -> StoreResult<Vec<Restaurant>>;
    async fn restaurant(&self, id: RestaurantId) -> StoreResult<Option<Restaurant>>;
    /// Creates the restaurant and its staff account in one transaction.
    async fn create_restaurant(
        &self,
        restaurant: &NewRestaurant,
        owner_password_hash: &str,
    ) -> StoreResult<(Restaurant, User)>;
    async fn update_restaurant(
        &self,
        id: RestaurantId,
        patch: RestaurantPatch,
    ) -> StoreResult<Option<Restaurant>>;
    async fn menu(&self, restaurant_id: RestaurantId) -> StoreResult<Vec<MenuItem>>;
    async fn menu_item(&self, id: MenuItemId) -> StoreResult<Option<MenuItem>>;
    async fn create_menu_item(
        &self,
        restaurant_id: RestaurantId,
        item: &NewMenuItem,
    ) -> StoreResult<MenuItem>;
    async fn update_menu_item(
        &self,
        id: MenuItemId,
        patch: MenuItemPatch,
    ) -> StoreResult<Option<MenuItem>>;

    /// Writes order, items, first event and idempotency record in one
    /// transaction; with a key seen before, answers the first response instead.
    /// Writes the order, its items, its first event and, with a key, the
    /// idempotency record, in one transaction; a key seen before is
    /// answered by [`IdempotencyRecord::outcome_for`] instead.
    async fn place_order(
        &self,
        draft: OrderDraft,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<PlaceOutcome>;
    /// What the store keeps of `(user, key)`, if it was seen.
    async fn idempotent_response(
        &self,
        user_id: UserId,
        key: &str,
    ) -> StoreResult<Option<IdempotencyRecord>>;
    async fn order(&self, id: OrderId) -> StoreResult<Option<Order>>;
    async fn order_items(&self, id: OrderId) -> StoreResult<Vec<OrderItem>>;
    async fn order_events(&self, id: OrderId) -> StoreResult<Vec<OrderEvent>>;
    async fn list_orders(&self, query: OrderQuery) -> StoreResult<Vec<Order>>;
    /// Every order that is neither delivered nor cancelled (recovery).
    async fn active_orders(&self) -> StoreResult<Vec<Order>>;
    /// The non-terminal orders of the restaurants inside any of `areas`
    /// (cluster mode: loading the regions a node just claimed), by id.
    async fn active_orders_within(&self, areas: &[GeoBox]) -> StoreResult<Vec<Order>>;
    /// Writes `change.order` (version `from_version + 1`) and its event, or
    /// `Conflict` when the order moved on meanwhile.
    async fn apply_change(&self, change: &OrderChange) -> StoreResult<()>;
    /// Stores a moved delivery estimate computed for the order at
    /// `version`; false (and nothing written) when the order has moved on
    /// since, so a late estimate never overwrites the one a newer change
    /// wrote with it. It does not bump the version: it is advisory.
    async fn set_estimated_delivery(
        &self,
        order_id: OrderId,
        version: i64,
        at: DateTime<Utc>,
    ) -> StoreResult<bool>;
    /// Records a driver's pause (or resume) made at `changed_us`
    /// (microseconds since the epoch); an older change that lands after a
    /// newer one changes nothing.
    async fn set_driver_paused(
        &self,
        driver_id: DriverId,
        paused: bool,
        changed_us: i64,
    ) -> StoreResult<()>;
    /// Whether the driver last asked to be paused (false if never, or unknown).
    async fn driver_paused(&self, driver_id: DriverId) -> StoreResult<bool>;
    /// Remembers that `driver_id` declined the order or let its offer
    /// expire: it is not offered that order again, also after a restart.
    async fn exclude_driver(
        &self,
        order_id: OrderId,
        driver_id: DriverId,
        reason: ExclusionReason,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;
    /// The drivers excluded from an order.
    async fn excluded_drivers(&self, order_id: OrderId) -> StoreResult<Vec<DriverId>>;
    /// Appends breadcrumbs (positions of drivers carrying an order).
    async fn insert_breadcrumbs(&self, crumbs: &[Breadcrumb]) -> StoreResult<u64>;
    /// Drops idempotency records older than `cutoff`; returns how many.
    async fn purge_idempotency_keys(&self, cutoff: DateTime<Utc>) -> StoreResult<u64>;

    /// Orders still PLACED that were placed before `cutoff`, oldest first,
    /// with their version: (id, version).
    async fn stale_placed_orders(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<(OrderId, i64)>>;
}

/// Why a driver is not offered an order again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExclusionReason {
    Declined,
    Expired,
}

impl ExclusionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionReason::Declined => "declined",
            ExclusionReason::Expired => "expired",
        }
    }
}

/// One sampled position of a driver carrying an order.
#[derive(Debug, Clone, Copy)]
pub struct Breadcrumb {
    pub driver_id: DriverId,
    pub order_id: Option<OrderId>,
    pub lat: f64,
    pub lon: f64,
    pub heading: Option<f64>,
    pub speed_mps: Option<f64>,
    pub recorded_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(body: Option<&str>) -> IdempotencyRecord {
        IdempotencyRecord {
            request_hash: "abc".into(),
            response_body: body.map(String::from),
        }
    }

    #[test]
    fn a_key_seen_before_replays_is_in_progress_or_was_reused() {
        assert!(matches!(
            record(Some("{}")).outcome_for("abc"),
            PlaceOutcome::Replayed(body) if body == "{}"
        ));
        assert!(matches!(
            record(None).outcome_for("abc"),
            PlaceOutcome::InProgress
        ));
        // Another body is a reuse, finished or not.
        assert!(matches!(
            record(Some("{}")).outcome_for("xyz"),
            PlaceOutcome::KeyReused
        ));
        assert!(matches!(
            record(None).outcome_for("xyz"),
            PlaceOutcome::KeyReused
        ));
    }
}
