//! Benchmarks of the per-message domain work: the order state machine,
//! pricing, and the WebSocket codec (decode a location, encode a
//! driver_location, decode a subscribe).

use actors::domain::lifecycle::{self, Action};
use actors::domain::model::*;
use actors::domain::pricing;
use actors::wire::{self, ServerMessage};
use chrono::Utc;
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn order(status: OrderStatus) -> Order {
    Order {
        id: 42,
        customer_id: 10,
        restaurant_id: 3,
        driver_id: Some(17),
        status,
        version: 4,
        subtotal_cents: 2598,
        delivery_fee_cents: 299,
        service_fee_cents: 390,
        total_cents: 3287,
        delivery_address: DeliveryAddress {
            street: "1100 Congress Ave".into(),
            city: "Austin".into(),
            state: "TX".into(),
            zip: "78701".into(),
            lat: 30.2747,
            lon: -97.7404,
            instructions: Some("Leave at the front desk".into()),
        },
        estimated_delivery_at: Some(Utc::now()),
        placed_at: Utc::now(),
        confirmed_at: Some(Utc::now()),
        preparing_at: Some(Utc::now()),
        ready_at: None,
        picked_up_at: None,
        delivered_at: None,
        cancelled_at: None,
        cancel_reason: None,
    }
}

fn state_machine(c: &mut Criterion) {
    let staff = Caller {
        user_id: 5,
        role: Role::Restaurant,
        restaurant_id: Some(3),
        driver_id: None,
    };
    let preparing = order(OrderStatus::Preparing);
    c.bench_function("lifecycle_decide_mark_ready", |b| {
        b.iter(|| {
            lifecycle::decide(
                black_box(&preparing),
                black_box(&staff),
                Action::MarkReady,
                Some(4),
            )
        })
    });
    c.bench_function("pricing_3_lines", |b| {
        b.iter(|| pricing::price(black_box([(1299, 2), (450, 1), (399, 3)]), black_box(299)))
    });
}

fn codec(c: &mut Criterion) {
    let location_text = r#"{"type":"location","lat":30.2701,"lon":-97.7419,"heading":182.5,"speedMps":8.4,"timestamp":1795696265120}"#;
    c.bench_function("wire_decode_and_validate_location", |b| {
        b.iter(|| {
            let decoded = wire::decode(black_box(location_text));
            match decoded.message {
                Ok(wire::ClientMessage::Location(input)) => input.parse().is_ok(),
                _ => false,
            }
        })
    });
    c.bench_function("wire_decode_subscribe", |b| {
        b.iter(|| {
            wire::decode(black_box(r#"{"type":"subscribe","orderId":123456}"#))
                .message
                .is_ok()
        })
    });
    let location = DriverLocation {
        driver_id: 17,
        lat: 30.2701,
        lon: -97.7419,
        heading: Some(182.5),
        speed_mps: Some(8.4),
        timestamp: 1_795_696_265_120,
    };
    let eta = Some(actors::domain::eta::Eta::at(Utc::now(), Utc::now()));
    c.bench_function("wire_encode_driver_location", |b| {
        b.iter(|| {
            ServerMessage::DriverLocation {
                order_id: 42,
                location: black_box(&location),
                eta: eta.clone(),
            }
            .encode()
        })
    });
    let full = order(OrderStatus::PickedUp);
    c.bench_function("wire_encode_order_update", |b| {
        b.iter(|| wire::order_update(black_box(&full), eta.clone()))
    });
}

criterion_group!(benches, state_machine, codec);
criterion_main!(benches);
