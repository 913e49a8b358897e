//! The domain's records: users, restaurants, menus, orders and their events.
//!
//! These are the client-facing shapes of CONTRACT.md "Types" (serde, camelCase),
//! defined once here so the HTTP gateway, the WebSocket codec and the store all
//! agree on them.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The current time at the precision every store keeps (milliseconds), so an
/// order reads back exactly as it was written.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

pub type UserId = i64;
pub type RestaurantId = i64;
pub type MenuItemId = i64;
pub type OrderId = i64;
pub type DriverId = i64;

/// Who a caller is. Restaurant staff belong to exactly one restaurant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Driver,
    Restaurant,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Driver => "driver",
            Role::Restaurant => "restaurant",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "customer" => Ok(Role::Customer),
            "driver" => Ok(Role::Driver),
            "restaurant" => Ok(Role::Restaurant),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// The authenticated party behind a command: enough to decide what it may do
/// without another store lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user_id: UserId,
    pub role: Role,
    /// Set for restaurant staff: the one restaurant they work for.
    pub restaurant_id: Option<RestaurantId>,
    /// Set for drivers: their driver id (equal to the user id in this schema).
    pub driver_id: Option<DriverId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Placed,
    Confirmed,
    Preparing,
    ReadyForPickup,
    PickedUp,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 7] = [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
        OrderStatus::ReadyForPickup,
        OrderStatus::PickedUp,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "PLACED",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Preparing => "PREPARING",
            OrderStatus::ReadyForPickup => "READY_FOR_PICKUP",
            OrderStatus::PickedUp => "PICKED_UP",
            OrderStatus::Delivered => "DELIVERED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, OrderStatus::Delivered | OrderStatus::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub name: String,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Driver {
    pub id: DriverId,
    pub name: String,
    pub vehicle_type: VehicleType,
    pub rating: f64,
    pub photo_url: Option<String>,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum VehicleType {
    #[default]
    Car,
    Bike,
    Scooter,
    Walk,
}

impl VehicleType {
    pub fn as_str(self) -> &'static str {
        match self {
            VehicleType::Car => "car",
            VehicleType::Bike => "bike",
            VehicleType::Scooter => "scooter",
            VehicleType::Walk => "walk",
        }
    }
}

impl FromStr for VehicleType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "car" => Ok(VehicleType::Car),
            "bike" => Ok(VehicleType::Bike),
            "scooter" => Ok(VehicleType::Scooter),
            "walk" => Ok(VehicleType::Walk),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Restaurant {
    pub id: RestaurantId,
    pub name: String,
    pub address: String,
    pub location: LatLon,
    pub cuisine_type: String,
    pub rating: f64,
    pub prep_time_minutes: i32,
    pub delivery_fee_cents: i64,
    pub delivery_radius_km: f64,
    pub is_open: bool,
    pub image_url: Option<String>,
    /// Present only in nearest-first listings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
}

/// What the engine keeps of a restaurant for its live orders: enough for
/// ETAs, offers and dispatch without a store read per position.
#[derive(Debug, Clone, PartialEq)]
pub struct RestaurantInfo {
    pub id: RestaurantId,
    pub name: String,
    pub location: LatLon,
    pub prep_time_minutes: i32,
}

impl From<&Restaurant> for RestaurantInfo {
    fn from(r: &Restaurant) -> Self {
        RestaurantInfo {
            id: r.id,
            name: r.name.clone(),
            location: r.location,
            prep_time_minutes: r.prep_time_minutes,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MenuItem {
    pub id: MenuItemId,
    pub restaurant_id: RestaurantId,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub category: String,
    pub is_available: bool,
    pub image_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAddress {
    pub street: String,
    pub city: String,
    pub state: String,
    pub zip: String,
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: OrderId,
    pub customer_id: UserId,
    pub restaurant_id: RestaurantId,
    pub driver_id: Option<DriverId>,
    pub status: OrderStatus,
    pub version: i64,
    pub subtotal_cents: i64,
    pub delivery_fee_cents: i64,
    pub service_fee_cents: i64,
    pub total_cents: i64,
    pub delivery_address: DeliveryAddress,
    pub estimated_delivery_at: Option<DateTime<Utc>>,
    pub placed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub preparing_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub picked_up_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub cancel_reason: Option<String>,
}

impl Order {
    /// Sets the timestamp column that belongs to `status`.
    pub fn stamp(&mut self, status: OrderStatus, at: DateTime<Utc>) {
        let column = match status {
            OrderStatus::Placed => &mut self.placed_at,
            OrderStatus::Confirmed => self.confirmed_at.get_or_insert(at),
            OrderStatus::Preparing => self.preparing_at.get_or_insert(at),
            OrderStatus::ReadyForPickup => self.ready_at.get_or_insert(at),
            OrderStatus::PickedUp => self.picked_up_at.get_or_insert(at),
            OrderStatus::Delivered => self.delivered_at.get_or_insert(at),
            OrderStatus::Cancelled => self.cancelled_at.get_or_insert(at),
        };
        *column = at;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    pub id: i64,
    pub order_id: OrderId,
    pub menu_item_id: MenuItemId,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub special_instructions: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderEventType {
    OrderPlaced,
    StatusChanged,
    DriverAssigned,
    DriverUnassigned,
    /// The carrying driver came near the next stop (restaurant or dropoff).
    DriverApproaching,
    /// The carrying driver stayed within the arrival radius of the next stop.
    DriverArrived,
}

impl OrderEventType {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderEventType::OrderPlaced => "ORDER_PLACED",
            OrderEventType::StatusChanged => "STATUS_CHANGED",
            OrderEventType::DriverAssigned => "DRIVER_ASSIGNED",
            OrderEventType::DriverUnassigned => "DRIVER_UNASSIGNED",
            OrderEventType::DriverApproaching => "DRIVER_APPROACHING",
            OrderEventType::DriverArrived => "DRIVER_ARRIVED",
        }
    }
}

impl FromStr for OrderEventType {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "ORDER_PLACED" => Ok(OrderEventType::OrderPlaced),
            "STATUS_CHANGED" => Ok(OrderEventType::StatusChanged),
            "DRIVER_ASSIGNED" => Ok(OrderEventType::DriverAssigned),
            "DRIVER_UNASSIGNED" => Ok(OrderEventType::DriverUnassigned),
            "DRIVER_APPROACHING" => Ok(OrderEventType::DriverApproaching),
            "DRIVER_ARRIVED" => Ok(OrderEventType::DriverArrived),
            _ => Err(()),
        }
    }
}

/// One line of an order's append-only history. `seq` is per order, from 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: OrderEventType,
    pub from_status: Option<OrderStatus>,
    pub to_status: Option<OrderStatus>,
    pub actor_id: Option<UserId>,
    pub actor_role: Option<Role>,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// The body of a 201 to `POST /api/orders`, kept verbatim in the idempotency
/// record so that a replay returns exactly the first response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacedOrder {
    pub order: Order,
    pub items: Vec<OrderItem>,
    pub estimated_delivery_at: Option<DateTime<Utc>>,
}

/// A driver's position as clients see it. `timestamp` is milliseconds since
/// the Unix epoch (the one timestamp in the contract that is not RFC 3339).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriverLocation {
    pub driver_id: DriverId,
    pub lat: f64,
    pub lon: f64,
    pub heading: Option<f64>,
    pub speed_mps: Option<f64>,
    pub timestamp: i64,
}

impl DriverLocation {
    pub fn at(&self) -> LatLon {
        LatLon {
            lat: self.lat,
            lon: self.lon,
        }
    }
}

pub type OfferId = i64;
