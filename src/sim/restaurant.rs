//! Simulated restaurant staff: each watches its restaurant's feed
//! (`subscribe_restaurant`) and takes every new order through `confirm`,
//! `start_preparing` and `mark_ready`, with a short kitchen delay before
//! each (`--kitchen-secs`, scaled down from real kitchens for a simulation).
//!
//! Orders an earlier run left half-cooked are picked up where they stopped,
//! so that running the simulator again against the same server does not
//! leave drivers waiting at counters for food nobody will make.

use super::Ctx;
use super::socket::{self, Event, Held, Incoming, Outgoing, Socket};
use actors::domain::model::{OrderId, OrderStatus, RestaurantId};
use futures::StreamExt;
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

const KITCHEN_STEPS: [&str; 3] = ["confirm", "start_preparing", "mark_ready"];

/// One restaurant's staff until the run stops or its socket ends.
pub async fn run(
    ctx: Arc<Ctx>,
    restaurant_id: RestaurantId,
    token: String,
    socket: Socket,
    mut rng: StdRng,
) {
    let _held = Held::new(ctx.stats.clone());
    let stats = ctx.stats.clone();
    let token: Arc<str> = token.into();
    let (mut sink, mut stream) = socket.split();
    if !socket::send(
        &mut sink,
        &Outgoing::SubscribeRestaurant { restaurant_id },
        &stats,
    )
    .await
    {
        return;
    }
    // Orders already in the kitchen: the feed announces each once, but a
    // repeat must not start a second cook.
    let mut cooking: HashSet<OrderId> = HashSet::new();
    for (step, status) in [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
    ]
    .into_iter()
    .enumerate()
    {
        match ctx.api.orders(&token, status).await {
            Ok(orders) => {
                for order in orders {
                    if cooking.insert(order.id) {
                        let delays = kitchen_delays(&ctx, &mut rng);
                        ctx.requests.spawn(cook(
                            ctx.clone(),
                            token.clone(),
                            order.id,
                            step,
                            delays,
                        ));
                    }
                }
            }
            Err(failure) => ctx.stats.error(&failure.code, || {
                format!("listing restaurant {restaurant_id}'s {status} orders: {failure}")
            }),
        }
    }
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            frame = stream.next() => match socket::event(frame, &stats) {
                Event::Message(Incoming::OrderUpdate { order })
                    if order.status == OrderStatus::Placed && cooking.insert(order.id) =>
                {
                    let delays = kitchen_delays(&ctx, &mut rng);
                    ctx.requests.spawn(cook(ctx.clone(), token.clone(), order.id, 0, delays));
                }
                Event::Message(_) | Event::Nothing => {}
                Event::Ended { code, detail } => {
                    if !ctx.stop.is_cancelled() {
                        stats.error(&code, || format!("restaurant {restaurant_id} socket: {detail}"));
                    }
                    return;
                }
            },
        }
    }
    socket::close(sink, stream).await;
}

fn kitchen_delays(ctx: &Ctx, rng: &mut StdRng) -> [Duration; 3] {
    let base = ctx.args.kitchen_secs;
    KITCHEN_STEPS.map(|_| Duration::from_secs_f64(base * rng.random_range(0.5..1.5)))
}

/// One order through the kitchen from step `from`; stops at the first
/// refusal (counted) or when the run ends.
async fn cook(
    ctx: Arc<Ctx>,
    token: Arc<str>,
    order_id: OrderId,
    from: usize,
    delays: [Duration; 3],
) {
    for (action, delay) in KITCHEN_STEPS.into_iter().zip(delays).skip(from) {
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        if let Err(failure) = ctx.api.act(&token, order_id, action).await {
            ctx.stats.error(&failure.code, || {
                format!("{action} order {order_id}: {failure}")
            });
            return;
        }
    }
}
