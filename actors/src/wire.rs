//! The WebSocket protocol (CONTRACT.md "WebSocket"): every message type in
//! both directions, and the codec. Nothing else in dispatchd parses or
//! builds socket JSON.
//!
//! Server messages are encoded once into [`Frame`]s (shared bytes), so one
//! location update costs one serialisation however many watchers it has.

use crate::domain::eta::Eta;
use crate::domain::input::LocationInput;
use crate::domain::model::*;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An encoded server message: UTF-8 JSON, cheap to clone.
pub type Frame = Bytes;

/// What clients send. Serialize too, so Rust clients (the simulator) speak
/// exactly this shape.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ClientMessage {
    #[serde(rename_all = "camelCase")]
    Subscribe {
        order_id: i64,
    },
    #[serde(rename_all = "camelCase")]
    Unsubscribe {
        order_id: i64,
    },
    #[serde(rename_all = "camelCase")]
    SubscribeRestaurant {
        restaurant_id: i64,
    },
    Location(LocationInput),
    #[serde(rename_all = "camelCase")]
    SetAvailability {
        available: bool,
    },
    #[serde(rename_all = "camelCase")]
    OfferResponse {
        offer_id: i64,
        accept: bool,
    },
    #[serde(rename_all = "camelCase")]
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    /// Admins: the whole city, once a second (an extension of the contract).
    #[serde(rename_all = "camelCase")]
    SubscribeOps {},
    #[serde(rename_all = "camelCase")]
    UnsubscribeOps {},
}

impl ClientMessage {
    /// The message's `type`, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Subscribe { .. } => "subscribe",
            ClientMessage::Unsubscribe { .. } => "unsubscribe",
            ClientMessage::SubscribeRestaurant { .. } => "subscribe_restaurant",
            ClientMessage::Location(_) => "location",
            ClientMessage::SetAvailability { .. } => "set_availability",
            ClientMessage::OfferResponse { .. } => "offer_response",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::SubscribeOps { .. } => "subscribe_ops",
            ClientMessage::UnsubscribeOps { .. } => "unsubscribe_ops",
        }
    }
}

const CLIENT_TYPES: [&str; 9] = [
    "subscribe",
    "unsubscribe",
    "subscribe_restaurant",
    "location",
    "set_availability",
    "offer_response",
    "ping",
    "subscribe_ops",
    "unsubscribe_ops",
];

/// Why a client frame was rejected. Both count towards the ten-in-a-row
/// limit; `code()` is the `error` message's code.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// Not JSON, not an object, no `type`, or an unknown `type`.
    BadMessage(String),
    /// A known type whose fields are missing or of the wrong type.
    Invalid(String),
}

impl DecodeError {
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::BadMessage(_) => "BAD_MESSAGE",
            DecodeError::Invalid(_) => "VALIDATION_ERROR",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            DecodeError::BadMessage(m) | DecodeError::Invalid(m) => m,
        }
    }
}

/// A decoded client frame, with the client's `ref` (echoed in errors).
pub struct Decoded {
    pub message: Result<ClientMessage, DecodeError>,
    pub reference: Option<serde_json::Value>,
}

pub fn decode(text: &str) -> Decoded {
    if let Some(location) = decode_location(text) {
        return location;
    }
    decode_general(text)
}

/// The general decoder: the message as a `Value` first (for its `type` and
/// `ref`), then the variant from that. [`decode`] answers exactly as this
/// does; it is public for the fuzz target that checks so.
pub fn decode_general(text: &str) -> Decoded {
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(e) => {
            return Decoded {
                message: Err(DecodeError::BadMessage(format!("not valid JSON: {e}"))),
                reference: None,
            };
        }
    };
    let reference = value.get("ref").cloned();
    let message = match value.get("type").and_then(|t| t.as_str()) {
        None => Err(DecodeError::BadMessage(
            "a message is a JSON object with a string `type`".into(),
        )),
        Some(kind) if !CLIENT_TYPES.contains(&kind) => Err(DecodeError::BadMessage(format!(
            "unknown message type `{kind}`"
        ))),
        Some(_) => serde_json::from_value(value).map_err(|e| DecodeError::Invalid(e.to_string())),
    };
    Decoded { message, reference }
}

/// Nearly every message a server reads is a driver's position, and the
/// general decoder spends twice the instructions on one (a `Value` built,
/// then read again; benches/README.md "The location path after the
/// merges"). This reads a well-formed `location` straight from the text in
/// one pass. Anything else, or anything it cannot take (wrong field types,
/// a duplicate key, an escaped `type`), is `None` and goes the general
/// way, so every answer but the cost is the general decoder's.
fn decode_location(text: &str) -> Option<Decoded> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Location<'a> {
        #[serde(rename = "type", borrow)]
        kind: &'a str,
        /// Present (even as `null`) or absent, as the general decoder sees it.
        #[serde(rename = "ref", default, deserialize_with = "present")]
        reference: Option<serde_json::Value>,
        lat: Option<f64>,
        lon: Option<f64>,
        heading: Option<f64>,
        speed_mps: Option<f64>,
        timestamp: Option<i64>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<serde_json::Value>, D::Error> {
        serde_json::Value::deserialize(d).map(Some)
    }
    let location: Location = serde_json::from_str(text).ok()?;
    if location.kind != "location" {
        return None;
    }
    Some(Decoded {
        message: Ok(ClientMessage::Location(LocationInput {
            lat: location.lat,
            lon: location.lon,
            heading: location.heading,
            speed_mps: location.speed_mps,
            timestamp: location.timestamp,
        })),
        reference: location.reference,
    })
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pickup {
    pub restaurant_id: RestaurantId,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OfferOutcome {
    Assigned,
    Declined,
    Expired,
    Taken,
}

impl OfferOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            OfferOutcome::Assigned => "assigned",
            OfferOutcome::Declined => "declined",
            OfferOutcome::Expired => "expired",
            OfferOutcome::Taken => "taken",
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    #[serde(rename_all = "camelCase")]
    Snapshot {
        order_id: OrderId,
        order: &'a Order,
        driver: Option<&'a Driver>,
        driver_location: Option<&'a DriverLocation>,
        eta: Option<Eta>,
    },
    #[serde(rename_all = "camelCase")]
    OrderUpdate {
        order_id: OrderId,
        status: OrderStatus,
        version: i64,
        eta: Option<Eta>,
        order: &'a Order,
    },
    #[serde(rename_all = "camelCase")]
    DriverLocation {
        order_id: OrderId,
        location: &'a DriverLocation,
        eta: Option<Eta>,
    },
    /// One order, or a bundle of one restaurant: `orderId` and `dropoff`
    /// are the first of `orderIds` / `dropoffs` (in drop-off sequence).
    #[serde(rename_all = "camelCase")]
    Offer {
        offer_id: OfferId,
        order_id: OrderId,
        order_ids: &'a [OrderId],
        pickup: &'a Pickup,
        dropoff: LatLon,
        dropoffs: &'a [OfferDropoff],
        distance_km: f64,
        expires_at: DateTime<Utc>,
    },
    #[serde(rename_all = "camelCase")]
    OfferResult {
        offer_id: OfferId,
        order_id: OrderId,
        order_ids: &'a [OrderId],
        result: OfferOutcome,
    },
    #[serde(rename_all = "camelCase")]
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<serde_json::Value>,
    },
    /// The carrying driver came near the order's next stop (an extension:
    /// README "Arrival events").
    #[serde(rename_all = "camelCase")]
    DriverApproaching {
        order_id: OrderId,
        stop: &'a str,
        distance_m: f64,
        at: DateTime<Utc>,
    },
    /// The carrying driver stayed within the arrival radius of the next stop.
    #[serde(rename_all = "camelCase")]
    DriverArrived {
        order_id: OrderId,
        stop: &'a str,
        distance_m: f64,
        at: DateTime<Utc>,
    },
    /// The operator's view of the city (after `subscribe_ops`).
    #[serde(rename_all = "camelCase")]
    Ops {
        at: DateTime<Utc>,
        drivers: &'a [OpsDriver],
        waiting: &'a [OpsOrder],
        offers_in_flight: usize,
        positions_per_sec: f64,
    },
}

/// One drop-off of an offer, in sequence.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OfferDropoff {
    pub order_id: OrderId,
    pub lat: f64,
    pub lon: f64,
}

/// A driver on the operator's map.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsDriver {
    pub id: DriverId,
    pub lat: f64,
    pub lon: f64,
    /// `available`, `offered`, `busy` (carrying an order), `paused` (or
    /// without a socket), or `stale` (no position for half the presence TTL).
    pub state: &'static str,
    pub active_orders: u32,
}

/// A confirmed order still waiting for a driver.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpsOrder {
    pub order_id: OrderId,
    pub restaurant_id: RestaurantId,
    pub waiting_secs: f64,
    pub radius_km: f64,
    pub offered_to: Option<DriverId>,
    /// No driver can deliver it within the maximum click-to-door any more.
    pub hopeless: bool,
}

impl ServerMessage<'_> {
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Snapshot { .. } => "snapshot",
            ServerMessage::OrderUpdate { .. } => "order_update",
            ServerMessage::DriverLocation { .. } => "driver_location",
            ServerMessage::Offer { .. } => "offer",
            ServerMessage::OfferResult { .. } => "offer_result",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Error { .. } => "error",
            ServerMessage::Ops { .. } => "ops",
            ServerMessage::DriverApproaching { .. } => "driver_approaching",
            ServerMessage::DriverArrived { .. } => "driver_arrived",
        }
    }

    pub fn encode(&self) -> Frame {
        // Serialising these types cannot fail: no maps with non-string keys,
        // no custom serialisers that error.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// What the driver's node reads of a relayed `offer` frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OfferSeen {
    pub offer_id: OfferId,
    pub pickup: LatLon,
    pub expires_at: DateTime<Utc>,
}

/// An `offer` frame's offer id, pick-up and expiry (cluster mode: the
/// driver's node relays another node's offer, holds the driver to it
/// until it expires, and sends the answer to the region of its pick-up);
/// None for any other frame.
pub fn offer_of(frame: &[u8]) -> Option<OfferSeen> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct OfferFrame {
        #[serde(rename = "type")]
        kind: String,
        offer_id: OfferId,
        pickup: LatLon,
        expires_at: DateTime<Utc>,
    }
    serde_json::from_slice::<OfferFrame>(frame)
        .ok()
        .filter(|offer| offer.kind == "offer")
        .map(|offer| OfferSeen {
            offer_id: offer.offer_id,
            pickup: offer.pickup,
            expires_at: offer.expires_at,
        })
}

/// An `offer_result` frame's offer id, and the orders it assigned (none
/// unless its result is `assigned`): cluster mode, the driver's node learns
/// that the driver's offer ended. None for any other frame.
pub fn offer_result_of(frame: &[u8]) -> Option<(OfferId, Vec<OrderId>)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ResultFrame {
        #[serde(rename = "type")]
        kind: String,
        offer_id: OfferId,
        #[serde(default)]
        order_ids: Vec<OrderId>,
        result: OfferOutcome,
    }
    serde_json::from_slice::<ResultFrame>(frame)
        .ok()
        .filter(|result| result.kind == "offer_result")
        .map(|result| {
            let assigned = if result.result == OfferOutcome::Assigned {
                result.order_ids
            } else {
                Vec::new()
            };
            (result.offer_id, assigned)
        })
}

/// An `error` frame.
pub fn error_frame(code: &str, message: &str, reference: Option<serde_json::Value>) -> Frame {
    ServerMessage::Error {
        code,
        message,
        reference,
    }
    .encode()
}

/// The `order_update` for an order's current state.
pub fn order_update(order: &Order, eta: Option<Eta>) -> Frame {
    ServerMessage::OrderUpdate {
        order_id: order.id,
        status: order.status,
        version: order.version,
        eta,
        order,
    }
    .encode()
}

/// The frame of an arrival event (`driver_approaching` / `driver_arrived`),
/// from the order event that recorded it.
pub fn arrival(order_id: OrderId, event: &crate::store::NewOrderEvent) -> Option<Frame> {
    let stop = event.data["stop"].as_str().unwrap_or("");
    let distance_m = event.data["distanceM"].as_f64().unwrap_or(0.0);
    let message = match event.kind {
        OrderEventType::DriverApproaching => ServerMessage::DriverApproaching {
            order_id,
            stop,
            distance_m,
            at: event.at,
        },
        OrderEventType::DriverArrived => ServerMessage::DriverArrived {
            order_id,
            stop,
            distance_m,
            at: event.at,
        },
        _ => return None,
    };
    Some(message.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a decoder answered, comparable.
    fn answer(decoded: &Decoded) -> String {
        let message = match &decoded.message {
            Ok(m) => serde_json::to_string(m).unwrap(),
            Err(e) => format!("{e:?}"),
        };
        format!("{message} ref={:?}", decoded.reference)
    }

    #[test]
    fn the_location_fast_path_answers_exactly_as_the_general_decoder() {
        let inputs = [
            r#"{"type":"location","lat":30.1,"lon":-97.2}"#,
            r#"{"lon":-97.2,"type":"location","lat":30.1,"heading":90,"speedMps":3.5,"timestamp":1700000000000}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2,"ref":7}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2,"ref":null}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2,"ref":{"a":[1,2]}}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2,"extra":"ignored"}"#,
            r#"{"type":"location","lat":null,"lon":-97.2}"#,
            r#"{"type":"location"}"#,
            r#"{"type":"location","lat":"30.1","lon":-97.2}"#,
            r#"{"type":"location","lat":30.1,"lat":31.0,"lon":-97.2}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2,"timestamp":1.5}"#,
            r#"{"type":"location","lat":1e400,"lon":-97.2}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2}"#,
            r#"{"type":"subscribe","orderId":5}"#,
            r#"{"type":"location","lat":30.1,"lon":-97.2"#,
            r#"[1,2]"#,
            r#"{"type":5}"#,
            r#"{"type":"teleport","lat":30.1}"#,
        ];
        for input in inputs {
            let general = decode_general(input);
            assert_eq!(answer(&decode(input)), answer(&general), "{input}");
        }
        assert!(
            decode_location(inputs[0]).is_some(),
            "the fast path is taken"
        );
        assert!(
            decode_location(inputs[8]).is_none(),
            "errors go the general way"
        );
    }

    #[test]
    fn client_messages_decode_by_type() {
        let m = decode(r#"{"type":"subscribe","orderId":5}"#)
            .message
            .unwrap();
        assert!(matches!(m, ClientMessage::Subscribe { order_id: 5 }));
        let m = decode(r#"{"type":"location","lat":30.1,"lon":-97.2,"speedMps":3.5}"#)
            .message
            .unwrap();
        let ClientMessage::Location(fix) = m else {
            panic!("not a location")
        };
        assert_eq!(fix.speed_mps, Some(3.5));
        let m = decode(r#"{"type":"offer_response","offerId":9,"accept":true}"#)
            .message
            .unwrap();
        assert!(matches!(
            m,
            ClientMessage::OfferResponse {
                offer_id: 9,
                accept: true
            }
        ));
        let m = decode(r#"{"type":"ping"}"#).message.unwrap();
        assert!(matches!(m, ClientMessage::Ping { id: None }));
    }

    #[test]
    fn bad_frames_are_told_apart_from_invalid_fields() {
        for bad in ["nope", "[]", "{}", r#"{"type":5}"#, r#"{"type":"dance"}"#] {
            assert!(
                matches!(decode(bad).message, Err(DecodeError::BadMessage(_))),
                "{bad}"
            );
        }
        let d = decode(r#"{"type":"subscribe","orderId":"five","ref":"r1"}"#);
        assert!(matches!(d.message, Err(DecodeError::Invalid(_))));
        assert_eq!(d.reference, Some(serde_json::json!("r1")));
    }

    #[test]
    fn server_messages_carry_their_type_and_camel_case_fields() {
        let location = DriverLocation {
            driver_id: 3,
            lat: 1.0,
            lon: 2.0,
            heading: None,
            speed_mps: Some(4.0),
            timestamp: 1700000000000,
        };
        let frame = ServerMessage::DriverLocation {
            order_id: 7,
            location: &location,
            eta: None,
        }
        .encode();
        let v: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(v["type"], "driver_location");
        assert_eq!(v["orderId"], 7);
        assert_eq!(v["location"]["driverId"], 3);
        assert_eq!(v["location"]["speedMps"], 4.0);
        let err: serde_json::Value = serde_json::from_slice(&error_frame(
            "NOT_FOUND",
            "no such order",
            Some(serde_json::json!(1)),
        ))
        .unwrap();
        assert_eq!(err["type"], "error");
        assert_eq!(err["ref"], 1);
    }
}
