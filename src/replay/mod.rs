//! `dispatchd replay`: one Meal Delivery Routing Problem instance replayed in
//! simulated time through the engine's own dispatch round (the board of
//! `actors::domain::dispatch`, the geo index, the cost model and the solver),
//! with simulated couriers that follow the instance's rules, as fast as the
//! CPU allows.
//!
//! - [`instance`]: reading an instance folder, and the travel rule;
//! - [`solution`]: the three solution files and the metrics;
//! - [`check`]: the project's own checker of every rule.
//!
//! The instance's metres are laid onto the engine's coordinates as a small
//! patch at the equator (one degree = the haversine radius x pi / 180), where
//! haversine distance equals the plane's to within millimetres over a city;
//! the road factor is chosen so the engine's car travels at the instance's
//! speed. Nothing of the engine changes for real coordinates.

pub mod check;
pub mod instance;
pub mod solution;

use actors::domain::dispatch::{Board, Candidate, WaitingOrder};
use actors::domain::eta::speed_mps;
use actors::domain::geo_index::{DriverEntry, GeoIndex};
use actors::domain::model::{DriverId, LatLon, OrderId, VehicleType};
use actors::engine::config::EngineConfig;
use anyhow::Context;
use chrono::{DateTime, Duration, Utc};
use instance::{Instance, Point};
use solution::{Bundle, Delivery, Move, Report, Solution, Stop};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The instance folder (restaurants.txt, orders.txt, couriers.txt,
    /// instance_parameters.txt), for example ../shared/mdrp/1o50t100s1p100.
    #[arg(long)]
    pub mdrp: PathBuf,
    /// Where to write the three solution files.
    #[arg(long)]
    pub out: PathBuf,
    /// Print one JSON object with the metrics as the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Check the written solution against every rule; fail on a violation.
    #[arg(long)]
    pub check: bool,
    /// A TOML file layered over config/default.toml (the dispatch section).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let settings = crate::settings::Settings::load(args.config.as_deref())?;
    let instance = Instance::read(&args.mdrp)
        .with_context(|| format!("cannot read the instance in {}", args.mdrp.display()))?;
    let started = Instant::now();
    let (solution, hopeless) = replay(&instance, &settings.engine());
    let wall_secs = started.elapsed().as_secs_f64();
    solution.write(&instance, &args.out)?;
    let report = solution.report(&instance, hopeless, wall_secs);
    print_table(&report);
    if args.check {
        let violations = check::check_dir(&instance, &args.out)?;
        if !violations.is_empty() {
            for v in violations.iter().take(20) {
                eprintln!("violation: {v}");
            }
            anyhow::bail!(
                "the solution breaks {} rule(s) of the problem",
                violations.len()
            );
        }
        println!("check: feasible, every rule holds");
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "| instance | orders | delivered | click-to-door mean / p90 / max | ready-to-pickup mean | late | orders/bundle | hopeless | wall s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {:.1} / {} / {} | {:.1} | {:.0}% | {:.2} | {} | {:.2} |",
        r.instance,
        r.orders,
        r.delivered,
        r.click_to_door_min.mean,
        r.click_to_door_min.p90,
        r.click_to_door_min.max,
        r.ready_to_pickup_min.mean,
        100.0 * r.over_target_share,
        r.orders_per_bundle,
        r.hopeless,
        r.wall_secs
    );
}

/// Metres per degree on the engine's sphere, at the equator.
const METRES_PER_DEGREE: f64 = 6_371_008.8 * std::f64::consts::PI / 180.0;

/// Minutes of slack the board keeps below the maximum click-to-door: each
/// leg's travel is rounded up to a whole minute, and a round's decision
/// leaves at the next whole minute.
const ROUNDING_SLACK_MINUTES: i64 = 4;

/// Lays the instance's metres onto the engine's coordinates.
struct Map {
    centre: Point,
}

impl Map {
    fn new(instance: &Instance) -> Map {
        let points = instance.restaurants.iter().map(|r| r.at);
        let (mut min, mut max) = (
            Point {
                x: f64::INFINITY,
                y: f64::INFINITY,
            },
            Point {
                x: f64::NEG_INFINITY,
                y: f64::NEG_INFINITY,
            },
        );
        for p in points {
            min.x = min.x.min(p.x);
            min.y = min.y.min(p.y);
            max.x = max.x.max(p.x);
            max.y = max.y.max(p.y);
        }
        let centre = if min.x.is_finite() {
            Point {
                x: (min.x + max.x) / 2.0,
                y: (min.y + max.y) / 2.0,
            }
        } else {
            Point { x: 0.0, y: 0.0 }
        };
        Map { centre }
    }

    fn at(&self, p: Point) -> LatLon {
        LatLon {
            lat: (p.y - self.centre.y) / METRES_PER_DEGREE,
            lon: (p.x - self.centre.x) / METRES_PER_DEGREE,
        }
    }
}

/// A simulated courier.
struct Courier {
    /// Where it is, or will be when its last job is done.
    at: Point,
    stop: Stop,
    /// When it is free at `at` (minutes).
    free_at: i64,
    on_duty: bool,
    indexed_available: bool,
}

fn minute(epoch: DateTime<Utc>, m: i64) -> DateTime<Utc> {
    epoch + Duration::minutes(m)
}

/// Replays the instance; returns the solution and the number of orders
/// dropped as hopeless.
pub fn replay(instance: &Instance, config: &EngineConfig) -> (Solution, usize) {
    let map = Map::new(instance);
    let mpm = instance.params.metres_per_minute;
    let half_p = instance.half_pickup();
    let half_d = instance.half_dropoff();
    let mut params = config.policy_params();
    // The engine's car, over straight lines, at the instance's speed.
    params.road_factor = speed_mps(VehicleType::Car) * 60.0 / mpm;
    params.pickup_service_secs = (half_p * 60) as f64;
    params.dropoff_service_secs = (half_d * 60) as f64;

    let mut rules = config.board_rules();
    rules.enforce_max_click_to_door = true;
    rules.max_click_to_door_secs =
        ((instance.params.max_click_to_door - ROUNDING_SLACK_MINUTES).max(0) * 60) as f64;
    // The batching window stands in for planning couriers ahead, which
    // the live engine cannot do (its index holds free drivers only). The
    // replay knows when each courier will be free and plans it (the
    // rolling horizon below, whose reservations already decide when to
    // commit a courier); holding an order again on top of that only gave
    // its nearest courier away (benches/README.md, "The batching window").
    if !config.plan_ahead.is_zero() {
        rules.batch_window_secs = 0.0;
    }
    let max_active_orders = params.max_active_orders;
    // A courier planned from its last drop-off is indexed once it will be
    // free within `dispatch.plan_ahead_secs` (committed to, committed only
    // within `commit_within_secs`: see the board's rolling horizon).
    let plan_ahead_min = config.plan_ahead.as_secs_f64() / 60.0;
    let mut board = Board::new(rules, params);
    let epoch = DateTime::<Utc>::UNIX_EPOCH;

    let mut orders_by_time: Vec<usize> = (0..instance.orders.len()).collect();
    orders_by_time.sort_by_key(|&o| (instance.orders[o].placed, o));
    let mut couriers: Vec<Courier> = instance
        .couriers
        .iter()
        .map(|c| Courier {
            at: c.at,
            stop: Stop::Start,
            free_at: c.on,
            on_duty: false,
            indexed_available: false,
        })
        .collect();
    let mut index = GeoIndex::new();
    let mut solution = Solution::default();
    let mut moves_of: Vec<Vec<Move>> = vec![Vec::new(); couriers.len()];
    let mut hopeless = 0;

    let step_ms = config.round_interval.as_millis().max(1) as i64;
    let first = instance
        .orders
        .iter()
        .map(|o| o.placed)
        .chain(instance.couriers.iter().map(|c| c.on))
        .min()
        .unwrap_or(0);
    let last_off = instance.couriers.iter().map(|c| c.off).max().unwrap_or(0);
    let mut next_order = 0;
    let mut now_ms = first * 60_000;
    let no_one_busy = HashSet::new();
    loop {
        let now = epoch + Duration::milliseconds(now_ms);
        let t = now_ms as f64 / 60_000.0;
        // Orders known from their placement, not before.
        while next_order < orders_by_time.len()
            && (instance.orders[orders_by_time[next_order]].placed * 60_000) <= now_ms
        {
            let o = orders_by_time[next_order];
            let order = &instance.orders[o];
            board.open(
                WaitingOrder {
                    order_id: o as OrderId,
                    restaurant_id: order.restaurant as i64,
                    restaurant: map.at(instance.restaurants[order.restaurant].at),
                    dropoff: map.at(order.at),
                    ready_at: minute(epoch, order.ready),
                    placed_at: minute(epoch, order.placed),
                },
                now,
            );
            next_order += 1;
        }
        // Couriers come on duty, come free soon, and go off duty.
        for (c, courier) in couriers.iter_mut().enumerate() {
            let duty = &instance.couriers[c];
            let available = (duty.on as f64) <= t
                && t < duty.off as f64
                && courier.free_at as f64 - plan_ahead_min <= t;
            courier.on_duty = (duty.on as f64) <= t && t < duty.off as f64;
            if available != courier.indexed_available {
                // Only available couriers are indexed, as in the live geo
                // actor's tree of available drivers: a query never walks
                // past the busy ones.
                if available {
                    index.upsert(DriverEntry {
                        id: c as DriverId,
                        at: map.at(courier.at),
                        available,
                        active_orders: 0,
                    });
                } else {
                    index.remove(c as DriverId);
                }
                courier.indexed_available = available;
            }
        }

        if !board.is_empty() {
            let plan = board.plan(now, &no_one_busy);
            for id in &plan.hopeless {
                board.withdraw(*id);
                hopeless += 1;
            }
            if !plan.queries.is_empty() {
                let answers: Vec<Vec<Candidate>> = plan
                    .queries
                    .iter()
                    .map(|q| {
                        index
                            .nearest_available(q.at, q.k, q.max_km, max_active_orders, |id| {
                                q.exclude.contains(&id)
                            })
                            .into_iter()
                            .map(|n| {
                                let c = n.entry.id as usize;
                                Candidate {
                                    free_in_secs: ((couriers[c].free_at as f64 - t).max(0.0))
                                        * 60.0,
                                    off_in_secs: (instance.couriers[c].off as f64 - t) * 60.0,
                                    ..Candidate::free(n.entry.id, n.entry.at, VehicleType::Car, 0)
                                }
                            })
                            .collect()
                    })
                    .collect();
                let decision = board.decide(plan, answers);
                for assignment in decision.assignments {
                    let c = assignment.driver.driver_id as usize;
                    let orders: Vec<usize> =
                        assignment.orders.iter().map(|o| *o as usize).collect();
                    match schedule(instance, &couriers[c], c, &orders, now_ms) {
                        Some(trip) => {
                            for o in &assignment.orders {
                                board.withdraw(*o);
                            }
                            let courier = &mut couriers[c];
                            courier.at = trip.ends_at;
                            courier.stop = Stop::Order(*orders.last().unwrap_or(&0));
                            courier.free_at = trip.free_at;
                            index.remove(c as DriverId);
                            courier.indexed_available = false;
                            moves_of[c].extend(trip.moves);
                            solution.deliveries.extend(trip.deliveries);
                            solution.bundles.push(trip.bundle);
                        }
                        None => {
                            // The whole-minute rounding broke a rule the
                            // board planned within: this courier declines.
                            for o in &assignment.orders {
                                board.offer_ended(*o, c as DriverId, true);
                            }
                        }
                    }
                }
            }
        }

        let all_known = next_order >= orders_by_time.len();
        if (all_known && board.is_empty()) || t > (last_off + 1) as f64 {
            break;
        }
        now_ms += step_ms;
    }
    // Whatever is still waiting when every courier is gone stays undelivered.
    solution.moves = moves_of.into_iter().flatten().collect();
    solution.bundles.sort_by_key(|b| (b.assigned, b.courier));
    (solution, hopeless)
}

struct Trip {
    bundle: Bundle,
    deliveries: Vec<Delivery>,
    moves: Vec<Move>,
    ends_at: Point,
    free_at: i64,
}

/// The courier's exact trip for `orders` (one restaurant, in drop-off
/// sequence) decided at `now_ms`, by the instance's rules; `None` if it
/// would pick up after the courier's shift or deliver an order past the
/// maximum.
fn schedule(
    instance: &Instance,
    courier: &Courier,
    c: usize,
    orders: &[usize],
    now_ms: i64,
) -> Option<Trip> {
    let first = *orders.first()?;
    let restaurant = instance.orders[first].restaurant;
    let r_at = instance.restaurants[restaurant].at;
    let assigned = (now_ms + 59_999).div_euclid(60_000);
    let departure = assigned.max(courier.free_at);
    let arrival = departure + instance.travel(courier.at, r_at);
    let ready = orders.iter().map(|o| instance.orders[*o].ready).max()?;
    let pickup = ready.max(arrival + instance.half_pickup());
    if pickup > instance.couriers[c].off {
        return None;
    }
    let mut moves = vec![Move {
        courier: c,
        departure,
        origin: courier.stop,
        destination: Stop::Restaurant(restaurant),
    }];
    let mut deliveries = Vec::with_capacity(orders.len());
    let mut leave = pickup + instance.half_pickup();
    let mut at = r_at;
    let mut origin = Stop::Restaurant(restaurant);
    for &o in orders {
        let order = &instance.orders[o];
        if order.restaurant != restaurant {
            return None;
        }
        let dropoff = leave + instance.travel(at, order.at) + instance.half_dropoff();
        if dropoff - order.placed > instance.params.max_click_to_door {
            return None;
        }
        moves.push(Move {
            courier: c,
            departure: leave,
            origin,
            destination: Stop::Order(o),
        });
        deliveries.push(Delivery {
            order: o,
            pickup,
            dropoff,
            courier: c,
        });
        leave = dropoff + instance.half_dropoff();
        at = order.at;
        origin = Stop::Order(o);
    }
    Some(Trip {
        bundle: Bundle {
            assigned,
            pickup,
            courier: c,
            orders: orders.to_vec(),
        },
        deliveries,
        moves,
        ends_at: at,
        free_at: leave,
    })
}
