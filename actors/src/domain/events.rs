//! Events out: the name and the JSON envelope of every order event as the
//! world outside sees it (JetStream messages and webhook bodies), built
//! once, in the transaction that commits the event.
//!
//! The envelope follows the Standard Webhooks payload shape
//! (`{type, timestamp, data}`) with the event's stable id beside it, so one
//! body serves both sinks.

use super::model::{Order, OrderEventType, OrderStatus, Role, UserId};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// Every external event type, for validating webhook filters.
pub const EVENT_TYPES: [&str; 13] = [
    "order_placed",
    "order_confirmed",
    "order_preparing",
    "order_ready_for_pickup",
    "order_picked_up",
    "order_delivered",
    "order_cancelled",
    "driver_assigned",
    "driver_unassigned",
    "driver_approaching",
    "driver_arrived",
    "driver_entered_zone",
    "driver_left_zone",
];

/// The external name of an event: lower snake case, one NATS subject token.
pub fn event_type(kind: OrderEventType, to_status: Option<OrderStatus>) -> &'static str {
    match (kind, to_status) {
        (OrderEventType::OrderPlaced, _) => "order_placed",
        (OrderEventType::DriverAssigned, _) => "driver_assigned",
        (OrderEventType::DriverUnassigned, _) => "driver_unassigned",
        (OrderEventType::DriverApproaching, _) => "driver_approaching",
        (OrderEventType::DriverArrived, _) => "driver_arrived",
        (OrderEventType::StatusChanged, Some(status)) => match status {
            OrderStatus::Placed => "order_placed",
            OrderStatus::Confirmed => "order_confirmed",
            OrderStatus::Preparing => "order_preparing",
            OrderStatus::ReadyForPickup => "order_ready_for_pickup",
            OrderStatus::PickedUp => "order_picked_up",
            OrderStatus::Delivered => "order_delivered",
            OrderStatus::Cancelled => "order_cancelled",
        },
        (OrderEventType::StatusChanged, None) => "order_updated",
    }
}

/// The de-duplication id of an order's `seq`th event.
pub fn event_id(order_id: i64, seq: i64) -> String {
    format!("{order_id}-{seq}")
}

/// What goes out for one event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundEvent {
    pub id: String,
    pub order_id: i64,
    pub restaurant_id: i64,
    pub event_type: &'static str,
    /// The envelope, serialised.
    pub payload: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    timestamp: String,
    data: EnvelopeData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeData<'a> {
    order_id: i64,
    restaurant_id: i64,
    seq: i64,
    from_status: Option<OrderStatus>,
    to_status: Option<OrderStatus>,
    actor_id: Option<UserId>,
    actor_role: Option<Role>,
    /// The event's own details (`order_events.data`).
    details: &'a serde_json::Value,
    /// The order as it is after the event.
    order: &'a Order,
}

/// The parts of an order event the envelope needs (the store's
/// `NewOrderEvent` carries them; kept separate so `domain` names no port).
pub struct EventFacts<'a> {
    pub kind: OrderEventType,
    pub from_status: Option<OrderStatus>,
    pub to_status: Option<OrderStatus>,
    pub actor_id: Option<UserId>,
    pub actor_role: Option<Role>,
    pub at: DateTime<Utc>,
    pub data: &'a serde_json::Value,
}

/// Builds the outbound form of `order`'s `seq`th event.
pub fn outbound(order: &Order, seq: i64, facts: &EventFacts<'_>) -> OutboundEvent {
    let id = event_id(order.id, seq);
    let event_type = event_type(facts.kind, facts.to_status);
    let envelope = Envelope {
        id: &id,
        event_type,
        timestamp: facts.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        data: EnvelopeData {
            order_id: order.id,
            restaurant_id: order.restaurant_id,
            seq,
            from_status: facts.from_status,
            to_status: facts.to_status,
            actor_id: facts.actor_id,
            actor_role: facts.actor_role,
            details: facts.data,
            order,
        },
    };
    // Serialising plain records with string keys cannot fail.
    let payload = serde_json::to_string(&envelope).expect("envelope serialises");
    OutboundEvent {
        id,
        order_id: order.id,
        restaurant_id: order.restaurant_id,
        event_type,
        payload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_a_listed_external_name() {
        let kinds = [
            OrderEventType::OrderPlaced,
            OrderEventType::DriverAssigned,
            OrderEventType::DriverUnassigned,
            OrderEventType::DriverApproaching,
            OrderEventType::DriverArrived,
        ];
        for kind in kinds {
            assert!(EVENT_TYPES.contains(&event_type(kind, None)));
        }
        for status in OrderStatus::ALL {
            let name = event_type(OrderEventType::StatusChanged, Some(status));
            assert!(EVENT_TYPES.contains(&name), "{name}");
            assert!(!name.contains('.') && !name.contains(' '));
        }
    }

    #[test]
    fn ids_are_order_and_seq() {
        assert_eq!(event_id(42, 3), "42-3");
    }
}
