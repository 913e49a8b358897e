//! Simulated customers: the order stream (Poisson arrivals at
//! `--order-rate`, spread over the customers), and each customer's socket,
//! subscribed to its orders, where assignment time and fan-out latency are
//! measured.
//!
//! When its node dies, a customer reopens its socket on another node and
//! re-sends `subscribe` for every order it still watches: each snapshot
//! gives the full state again, and the time from the old socket's end to
//! the last of those snapshots is what a customer waits through a failover.

use super::Ctx;
use super::api::{NewOrder, OrderLine};
use super::city::{City, point_within};
use super::nodes::Home;
use super::socket::{self, Event, Held, Incoming, Outgoing, Socket};
use actors::domain::model::{DeliveryAddress, OrderId};
use futures::StreamExt;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// Orders being placed at once; past this the server is not keeping up,
/// and further arrivals are counted as `CLIENT_BACKLOG` instead of queued.
const MAX_PLACING: usize = 256;
/// No dropoff is nearer its restaurant than this.
const MIN_DROPOFF_KM: f64 = 0.3;

/// A customer as the order stream sees it: who places, and where to tell
/// its socket about the order.
pub struct Orderer {
    pub token: Arc<str>,
    /// Orders are placed at the customer's node, wherever its socket is.
    pub home: Home,
    pub orders: mpsc::Sender<OrderId>,
}

/// Places orders until the run stops.
pub async fn place_orders(
    ctx: Arc<Ctx>,
    city: Arc<City>,
    customers: Vec<Orderer>,
    mut rng: StdRng,
) {
    let rate = ctx.args.order_rate;
    if rate <= 0.0 || customers.is_empty() || city.kitchens.is_empty() {
        return;
    }
    let placing = Arc::new(Semaphore::new(MAX_PLACING));
    // Scheduled from the start time rather than the last wake-up, so timer
    // slop does not lower the rate.
    let mut next = Instant::now();
    let mut sent = 0u64;
    loop {
        if ctx.args.max_orders > 0 && sent >= ctx.args.max_orders {
            return;
        }
        let u: f64 = rng.random();
        next += std::time::Duration::from_secs_f64(-(1.0 - u).ln() / rate);
        tokio::select! {
            _ = ctx.stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        let Ok(permit) = placing.clone().try_acquire_owned() else {
            ctx.stats.error("CLIENT_BACKLOG", || {
                format!("{MAX_PLACING} orders already waiting for the server")
            });
            continue;
        };
        let Some(customer) = customers.choose(&mut rng) else {
            return;
        };
        let Some(order) = new_order(&city, &ctx, &mut rng) else {
            continue;
        };
        sent += 1;
        let token = customer.token.clone();
        let home = customer.home.clone();
        let orders = customer.orders.clone();
        let key = uuid::Uuid::new_v4().to_string();
        let ctx2 = ctx.clone();
        ctx.requests.spawn(async move {
            let _permit = permit;
            match ctx2
                .nodes
                .api(&home)
                .place_order(&token, &order, &key)
                .await
            {
                Ok(placed) => {
                    super::stats::Stats::add(&ctx2.stats.orders_placed);
                    // The customer's socket may have ended; the order still counts.
                    let _ = orders.try_send(placed.id);
                }
                Err(failure) => ctx2.stats.error(&failure.code, || {
                    format!(
                        "placing an order at restaurant {}: {failure}",
                        order.restaurant_id
                    )
                }),
            }
        });
    }
}

/// A random order: a random restaurant, 1-3 of its items, an address within
/// `--dropoff-km` (and inside its delivery radius).
fn new_order(city: &City, ctx: &Ctx, rng: &mut StdRng) -> Option<NewOrder> {
    let kitchen = city.kitchens.choose(rng)?;
    let count = rng.random_range(1..=3).min(kitchen.menu.len());
    let items = kitchen
        .menu
        .choose_multiple(rng, count)
        .map(|id| OrderLine {
            menu_item_id: *id,
            quantity: rng.random_range(1..=2),
        })
        .collect::<Vec<_>>();
    // A margin inside the radius: the server measures the same distance
    // with its own rounding.
    let max_km = ctx
        .args
        .dropoff_km
        .min(kitchen.delivery_radius_km * 0.9)
        .max(MIN_DROPOFF_KM);
    let at = point_within(rng, kitchen.at, MIN_DROPOFF_KM, max_km);
    Some(NewOrder {
        restaurant_id: kitchen.id,
        items,
        delivery_address: DeliveryAddress {
            street: format!("{} Simulation Ave", rng.random_range(100..9999)),
            city: "Austin".into(),
            state: "TX".into(),
            zip: "78701".into(),
            lat: at.lat,
            lon: at.lon,
            instructions: None,
        },
    })
}

/// One customer's socket until the run stops: subscribes to each order it
/// is told about, and measures what arrives.
pub async fn run(
    ctx: Arc<Ctx>,
    (token, home): (Arc<str>, Home),
    socket: Socket,
    mut orders: mpsc::Receiver<OrderId>,
) {
    let _held = Held::new(ctx.stats.clone());
    let stats = ctx.stats.clone();
    let (mut sink, mut stream) = socket.split();
    let mut watching: HashMap<OrderId, Watch> = HashMap::new();
    // Messages still to send: the re-subscriptions after a reconnection.
    let mut outbox: Vec<Outgoing> = Vec::new();
    let mut resuming: Option<Resuming> = None;
    loop {
        let out = if let Some(out) = outbox.pop() {
            Some(out)
        } else {
            tokio::select! {
                _ = ctx.stop.cancelled() => break,
                Some(order_id) = orders.recv() => {
                    watching.insert(order_id, Watch::default());
                    Some(Outgoing::Subscribe { order_id })
                }
                frame = stream.next() => match socket::event(frame, &stats) {
                    Event::Message(message) => {
                        if let Some(r) = &mut resuming
                            && r.snapshot_arrived(&message)
                        {
                            stats.customer_resumed(r.lost_at.elapsed().as_secs_f64() * 1000.0);
                            resuming = None;
                        }
                        on_message(&ctx, &home, &mut watching, message)
                    }
                    Event::Nothing => None,
                    Event::Ended { code, detail } => {
                        if ctx.stop.is_cancelled() {
                            return;
                        }
                        stats.error(&code, || format!("customer socket: {detail}"));
                        let Some(socket) = reopen(&ctx, &home, &token, &watching, &mut resuming, &mut outbox).await else {
                            return;
                        };
                        (sink, stream) = socket.split();
                        None
                    }
                },
            }
        };
        if let Some(out) = out
            && !socket::send(&mut sink, &out, &stats).await
        {
            let Some(socket) =
                reopen(&ctx, &home, &token, &watching, &mut resuming, &mut outbox).await
            else {
                return;
            };
            (sink, stream) = socket.split();
        }
    }
    socket::close(sink, stream).await;
}

/// After the customer's socket ended: a socket on another node (see
/// `nodes`), with a `subscribe` queued in `outbox` for every order still
/// watched, and the wait for their snapshots started.
async fn reopen(
    ctx: &Ctx,
    home: &Home,
    token: &str,
    watching: &HashMap<OrderId, Watch>,
    resuming: &mut Option<Resuming>,
    outbox: &mut Vec<Outgoing>,
) -> Option<Socket> {
    let lost_at = Instant::now();
    let socket = ctx
        .nodes
        .reconnect(home, token, &ctx.stop, &ctx.stats)
        .await?;
    // Kept from an earlier loss that has not resumed yet: the wait runs
    // from the first loss.
    let lost_at = resuming.take().map_or(lost_at, |r| r.lost_at);
    *outbox = watching
        .keys()
        .map(|&order_id| Outgoing::Subscribe { order_id })
        .collect();
    if !outbox.is_empty() {
        *resuming = Some(Resuming {
            lost_at,
            waiting: watching.keys().copied().collect(),
        });
    }
    Some(socket)
}

/// A reconnected customer waiting for the snapshots of the orders it
/// re-subscribed to.
struct Resuming {
    lost_at: Instant,
    waiting: HashSet<OrderId>,
}

impl Resuming {
    /// True once the last awaited snapshot is here.
    fn snapshot_arrived(&mut self, message: &Incoming) -> bool {
        if let Incoming::Snapshot { order } = message {
            self.waiting.remove(&order.id);
        }
        self.waiting.is_empty()
    }
}

/// What a customer has seen of one of its orders.
#[derive(Default)]
struct Watch {
    /// A driver has been seen on it (its assignment is measured once).
    assigned: bool,
    /// A `driver_location` has arrived for it.
    located: bool,
}

fn on_message(
    ctx: &Ctx,
    home: &Home,
    watching: &mut HashMap<OrderId, Watch>,
    message: Incoming,
) -> Option<Outgoing> {
    match message {
        Incoming::DriverLocation { order_id, location } => {
            // On assignment the server replays the driver's last known
            // position, up to one update interval old: that is the
            // position's age, not fan-out latency, so the first location
            // of an order is counted but not timed.
            let first = watching
                .get_mut(&order_id)
                .is_some_and(|watch| !std::mem::replace(&mut watch.located, true));
            // The driver stamped the fix with its send time; same clock.
            let latency_ms = socket::now_ms() - location.timestamp as f64;
            let cross_node = ctx
                .nodes
                .driver_node(location.driver_id)
                .is_some_and(|node| node != home.get());
            ctx.stats
                .location_received((!first).then_some(latency_ms), cross_node);
            None
        }
        Incoming::Snapshot { order } | Incoming::OrderUpdate { order } => {
            let watch = watching.get_mut(&order.id)?;
            if !watch.assigned && order.driver_id.is_some() {
                watch.assigned = true;
                let waited = order.confirmed_at.map(|confirmed| {
                    (chrono::Utc::now() - confirmed)
                        .num_microseconds()
                        .unwrap_or(0) as f64
                        / 1e6
                });
                ctx.stats.order_assigned(waited);
            }
            if order.status.is_terminal() {
                watching.remove(&order.id);
                return Some(Outgoing::Unsubscribe { order_id: order.id });
            }
            None
        }
        Incoming::Offer { .. }
        | Incoming::OfferResult { .. }
        | Incoming::Error { .. }
        | Incoming::Other => None,
    }
}
