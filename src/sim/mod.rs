//! `dispatchd sim`: a city simulator that drives a running dispatchd over
//! its public protocol only (HTTP and `/ws`), and measures it from the
//! client side.
//!
//! - `accounts`: signing the parties in (demo accounts, then `sim-*`).
//! - `city`: the restaurants taking part, and the geometry of moving.
//! - `driver`, `customer`, `restaurant`: one task per simulated party.
//! - `idle`: connection-capacity mode (`--idle-connections`).
//! - `api`, `socket`: the HTTP client and the WebSocket end.
//! - `nodes`: the nodes of `--server`, who is at home where, and moving a
//!   party to another node when its own dies.
//! - `stats`: what is measured, and the reports.
//!
//! A run: set up (sign in, fetch menus, open sockets), run for `--duration`,
//! stop everyone through one cancellation token, give requests in flight a
//! short drain, report. Server errors are counted by code, never fatal;
//! only a server that cannot be reached or has no city to simulate ends the
//! run early. With several nodes a dead node is not fatal either: its
//! parties reconnect to another one.

mod accounts;
mod api;
mod city;
mod customer;
mod driver;
mod idle;
mod nodes;
mod restaurant;
mod socket;
mod stats;

use crate::demo::CITY_CENTER;
use anyhow::bail;
use api::Session;
use city::{City, Kitchen, rng_for};
use futures::StreamExt;
use nodes::{Home, Kind, Nodes};
use socket::Socket;
use stats::{AssignReport, CityReport, LatencyReport, Stats};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the progress line is written to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// After the run: how long requests in flight may take to finish.
const DRAIN: Duration = Duration::from_secs(5);
/// Sockets being opened at once during setup.
const CONNECTING: usize = 64;
/// Orders a customer's socket may be told about before it subscribes.
const CUSTOMER_BACKLOG: usize = 1024;
/// Seed streams, so each party's RNG differs from every other's.
const SEED_DRIVERS: u64 = 1 << 32;
const SEED_RESTAURANTS: u64 = 2 << 32;
const SEED_ORDERS: u64 = 3 << 32;

#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Base URL of the running dispatchd (plain http), or a comma-separated
    /// list of cluster nodes: clients are spread over them, and a client
    /// whose node dies reconnects to the next.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Simulated drivers (demo driver1.. first, then sim-driver-N@sim.local).
    #[arg(long, default_value_t = 50)]
    pub drivers: usize,
    /// Simulated customers (demo customer1.. first, then sim-customer-N@sim.local).
    #[arg(long, default_value_t = 20)]
    pub customers: usize,
    /// Orders per second over all customers (Poisson arrivals).
    #[arg(long, default_value_t = 0.5)]
    pub order_rate: f64,
    /// Stop placing orders after this many attempts, failed ones included
    /// (0: no limit). For fan-out
    /// measurements: a fleet carrying orders, without a growing pile of
    /// orders that no driver is free to take.
    #[arg(long, default_value_t = 0)]
    pub max_orders: u64,
    /// Location updates per second per driver.
    #[arg(long, default_value_t = 1.0)]
    pub location_hz: f64,
    /// Seconds to run (after setup), or to hold idle connections.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub duration: u64,
    /// Seed of every random choice (positions, orders, offer answers).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// End stdout with one JSON line of results.
    #[arg(long)]
    pub json: bool,
    /// Chance that a driver accepts an offer.
    #[arg(long, default_value_t = 0.9)]
    pub accept_probability: f64,
    /// Connection-capacity mode: open this many idle sockets instead of
    /// simulating the city, and report the server's memory per connection.
    #[arg(long, default_value_t = 0)]
    pub idle_connections: usize,
    /// The server's `metrics.token`, for reading its memory from
    /// `/metrics` (same variable as the server's, so one shell serves both).
    #[arg(long, env = "DISPATCH__METRICS__TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Mean seconds a kitchen takes before confirm and before
    /// start_preparing (each delay is uniform in 0.5x..1.5x); mark_ready
    /// follows after the restaurant's prep time divided by --time-scale.
    #[arg(long, default_value_t = 2.0)]
    pub kitchen_secs: f64,
    /// Driving speed in m/s (what drivers report as `speedMps`).
    #[arg(long, default_value_t = 9.0)]
    pub speed_mps: f64,
    /// Simulated seconds of driving per real second, so that trips of a
    /// few kilometres finish within a short run.
    #[arg(long, default_value_t = 30.0)]
    pub time_scale: f64,
    /// Farthest delivery address from its restaurant, in km (kept inside
    /// the restaurant's delivery radius).
    #[arg(long, default_value_t = 4.0)]
    pub dropoff_km: f64,
    /// Use only the N open restaurants nearest the city centre (0: all).
    #[arg(long, default_value_t = 0)]
    pub restaurants: usize,
    /// Sign-ins at once (password hashing is slow on purpose server-side).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub login_concurrency: u64,
}

impl SimArgs {
    fn check(&self) -> anyhow::Result<()> {
        let in_range = |name: &str, value: f64, low: f64, high: f64| {
            if value.is_finite() && (low..=high).contains(&value) {
                Ok(())
            } else {
                Err(anyhow::anyhow!(
                    "--{name} must be between {low} and {high}, not {value}"
                ))
            }
        };
        in_range("order-rate", self.order_rate, 0.0, 100_000.0)?;
        // The server answers RATE_LIMITED past 50 messages a second.
        in_range("location-hz", self.location_hz, 0.01, 50.0)?;
        in_range("accept-probability", self.accept_probability, 0.0, 1.0)?;
        in_range("kitchen-secs", self.kitchen_secs, 0.0, 3600.0)?;
        // The contract's bound on `speedMps`.
        in_range("speed-mps", self.speed_mps, 0.1, 100.0)?;
        in_range("time-scale", self.time_scale, 0.01, 1000.0)?;
        in_range("dropoff-km", self.dropoff_km, 0.3, 100.0)?;
        Ok(())
    }
}

/// What every simulated party shares.
pub(crate) struct Ctx {
    nodes: Nodes,
    stats: Arc<Stats>,
    /// Cancelled when the run ends (or on Ctrl-C).
    stop: CancellationToken,
    /// Requests and sockets that outlive the task that started them; the
    /// end of a run waits (briefly) for them.
    requests: TaskTracker,
    args: SimArgs,
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    args.check()?;
    let nodes = Nodes::connect(&args.server).await?;
    if let Some(limit) = idle::raise_open_file_limit()
        && (limit as usize) < args.idle_connections + args.drivers + args.customers + 256
    {
        eprintln!(
            "sim: warning: the open-file limit is {limit}; raise `ulimit -n` for this many sockets"
        );
    }
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("sim: interrupted; reporting what was measured");
            on_signal.cancel();
        }
    });
    let ctx = Arc::new(Ctx {
        nodes,
        stats: Arc::new(Stats::default()),
        stop,
        requests: TaskTracker::new(),
        args,
    });
    if ctx.args.idle_connections > 0 {
        idle::run(ctx).await
    } else {
        run_city(ctx).await
    }
}

async fn run_city(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let args = &ctx.args;
    let stats = ctx.stats.clone();
    let setup = Instant::now();
    eprintln!("sim: setting up against {}", args.server);

    let mut listed = ctx
        .nodes
        .first()
        .api
        .open_restaurants(CITY_CENTER)
        .await
        .map_err(|failure| anyhow::anyhow!("cannot list restaurants: {failure}"))?;
    let places = listed.iter().map(|r| (r.id, r.location)).collect();
    if args.restaurants > 0 {
        listed.truncate(args.restaurants);
    }
    // Each party's node is fixed before it signs in, so that every call
    // it makes, the sign-in too, goes there.
    let nodes = &ctx.nodes;
    let homes = |kind, n| (0..n).map(move |i| nodes.home(kind, i));
    let staff_homes: Vec<Home> = homes(Kind::Restaurant, listed.len()).collect();
    let driver_homes: Vec<Home> = homes(Kind::Driver, args.drivers).collect();
    let customer_homes: Vec<Home> = homes(Kind::Customer, args.customers).collect();
    let mut who: Vec<_> = listed
        .iter()
        .zip(&staff_homes)
        .map(|(r, home)| (nodes.api(home), accounts::staff(r.id)))
        .collect();
    let people = |role, homes: &[Home]| {
        accounts::people(role, homes.len())
            .into_iter()
            .zip(homes)
            .map(|(person, home)| (nodes.api(home), person))
            .collect::<Vec<_>>()
    };
    who.extend(people("driver", &driver_homes));
    who.extend(people("customer", &customer_homes));
    let mut sessions = accounts::sign_in_all(who, args.login_concurrency as usize, &stats)
        .await
        .into_iter();
    let staff: Vec<Option<Session>> = sessions.by_ref().take(listed.len()).collect();
    let drivers: Vec<(Session, Home)> =
        signed_in(sessions.by_ref().take(args.drivers), driver_homes);
    let customers: Vec<(Session, Home)> = signed_in(sessions, customer_homes);
    approve_registered_drivers(&ctx, &drivers).await;

    let kitchens: Vec<(Kitchen, Session, Home)> =
        futures::stream::iter(listed.into_iter().zip(staff).zip(staff_homes))
            .filter_map(|((restaurant, staff), home)| async move {
                staff.map(|staff| (restaurant, staff, home))
            })
            .map(|(restaurant, staff, home)| {
                let ctx = ctx.clone();
                async move {
                    let menu = match ctx.nodes.api(&home).menu(restaurant.id).await {
                        Ok(menu) => menu,
                        Err(failure) => {
                            ctx.stats.error(&failure.code, || {
                                format!("menu of restaurant {}: {failure}", restaurant.id)
                            });
                            return None;
                        }
                    };
                    let menu: Vec<i64> = menu
                        .iter()
                        .filter(|item| item.is_available)
                        .map(|item| item.id)
                        .collect();
                    (!menu.is_empty()).then(|| {
                        let kitchen = Kitchen {
                            id: restaurant.id,
                            at: restaurant.location,
                            delivery_radius_km: restaurant.delivery_radius_km,
                            prep_time_minutes: restaurant.prep_time_minutes,
                            menu,
                        };
                        (kitchen, staff, home)
                    })
                }
            })
            .buffered(8)
            .filter_map(|kitchen| async move { kitchen })
            .collect()
            .await;
    if kitchens.is_empty() {
        bail!(
            "no restaurant can take part: none is open with available items and staff \
             that can sign in (restaurantN@demo.local); is the server running with --demo? {:?}",
            stats.error_examples()
        );
    }
    if drivers.is_empty() && customers.is_empty() {
        bail!(
            "no driver or customer could sign in: {:?}",
            stats.error_examples()
        );
    }
    // Restaurants first, so their feeds are watched before any order; and
    // only those whose staff is listening take orders.
    let mut parties = JoinSet::new();
    let staff_sockets = open_all(
        &ctx,
        kitchens
            .iter()
            .map(|(_, s, home)| (s.token.clone(), home.clone()))
            .collect(),
    )
    .await;
    let mut listening = Vec::new();
    for ((kitchen, session, home), socket) in kitchens.into_iter().zip(staff_sockets) {
        if let Some(socket) = socket {
            let rng = rng_for(args.seed, SEED_RESTAURANTS + kitchen.id as u64);
            parties.spawn(restaurant::run(
                ctx.clone(),
                (kitchen.id, kitchen.prep_time_minutes),
                (session.token, home),
                socket,
                rng,
            ));
            listening.push(kitchen);
        }
    }
    if listening.is_empty() {
        bail!(
            "no restaurant staff could open a socket: {:?}",
            stats.error_examples()
        );
    }
    let city = Arc::new(City {
        kitchens: listening,
        places,
    });
    let go = CancellationToken::new();
    let driver_sockets = open_all(
        &ctx,
        drivers
            .iter()
            .map(|(s, home)| (s.token.clone(), home.clone()))
            .collect(),
    )
    .await;
    let mut driving = 0;
    for (i, ((session, home), socket)) in drivers.into_iter().zip(driver_sockets).enumerate() {
        if let Some(socket) = socket {
            driving += 1;
            let mut rng = rng_for(args.seed, SEED_DRIVERS + i as u64);
            let start = city.near_a_kitchen(&mut rng, 2.0).unwrap_or(CITY_CENTER);
            let party = driver::run(
                ctx.clone(),
                city.clone(),
                (session, home),
                socket,
                start,
                rng,
                go.clone(),
            );
            parties.spawn(party);
        }
    }
    let customer_sockets = open_all(
        &ctx,
        customers
            .iter()
            .map(|(s, home)| (s.token.clone(), home.clone()))
            .collect(),
    )
    .await;
    let mut orderers = Vec::new();
    for ((session, home), socket) in customers.into_iter().zip(customer_sockets) {
        if let Some(socket) = socket {
            let (orders, inbox) = tokio::sync::mpsc::channel(CUSTOMER_BACKLOG);
            let token: Arc<str> = session.token.into();
            orderers.push(customer::Orderer {
                token: token.clone(),
                home: home.clone(),
                orders,
            });
            parties.spawn(customer::run(ctx.clone(), (token, home), socket, inbox));
        }
    }
    eprintln!(
        "sim: ready in {:.1}s: {} restaurants, {driving} drivers, {} customers; running {}s",
        setup.elapsed().as_secs_f64(),
        city.kitchens.len(),
        orderers.len(),
        args.duration
    );

    let ordering = orderers.len();
    let started = Instant::now();
    go.cancel();
    parties.spawn(customer::place_orders(
        ctx.clone(),
        city.clone(),
        orderers,
        rng_for(args.seed, SEED_ORDERS),
    ));
    let progress = tokio::spawn(progress(ctx.clone(), started));
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(args.duration)) => {}
        _ = ctx.stop.cancelled() => {}
    }
    let duration_secs = started.elapsed().as_secs_f64();
    let connections = stats.connections_now();
    ctx.stop.cancel();
    progress.abort();
    let drained = tokio::time::timeout(DRAIN, async {
        while parties.join_next().await.is_some() {}
        ctx.requests.close();
        ctx.requests.wait().await;
    })
    .await;
    if drained.is_err() {
        eprintln!("sim: some requests were still in flight after the {DRAIN:?} drain");
    }

    let fanout = stats.fanout();
    let several = ctx.nodes.several();
    let assignment = stats.assignment();
    let sent = Stats::get(&stats.locations_sent);
    let received = Stats::get(&stats.locations_received);
    let per_sec = |n: u64| ((n as f64 / duration_secs) * 10.0).round() / 10.0;
    let report = CityReport {
        server: args.server.clone(),
        duration_secs: (duration_secs * 1000.0).round() / 1000.0,
        drivers: driving,
        customers: ordering,
        restaurants: city.kitchens.len(),
        location_updates_sent: sent,
        location_updates_sent_per_sec: per_sec(sent),
        location_updates_received: received,
        location_updates_per_sec: per_sec(received),
        fanout_latency_ms: LatencyReport::from(&fanout),
        fanout_cross_node_latency_ms: several
            .then(|| LatencyReport::from(&stats.fanout_cross_node())),
        orders_placed: Stats::get(&stats.orders_placed),
        orders_assigned: Stats::get(&stats.orders_assigned),
        orders_picked_up: Stats::get(&stats.orders_picked_up),
        orders_delivered: Stats::get(&stats.orders_delivered),
        orders_resumed: Stats::get(&stats.orders_resumed),
        assign_secs: AssignReport::from(&assignment),
        offers: Stats::get(&stats.offers),
        offers_accepted: Stats::get(&stats.offers_accepted),
        offers_bundled: Stats::get(&stats.offers_bundled),
        errors: stats.errors(),
        connections,
        reconnections: several.then(|| Stats::get(&stats.reconnections)),
        customer_resume_ms: several.then(|| LatencyReport::from(&stats.customer_resume())),
    };
    print_city(&report);
    print_errors(&stats);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    Ok(())
}

/// Pairs the parties that signed in with their homes.
fn signed_in(
    sessions: impl Iterator<Item = Option<Session>>,
    homes: Vec<Home>,
) -> Vec<(Session, Home)> {
    sessions
        .zip(homes)
        .filter_map(|(session, home)| session.map(|session| (session, home)))
        .collect()
}

/// Opens a socket per token at its home node, a few at a time; `None`
/// where it failed (counted).
async fn open_all(ctx: &Arc<Ctx>, tokens: Vec<(String, Home)>) -> Vec<Option<Socket>> {
    futures::stream::iter(tokens)
        .map(|(token, home)| {
            let ctx = ctx.clone();
            async move {
                match socket::connect(&ctx.nodes.node(&home).target, &token, None).await {
                    Ok(socket) => Some(socket),
                    Err((code, detail)) => {
                        ctx.stats.error(&code, || detail);
                        None
                    }
                }
            }
        })
        .buffered(CONNECTING)
        .collect()
        .await
}

/// A line on stderr every few seconds while the city runs.
async fn progress(ctx: Arc<Ctx>, started: Instant) {
    let stats = &ctx.stats;
    let mut ticks = tokio::time::interval(PROGRESS_EVERY);
    ticks.tick().await;
    let (mut sent, mut received, mut at) = (0, 0, Instant::now());
    loop {
        ticks.tick().await;
        let (now_sent, now_received) = (
            Stats::get(&stats.locations_sent),
            Stats::get(&stats.locations_received),
        );
        let secs = at.elapsed().as_secs_f64().max(0.001);
        let window = stats.take_fanout_window();
        eprintln!(
            "sim: {:>5.0}s  locations {:.0}/s sent, {:.0}/s received (p99 {} ms)  orders {} placed, {} assigned, {} delivered  sockets {}  errors {}",
            started.elapsed().as_secs_f64(),
            (now_sent - sent) as f64 / secs,
            (now_received - received) as f64 / secs,
            show(window.quantile(0.99)),
            Stats::get(&stats.orders_placed),
            Stats::get(&stats.orders_assigned),
            Stats::get(&stats.orders_delivered),
            stats.connections_now(),
            stats.error_total(),
        );
        (sent, received, at) = (now_sent, now_received, Instant::now());
    }
}

fn show(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.3}"))
        .unwrap_or_else(|| "-".into())
}

fn print_city(r: &CityReport) {
    let f = &r.fanout_latency_ms;
    let a = &r.assign_secs;
    println!(
        "dispatchd sim against {}: {:.1} s, {} drivers, {} customers, {} restaurants",
        r.server, r.duration_secs, r.drivers, r.customers, r.restaurants
    );
    println!();
    println!(
        "  {:<28}{:>10}  {:>9.1}/s",
        "location updates sent", r.location_updates_sent, r.location_updates_sent_per_sec
    );
    println!(
        "  {:<28}{:>10}  {:>9.1}/s",
        "location updates received", r.location_updates_received, r.location_updates_per_sec
    );
    match &r.fanout_cross_node_latency_ms {
        None => print_latency("fan-out latency (ms)", f),
        Some(cross) => {
            print_latency("fan-out, same node (ms)", f);
            print_latency("fan-out, cross-node (ms)", cross);
        }
    }
    println!("  {:<28}{:>10}", "orders placed", r.orders_placed);
    println!("  {:<28}{:>10}", "orders assigned", r.orders_assigned);
    println!("  {:<28}{:>10}", "orders picked up", r.orders_picked_up);
    println!("  {:<28}{:>10}", "orders delivered", r.orders_delivered);
    if r.orders_resumed > 0 {
        println!(
            "  {:<28}{:>10}",
            "  of them from a past run", r.orders_resumed
        );
    }
    println!(
        "  {:<28}p50 {}  p99 {}  max {}  ({} samples)",
        "confirmed to driver (s)",
        show(a.p50),
        show(a.p99),
        show(a.max),
        a.samples
    );
    println!(
        "  {:<28}{:>10}  ({} accepted, {} bundles)",
        "offers", r.offers, r.offers_accepted, r.offers_bundled
    );
    println!("  {:<28}{:>10}", "connections held", r.connections);
    if let Some(reconnections) = r.reconnections {
        println!("  {:<28}{:>10}", "reconnections", reconnections);
    }
    if let Some(resume) = &r.customer_resume_ms {
        println!(
            "  {:<28}p50 {}  max {}  ({} customers)",
            "resubscribed within (ms)",
            show(resume.p50),
            show(resume.max),
            resume.samples
        );
    }
}

fn print_latency(what: &str, f: &LatencyReport) {
    println!(
        "  {:<28}p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
        what,
        show(f.p50),
        show(f.p99),
        show(f.p999),
        show(f.max),
        f.samples
    );
}

fn print_errors(stats: &Stats) {
    let errors = stats.error_examples();
    if errors.is_empty() {
        println!("  {:<28}{:>10}", "errors", "none");
        return;
    }
    println!("  errors:");
    for (code, count, example) in errors {
        println!("    {code:<26}{count:>10}  first: {example}");
    }
}

/// Registered drivers wait for an admin's approval before they get
/// offers: past the demo's own drivers, the simulator approves its own as
/// the demo admin.
async fn approve_registered_drivers(ctx: &Ctx, drivers: &[(Session, Home)]) {
    if drivers.len() <= crate::demo::DRIVERS {
        return;
    }
    let api = &ctx.nodes.first().api;
    let admin = match api.login("admin@demo.local", crate::demo::PASSWORD).await {
        Ok(admin) => admin,
        Err(failure) => {
            ctx.stats
                .error(&failure.code, || format!("signing in the admin: {failure}"));
            return;
        }
    };
    futures::stream::iter(&drivers[crate::demo::DRIVERS..])
        .for_each_concurrent(16, |driver| {
            let admin = &admin.token;
            let driver = &driver.0;
            async move {
                if let Err(failure) = api.approve_driver(admin, driver.user_id).await {
                    ctx.stats.error(&failure.code, || {
                        format!("approving driver {}: {failure}", driver.user_id)
                    });
                }
            }
        })
        .await;
}
