//! Simulated drivers: each holds one socket, streams its position, answers
//! offers, and carries the orders it wins from the restaurant to the door.
//!
//! A driver works its orders one after the other (the engine may give it
//! up to `max_active_orders`): drive to the restaurant, wait there until the
//! order is READY_FOR_PICKUP (its socket hears its orders' updates without
//! asking), `pick_up`, drive to the dropoff, `deliver`. Status changes go
//! through HTTP in tasks of their own, so the position stream never waits
//! on the store. Orders it still carries from an earlier run (the server
//! sends their snapshots when the socket opens) are finished too.
//!
//! When its node dies, a driver reopens its socket on another node and goes
//! on where it was: its jobs live here, not on the socket, and the new
//! node's snapshots of the orders it carries bring their statuses back.
//! Offers it was waiting on died with the old socket, so they are dropped
//! (an order they won comes back as a snapshot, and is adopted).

use super::Ctx;
use super::api::Session;
use super::city::{City, bearing, step_toward};
use super::nodes::Home;
use super::socket::{self, Event, Held, Incoming, Outgoing, Socket};
use super::stats::Stats;
use actors::domain::geo::distance_km;
use actors::domain::model::{LatLon, Order, OrderId, OrderStatus};
use futures::StreamExt;
use rand::Rng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

/// How fast an idle driver drifts about (simulated m/s).
const DRIFT_MPS: f64 = 1.5;
/// How far from a restaurant an idle driver wanders to.
const WANDER_KM: f64 = 1.5;
/// A failed `pick_up`/`deliver` is retried this much later, this many
/// times, and then the order is left alone (each failure is counted).
const RETRY_AFTER: Duration = Duration::from_secs(1);
const MAX_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leg {
    ToRestaurant,
    AtRestaurant,
    ToCustomer,
    AtDoor,
}

struct Job {
    order_id: OrderId,
    pickup: LatLon,
    dropoff: LatLon,
    leg: Leg,
    in_flight: bool,
    attempts: u32,
    retry_at: Instant,
}

/// An accepted offer, until the engine says whether it became ours: one
/// order, or a bundle of one restaurant in drop-off sequence.
struct Offered {
    pickup: LatLon,
    orders: Vec<(OrderId, LatLon)>,
}

/// A status change's HTTP result, back from its task.
struct Outcome {
    order_id: OrderId,
    ok: bool,
}

struct Driver {
    ctx: Arc<Ctx>,
    city: Arc<City>,
    id: i64,
    token: Arc<str>,
    /// The node its socket and its requests go to.
    home: Home,
    rng: StdRng,
    at: LatLon,
    heading: f64,
    wander_to: LatLon,
    jobs: Vec<Job>,
    offers: HashMap<i64, Offered>,
    statuses: HashMap<OrderId, OrderStatus>,
    outcomes: mpsc::Sender<Outcome>,
}

/// Runs one driver until the run stops or its socket ends. It streams
/// nothing before `go`, so the run's clock covers every update.
pub async fn run(
    ctx: Arc<Ctx>,
    city: Arc<City>,
    (session, home): (Session, Home),
    socket: Socket,
    start: LatLon,
    mut rng: StdRng,
    go: tokio_util::sync::CancellationToken,
) {
    let _held = Held::new(ctx.stats.clone());
    let stats = ctx.stats.clone();
    let (mut sink, mut stream) = socket.split();
    let period = Duration::from_secs_f64(1.0 / ctx.args.location_hz);
    let (outcomes, mut results) = mpsc::channel(8);
    let mut driver = Driver {
        heading: rng.random_range(0.0..360.0),
        wander_to: city.near_a_kitchen(&mut rng, WANDER_KM).unwrap_or(start),
        ctx: ctx.clone(),
        city,
        id: session.user_id,
        token: session.token.into(),
        home,
        rng,
        at: start,
        jobs: Vec::new(),
        offers: HashMap::new(),
        statuses: HashMap::new(),
        outcomes,
    };
    // Until `go` the driver stands still but reads its socket (pings, and
    // snapshots of orders it still carries); then its updates are spread
    // over the period instead of bursting together.
    let mut moving = false;
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = Instant::now();
    ctx.nodes.driver_is_at(driver.id, &driver.home);
    loop {
        let out = tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = go.cancelled(), if !moving => {
                moving = true;
                last = Instant::now();
                ticks.reset_at(last + period.mul_f64(driver.rng.random()));
                None
            }
            _ = ticks.tick(), if moving => {
                let now = Instant::now();
                // A stalled process should not teleport its drivers.
                let dt = now.duration_since(last).min(period * 5);
                last = now;
                Some(driver.tick(dt))
            }
            frame = stream.next() => match socket::event(frame, &stats) {
                Event::Message(message) => driver.on_message(message),
                Event::Nothing => None,
                Event::Ended { code, detail } => {
                    if ctx.stop.is_cancelled() {
                        return;
                    }
                    stats.error(&code, || format!("driver socket: {detail}"));
                    match driver.reconnect().await {
                        Some(socket) => (sink, stream) = socket.split(),
                        None => return,
                    }
                    None
                }
            },
            Some(outcome) = results.recv() => {
                driver.on_outcome(outcome);
                None
            }
        };
        let Some(out) = out else { continue };
        let is_location = matches!(out, Outgoing::Location(_));
        if !socket::send(&mut sink, &out, &stats).await {
            // This message is lost with the socket; the next tick's
            // position goes to the new node.
            match driver.reconnect().await {
                Some(socket) => (sink, stream) = socket.split(),
                None => return,
            }
            continue;
        }
        if is_location {
            Stats::add(&stats.locations_sent);
        }
    }
    socket::close(sink, stream).await;
}

impl Driver {
    /// A socket on another node after this one's died (see `nodes`).
    async fn reconnect(&mut self) -> Option<Socket> {
        let ctx = &self.ctx;
        let socket = ctx
            .nodes
            .reconnect(&self.home, &self.token, &ctx.stop, &ctx.stats)
            .await?;
        self.offers.clear();
        ctx.nodes.driver_is_at(self.id, &self.home);
        Some(socket)
    }

    /// Moves for `dt` of wall time, acts on arrival, and says where it is.
    fn tick(&mut self, dt: Duration) -> Outgoing {
        let args = &self.ctx.args;
        // A bundle is picked up whole before the first drop-off.
        let waiting_for_food = self.jobs.iter().any(|j| j.leg == Leg::AtRestaurant);
        let (target, mps) = match self.jobs.first() {
            _ if waiting_for_food => (None, 0.0),
            Some(job) if job.leg == Leg::ToRestaurant => (Some(job.pickup), args.speed_mps),
            Some(job) if job.leg == Leg::ToCustomer => (Some(job.dropoff), args.speed_mps),
            Some(_) => (None, 0.0),
            None => (Some(self.wander_to), DRIFT_MPS),
        };
        let mut speed = 0.0;
        if let Some(to) = target {
            let km = mps * args.time_scale * dt.as_secs_f64() / 1000.0;
            if distance_km(self.at, to) > 0.001 {
                self.heading = bearing(self.at, to);
            }
            let (at, arrived) = step_toward(self.at, to, km);
            self.at = at;
            speed = mps;
            if arrived {
                self.arrived();
            }
        }
        self.act();
        socket::location(
            self.at.lat,
            self.at.lon,
            self.heading,
            speed,
            socket::now_ms() as i64,
        )
    }

    fn arrived(&mut self) {
        match self.jobs.first().map(|j| (j.leg, j.pickup)) {
            Some((Leg::ToRestaurant, pickup)) => {
                // Every order of the bundle waits here with the first.
                for job in &mut self.jobs {
                    if job.leg == Leg::ToRestaurant && distance_km(job.pickup, pickup) < 0.001 {
                        job.leg = Leg::AtRestaurant;
                    }
                }
            }
            Some((Leg::ToCustomer, _)) => {
                if let Some(job) = self.jobs.first_mut() {
                    job.leg = Leg::AtDoor;
                }
            }
            Some(_) => {}
            None => {
                self.wander_to = self
                    .city
                    .near_a_kitchen(&mut self.rng, WANDER_KM)
                    .unwrap_or(self.at);
            }
        }
    }

    /// Starts the current order's next status change when it is due: the
    /// pickup of any order waiting at the restaurant (a bundle's too), else
    /// the first order's drop-off.
    fn act(&mut self) {
        let due = self
            .jobs
            .iter()
            .position(|j| {
                j.leg == Leg::AtRestaurant
                    && !j.in_flight
                    && self.statuses.get(&j.order_id) == Some(&OrderStatus::ReadyForPickup)
            })
            .unwrap_or(0);
        let Some(job) = self.jobs.get_mut(due) else {
            return;
        };
        if job.in_flight || Instant::now() < job.retry_at {
            return;
        }
        let action = match (job.leg, self.statuses.get(&job.order_id)) {
            (Leg::AtRestaurant, Some(OrderStatus::ReadyForPickup)) => "pick_up",
            (Leg::AtDoor, _) => "deliver",
            _ => return,
        };
        job.in_flight = true;
        let order_id = job.order_id;
        let ctx = self.ctx.clone();
        let token = self.token.clone();
        let home = self.home.clone();
        let outcomes = self.outcomes.clone();
        self.ctx.requests.spawn(async move {
            let result = ctx.nodes.api(&home).act(&token, order_id, action).await;
            match &result {
                Ok(_) if action == "pick_up" => Stats::add(&ctx.stats.orders_picked_up),
                Ok(_) => Stats::add(&ctx.stats.orders_delivered),
                Err(failure) => ctx.stats.error(&failure.code, || {
                    format!("{action} order {order_id}: {failure}")
                }),
            }
            let _ = outcomes
                .send(Outcome {
                    order_id,
                    ok: result.is_ok(),
                })
                .await;
        });
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let Some(i) = self
            .jobs
            .iter()
            .position(|j| j.order_id == outcome.order_id)
        else {
            return;
        };
        let job = &mut self.jobs[i];
        job.in_flight = false;
        if outcome.ok {
            job.attempts = 0;
            match job.leg {
                Leg::AtRestaurant => job.leg = Leg::ToCustomer,
                Leg::AtDoor => self.finish(outcome.order_id),
                _ => {}
            }
        } else {
            job.attempts += 1;
            job.retry_at = Instant::now() + RETRY_AFTER;
            if job.attempts >= MAX_ATTEMPTS {
                self.finish(outcome.order_id);
            }
        }
    }

    fn finish(&mut self, order_id: OrderId) {
        self.jobs.retain(|j| j.order_id != order_id);
        self.statuses.remove(&order_id);
    }

    /// Takes on an order assigned to this driver that it has no job for:
    /// one an earlier run of the simulator left it carrying.
    fn adopt(&mut self, order: &Order) {
        let leg = match order.status {
            OrderStatus::Confirmed | OrderStatus::Preparing | OrderStatus::ReadyForPickup => {
                Leg::ToRestaurant
            }
            OrderStatus::PickedUp => Leg::ToCustomer,
            _ => return,
        };
        if order.driver_id != Some(self.id)
            || self.jobs.iter().any(|j| j.order_id == order.id)
            || self
                .offers
                .values()
                .any(|o| o.orders.iter().any(|(id, _)| *id == order.id))
        {
            return;
        }
        let Some(pickup) = self.city.places.get(&order.restaurant_id).copied() else {
            return;
        };
        Stats::add(&self.ctx.stats.orders_resumed);
        self.jobs.push(Job {
            order_id: order.id,
            pickup,
            dropoff: LatLon {
                lat: order.delivery_address.lat,
                lon: order.delivery_address.lon,
            },
            leg,
            in_flight: false,
            attempts: 0,
            retry_at: Instant::now(),
        });
    }

    fn on_message(&mut self, message: Incoming) -> Option<Outgoing> {
        match message {
            Incoming::Offer {
                offer_id,
                order_id,
                pickup,
                dropoff,
                dropoffs,
            } => {
                let stats = &self.ctx.stats;
                Stats::add(&stats.offers);
                let orders: Vec<(OrderId, LatLon)> = if dropoffs.is_empty() {
                    vec![(order_id, dropoff)]
                } else {
                    dropoffs
                        .iter()
                        .map(|d| {
                            (
                                d.order_id,
                                LatLon {
                                    lat: d.lat,
                                    lon: d.lon,
                                },
                            )
                        })
                        .collect()
                };
                if orders.len() > 1 {
                    Stats::add(&stats.offers_bundled);
                }
                let accept = self.rng.random_bool(self.ctx.args.accept_probability);
                if accept {
                    Stats::add(&stats.offers_accepted);
                    self.offers.insert(offer_id, Offered { pickup, orders });
                }
                Some(Outgoing::OfferResponse { offer_id, accept })
            }
            Incoming::OfferResult {
                offer_id,
                order_id,
                result,
            } => {
                let offered = self.offers.remove(&offer_id)?;
                let ours =
                    result == "assigned" && offered.orders.first().map(|o| o.0) == Some(order_id);
                if !ours {
                    return None;
                }
                // A bundle: one job per order, in drop-off sequence.
                for (id, dropoff) in offered.orders {
                    if self.jobs.iter().any(|j| j.order_id == id) {
                        continue;
                    }
                    self.jobs.push(Job {
                        order_id: id,
                        pickup: offered.pickup,
                        dropoff,
                        leg: Leg::ToRestaurant,
                        in_flight: false,
                        attempts: 0,
                        retry_at: Instant::now(),
                    });
                }
                None
            }
            Incoming::Snapshot { order } | Incoming::OrderUpdate { order } => {
                self.adopt(&order);
                self.statuses.insert(order.id, order.status);
                match order.status {
                    OrderStatus::Delivered | OrderStatus::Cancelled => self.finish(order.id),
                    // Picked up (a retry whose first try did land): on to
                    // the customer.
                    OrderStatus::PickedUp => {
                        for job in &mut self.jobs {
                            if job.order_id == order.id && !job.in_flight && job.leg != Leg::AtDoor
                            {
                                job.leg = Leg::ToCustomer;
                            }
                        }
                    }
                    _ => {}
                }
                self.act();
                None
            }
            Incoming::DriverLocation { .. } | Incoming::Error { .. } | Incoming::Other => None,
        }
    }
}
