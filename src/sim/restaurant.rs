//! Simulated restaurant staff: each watches its restaurant's feed
//! (`subscribe_restaurant`) and takes every new order through `confirm`,
//! `start_preparing` and `mark_ready`: a short delay before each of the
//! first two (`--kitchen-secs`), and the restaurant's prep time on the
//! simulation's clock (divided by `--time-scale`, like the drives) before
//! the food is ready, so dispatch sees food that is not ready at once (and
//! its batching window has orders to hold).
//!
//! Orders an earlier run left half-cooked are picked up where they stopped,
//! so that running the simulator again against the same server does not
//! leave drivers waiting at counters for food nobody will make.

use super::Ctx;
use super::nodes::Home;
use super::socket::{self, Event, Held, Incoming, Outgoing, Socket};
use actors::domain::model::{OrderId, OrderStatus, RestaurantId};
use futures::StreamExt;
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KITCHEN_STEPS: [&str; 3] = ["confirm", "start_preparing", "mark_ready"];

/// Orders with a cook running: the feed announces each once, and the
/// catch-up lists them again, but a repeat must not start a second cook.
/// A cook leaves when it ends, so one cut short by a dead node is started
/// again by the catch-up on the next node.
type Cooking = Arc<Mutex<HashSet<OrderId>>>;

/// One restaurant's staff until the run stops or its socket ends (with
/// several nodes: until no node takes its socket).
pub async fn run(
    ctx: Arc<Ctx>,
    (restaurant_id, prep_time_minutes): (RestaurantId, i32),
    (token, home): (String, Home),
    mut socket: Socket,
    mut rng: StdRng,
) {
    let _held = Held::new(ctx.stats.clone());
    let stats = ctx.stats.clone();
    let token: Arc<str> = token.into();
    let cooking = Cooking::default();
    loop {
        let (mut sink, mut stream) = socket.split();
        let subscribed = socket::send(
            &mut sink,
            &Outgoing::SubscribeRestaurant { restaurant_id },
            &stats,
        )
        .await;
        if subscribed {
            // Subscribed first, so an order placed meanwhile is either
            // listed here or announced on the feed.
            catch_up(
                &ctx,
                &home,
                (restaurant_id, prep_time_minutes),
                &token,
                &cooking,
                &mut rng,
            )
            .await;
            loop {
                tokio::select! {
                    _ = ctx.stop.cancelled() => {
                        socket::close(sink, stream).await;
                        return;
                    }
                    frame = stream.next() => match socket::event(frame, &stats) {
                        Event::Message(Incoming::OrderUpdate { order })
                            if order.status == OrderStatus::Placed && start(&cooking, order.id) =>
                        {
                            let delays = kitchen_delays(&ctx, &mut rng, prep_time_minutes);
                            ctx.requests.spawn(cook(ctx.clone(), (token.clone(), home.clone()), order.id, 0, delays, cooking.clone()));
                        }
                        Event::Message(_) | Event::Nothing => {}
                        Event::Ended { code, detail } => {
                            if ctx.stop.is_cancelled() {
                                return;
                            }
                            stats.error(&code, || format!("restaurant {restaurant_id} socket: {detail}"));
                            break;
                        }
                    },
                }
            }
        }
        match ctx.nodes.reconnect(&home, &token, &ctx.stop, &stats).await {
            Some(next) => socket = next,
            None => return,
        }
    }
}

/// Starts a cook for every order of the restaurant already in the kitchen
/// (left by an earlier run, or by a node that died) that has none.
async fn catch_up(
    ctx: &Arc<Ctx>,
    home: &Home,
    (restaurant_id, prep_time_minutes): (RestaurantId, i32),
    token: &Arc<str>,
    cooking: &Cooking,
    rng: &mut StdRng,
) {
    for (step, status) in [
        OrderStatus::Placed,
        OrderStatus::Confirmed,
        OrderStatus::Preparing,
    ]
    .into_iter()
    .enumerate()
    {
        match ctx.nodes.api(home).orders(token, status).await {
            Ok(orders) => {
                for order in orders {
                    if start(cooking, order.id) {
                        let delays = kitchen_delays(ctx, rng, prep_time_minutes);
                        ctx.requests.spawn(cook(
                            ctx.clone(),
                            (token.clone(), home.clone()),
                            order.id,
                            step,
                            delays,
                            cooking.clone(),
                        ));
                    }
                }
            }
            Err(failure) => ctx.stats.error(&failure.code, || {
                format!("listing restaurant {restaurant_id}'s {status} orders: {failure}")
            }),
        }
    }
}

/// True when `order_id` had no cook, and now has one.
fn start(cooking: &Cooking, order_id: OrderId) -> bool {
    cooking
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(order_id)
}

/// The delays before confirm, start_preparing and mark_ready.
fn kitchen_delays(ctx: &Ctx, rng: &mut StdRng, prep_time_minutes: i32) -> [Duration; 3] {
    let base = ctx.args.kitchen_secs;
    let mut step = || Duration::from_secs_f64(base * rng.random_range(0.5..1.5));
    // `check` keeps the time scale positive; a negative prep time is none.
    let prep = f64::from(prep_time_minutes.max(0)) * 60.0 / ctx.args.time_scale;
    [step(), step(), Duration::from_secs_f64(prep)]
}

/// One order through the kitchen from step `from`; stops at the first
/// refusal (counted) or when the run ends.
async fn cook(
    ctx: Arc<Ctx>,
    (token, home): (Arc<str>, Home),
    order_id: OrderId,
    from: usize,
    delays: [Duration; 3],
    cooking: Cooking,
) {
    for (action, delay) in KITCHEN_STEPS.into_iter().zip(delays).skip(from) {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        if let Err(failure) = ctx.nodes.api(&home).act(&token, order_id, action).await {
            ctx.stats.error(&failure.code, || {
                format!("{action} order {order_id}: {failure}")
            });
            break;
        }
    }
    cooking
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&order_id);
}
