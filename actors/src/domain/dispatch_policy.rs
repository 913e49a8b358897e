//! The dispatch policy: what a driver-order pairing costs, and which pairings
//! one dispatch round makes (DESIGN.md "Matching").
//!
//! Pure functions only. Times are seconds relative to the round's start, so a
//! round is deterministic and can be tested and benchmarked without actors.
//! [`scenario`] builds seeded synthetic cities to compare [`assign_round`]
//! with the [`assign_greedy`] baseline.

use crate::domain::eta::{DEFAULT_ROAD_FACTOR, travel_secs};
use crate::domain::geo::distance_km;
use crate::domain::model::{DriverId, LatLon, OrderId, VehicleType};
use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};

/// Tunables of the policy. Every weight is in seconds of cost per unit and is
/// meant to be non-negative.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyParams {
    /// Streets are longer than the crow flies (CONTRACT.md "Dispatch").
    pub road_factor: f64,
    /// A driver holding this many active orders gets no offers.
    pub max_active_orders: u32,
    /// Cost per second of driving to the restaurant, on top of the pickup
    /// term. Idle time at the restaurant is not charged again (the pickup
    /// term already spends the driver until the food is ready), so among
    /// drivers who would all wait for the food this makes the nearest win,
    /// instead of rewarding one that arrives later by driving further.
    pub travel_weight: f64,
    /// Cost per second ready food waits for its driver, on top of the pickup
    /// term that already counts that second once: cold food is what customers
    /// notice, so it weighs more than driver idling.
    pub food_wait_weight: f64,
    /// Cost per order the driver already carries: each one is a detour that
    /// delays this order and risks the first one going cold.
    pub load_penalty_secs: f64,
}

impl Default for PolicyParams {
    fn default() -> Self {
        PolicyParams {
            road_factor: DEFAULT_ROAD_FACTOR,
            max_active_orders: 2,
            travel_weight: 0.25,
            food_wait_weight: 1.0,
            load_penalty_secs: 300.0,
        }
    }
}

/// An order waiting for a driver in this round.
#[derive(Debug, Clone)]
pub struct OpenOrder {
    pub order_id: OrderId,
    pub restaurant: LatLon,
    pub dropoff: LatLon,
    /// When the food is ready, in seconds from now; `<= 0` means it already is.
    pub ready_in_secs: f64,
}

/// A driver the geo index found near an order's restaurant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub driver_id: DriverId,
    pub at: LatLon,
    pub vehicle: VehicleType,
    pub active_orders: u32,
}

/// One offer the round decided to make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pairing {
    pub order_id: OrderId,
    pub driver_id: DriverId,
    /// [`pairing_cost`] of this pair, in seconds.
    pub cost: f64,
}

/// Cost in seconds of giving `order` to `driver`:
///
/// ```text
/// travel = travel_secs(driver.at, order.restaurant, driver.vehicle, road_factor)
/// ready  = max(order.ready_in_secs, 0)
/// cost   = max(travel, ready)                          // when pickup can happen
///        + travel_weight      * travel                 // the driving itself
///        + food_wait_weight   * max(travel - ready, 0) // food waits for driver
///        + load_penalty_secs  * driver.active_orders
/// ```
///
/// Food that was ready before now counts from now: the time it has already
/// waited is the same whichever driver is chosen, and counting it would make
/// the longest-waiting orders the most expensive to assign. A travel time
/// that is not finite (a NaN coordinate) gives an infinite cost, which both
/// assigners treat as "not a candidate".
pub fn pairing_cost(order: &OpenOrder, driver: &Candidate, params: &PolicyParams) -> f64 {
    let travel = travel_secs(
        driver.at,
        order.restaurant,
        driver.vehicle,
        params.road_factor,
    );
    // `f64::max` ignores NaN, so a NaN travel time would otherwise vanish
    // into a plausible-looking cost below.
    if !travel.is_finite() {
        return f64::INFINITY;
    }
    let ready = order.ready_in_secs.max(0.0);
    let food_wait = (travel - ready).max(0.0);
    travel.max(ready)
        + params.travel_weight * travel
        + params.food_wait_weight * food_wait
        + params.load_penalty_secs * f64::from(driver.active_orders)
}

/// Whether a driver may be offered anything at all.
pub fn has_capacity(driver: &Candidate, params: &PolicyParams) -> bool {
    driver.active_orders < params.max_active_orders
}

/// The next search radius after a round that found nobody (or everyone
/// declined): up from `start_km` in steps of `start_km`, capped at `max_km`;
/// `None` once `current_km` is already at `max_km`.
///
/// Linear steps, not doubling: the searched area already grows with the
/// square of the radius, and small steps keep the far drivers out until the
/// nearer rings have had their chance.
pub fn widen_radius(current_km: f64, start_km: f64, max_km: f64) -> Option<f64> {
    // Anything but "less" ends the widening, NaN radii included.
    if current_km.partial_cmp(&max_km) != Some(Ordering::Less) {
        return None;
    }
    // A zero, negative or NaN start could never step forward: go straight to
    // the maximum instead of looping forever.
    let step = if start_km > 0.0 { start_km } else { max_km };
    let next = if current_km < start_km {
        start_km
    } else {
        current_km + step
    };
    Some(next.min(max_km))
}

/// Costs are clamped to this (about eleven days) so that the integer weights
/// of the solver cannot overflow, whatever the coordinates.
const MAX_COST_SECS: f64 = 1.0e6;

/// The solver works on integer weights: milliseconds keep far more precision
/// than the cost model has.
const WEIGHT_PER_SEC: f64 = 1000.0;

/// Largest Kuhn-Munkres problem solved in one piece, as `rows² x columns`
/// (rows being the smaller side), the solver's worst-case growth. Measured on
/// the 2-core dev machine (release build): a contested 250 x 297 component
/// (18.6M) solves in about 10 ms, so one solve here stays under about 20 ms,
/// and the densest rounds tried (1,000 orders, k = 16 or 32, one giant
/// component) take 3-30 ms in chunks against up to 240 ms solved whole.
/// Ordinary rounds never get near it: with k = 8 the largest component of the
/// 1,000 x 5,000 benchmark city is 34 orders x 33 drivers.
const MAX_EXACT_WORK: u64 = 32_000_000;

const NONE: usize = usize::MAX;

/// One usable (order, driver) pair of the round.
struct Edge {
    /// Index into `Graph::drivers`.
    driver: usize,
    cost: f64,
    weight: i64,
}

/// The round's bipartite graph: only the candidate lists are edges.
struct Graph<'a> {
    orders: &'a [OpenOrder],
    drivers: Vec<Candidate>,
    /// `edges[o]` are the usable drivers of `orders[o]`, without duplicates.
    edges: Vec<Vec<Edge>>,
}

impl<'a> Graph<'a> {
    fn build(
        orders: &'a [OpenOrder],
        candidates: &[Vec<Candidate>],
        params: &PolicyParams,
    ) -> Self {
        let mut index: HashMap<DriverId, usize> = HashMap::new();
        let mut drivers = Vec::new();
        // Orders without a candidate list (a short `candidates`) get none.
        let mut edges: Vec<Vec<Edge>> = Vec::with_capacity(orders.len());
        for (o, order) in orders.iter().enumerate() {
            let list = candidates.get(o).map_or(&[][..], Vec::as_slice);
            let mut mine: Vec<Edge> = Vec::with_capacity(list.len());
            for candidate in list {
                if !has_capacity(candidate, params) {
                    continue;
                }
                let cost = pairing_cost(order, candidate, params);
                if !cost.is_finite() {
                    continue;
                }
                let driver = *index.entry(candidate.driver_id).or_insert_with(|| {
                    drivers.push(*candidate);
                    drivers.len() - 1
                });
                // The index may list a driver twice; lists are short (k ~ 8).
                if mine.iter().any(|e| e.driver == driver) {
                    continue;
                }
                let weight = (cost.clamp(0.0, MAX_COST_SECS) * WEIGHT_PER_SEC).round() as i64;
                mine.push(Edge {
                    driver,
                    cost,
                    weight,
                });
            }
            // Cheapest first: the pairing repair tries them in this order.
            mine.sort_by_key(|e| (e.weight, e.driver));
            edges.push(mine);
        }
        Graph {
            orders,
            drivers,
            edges,
        }
    }

    /// Groups the orders that share drivers, directly or through a chain:
    /// different components cannot affect each other's best assignment.
    fn components(&self) -> Vec<Vec<usize>> {
        let n = self.orders.len();
        let mut sets = DisjointSets::new(n + self.drivers.len());
        for (o, edges) in self.edges.iter().enumerate() {
            for e in edges {
                sets.union(o, n + e.driver);
            }
        }
        let mut component_of_root = vec![NONE; n + self.drivers.len()];
        let mut components: Vec<Vec<usize>> = Vec::new();
        for o in 0..n {
            if self.edges[o].is_empty() {
                continue;
            }
            let root = sets.find(o);
            if component_of_root[root] == NONE {
                component_of_root[root] = components.len();
                components.push(Vec::new());
            }
            components[component_of_root[root]].push(o);
        }
        components
    }
}

/// Union-find with path halving and union by size.
struct DisjointSets {
    parent: Vec<usize>,
    size: Vec<usize>,
}

impl DisjointSets {
    fn new(n: usize) -> Self {
        DisjointSets {
            parent: (0..n).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
    }
}

/// The round's matching as it is built, and scratch space for the solves.
struct Solver<'g, 'a> {
    graph: &'g Graph<'a>,
    /// The driver given to each order, `NONE` if none yet.
    order_driver: Vec<usize>,
    /// The order given to each driver, `NONE` if none yet.
    driver_order: Vec<usize>,
    /// Column of each driver in the current matrix, `NONE` outside a solve.
    column: Vec<usize>,
}

fn work(orders: usize, drivers: usize) -> u64 {
    let (small, large) = (orders.min(drivers) as u64, orders.max(drivers) as u64);
    small.saturating_mul(small).saturating_mul(large)
}

impl Solver<'_, '_> {
    /// How many drivers `orders` list between them. Borrows `column` as the
    /// "seen" mark, which is all `NONE` outside a solve.
    fn distinct_drivers(&mut self, orders: &[usize]) -> usize {
        let mut seen = Vec::new();
        for &o in orders {
            for e in &self.graph.edges[o] {
                if self.column[e.driver] == NONE {
                    self.column[e.driver] = 0;
                    seen.push(e.driver);
                }
            }
        }
        for &d in &seen {
            self.column[d] = NONE;
        }
        seen.len()
    }

    /// Cuts a component into spatial chunks that each fit `budget`, by k-d
    /// halving on the restaurants so that orders competing for the same
    /// drivers mostly stay together. A component that fits is one chunk.
    fn chunks(&mut self, orders: &mut [usize], budget: u64, out: &mut Vec<Vec<usize>>) {
        let drivers = self.distinct_drivers(orders);
        if orders.len() <= 1 || work(orders.len(), drivers) <= budget {
            out.push(orders.to_vec());
            return;
        }
        let all = self.graph.orders;
        let (mut lat_min, mut lat_max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut lon_min, mut lon_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &o in orders.iter() {
            let at = all[o].restaurant;
            lat_min = lat_min.min(at.lat);
            lat_max = lat_max.max(at.lat);
            lon_min = lon_min.min(at.lon);
            lon_max = lon_max.max(at.lon);
        }
        // A degree of longitude shrinks with the cosine of the latitude.
        let lon_scale = ((lat_min + lat_max) / 2.0).to_radians().cos().abs();
        let by_lat = lat_max - lat_min >= (lon_max - lon_min) * lon_scale;
        let key = |o: usize| {
            let at = all[o].restaurant;
            if by_lat { at.lat } else { at.lon }
        };
        orders.sort_by(|&a, &b| key(a).total_cmp(&key(b)).then(a.cmp(&b)));
        let (left, right) = orders.split_at_mut(orders.len() / 2);
        self.chunks(left, budget, out);
        self.chunks(right, budget, out);
    }

    /// Minimum-cost maximum-cardinality matching of `orders` with the drivers
    /// not yet taken, by Kuhn-Munkres on a dense matrix of just these.
    fn solve_exact(&mut self, orders: &[usize]) {
        let graph = self.graph;
        let mut rows_orders = Vec::with_capacity(orders.len());
        let mut col_drivers = Vec::new();
        let mut max_weight = 0_i64;
        for &o in orders {
            let mut usable = false;
            for e in graph.edges[o]
                .iter()
                .filter(|e| self.driver_order[e.driver] == NONE)
            {
                usable = true;
                max_weight = max_weight.max(e.weight);
                if self.column[e.driver] == NONE {
                    self.column[e.driver] = col_drivers.len();
                    col_drivers.push(e.driver);
                }
            }
            if usable {
                rows_orders.push(o);
            }
        }
        // Kuhn-Munkres gives every row a column, so rows must be the smaller
        // side: drivers become the rows when they are fewer.
        let transpose = rows_orders.len() > col_drivers.len();
        let (rows, columns) = if transpose {
            (col_drivers.len(), rows_orders.len())
        } else {
            (rows_orders.len(), col_drivers.len())
        };
        if rows > 0 {
            // Non-edges cost more than any whole matching of real edges, so
            // the optimum uses as few of them as possible (the most pairings)
            // and, among those, the cheapest real edges. A row left on a
            // non-edge is simply unassigned, so rows being the smaller side
            // already leaves room for that: no dummy columns. Cannot overflow:
            // weights are at most 1e9 and the work budget keeps `rows` under
            // about 320 (rows³ <= MAX_EXACT_WORK), so even the solver's sums
            // of labels stay below 1e15.
            let forbidden = max_weight * rows as i64 + 1;
            let mut matrix = Matrix::new(rows, columns, forbidden);
            for (r, &o) in rows_orders.iter().enumerate() {
                for e in graph.edges[o]
                    .iter()
                    .filter(|e| self.driver_order[e.driver] == NONE)
                {
                    let c = self.column[e.driver];
                    let at = if transpose { (c, r) } else { (r, c) };
                    matrix[at] = e.weight;
                }
            }
            let (_, assignment) = kuhn_munkres_min(&matrix);
            for (row, &col) in assignment.iter().enumerate() {
                if matrix[(row, col)] == forbidden {
                    continue;
                }
                let (r, c) = if transpose { (col, row) } else { (row, col) };
                let (o, driver) = (rows_orders[r], col_drivers[c]);
                self.order_driver[o] = driver;
                self.driver_order[driver] = o;
            }
        }
        for &d in &col_drivers {
            self.column[d] = NONE;
        }
    }

    /// Adds pairings to a chunked component along augmenting paths: an order
    /// without a driver takes a driver whose order moves to another of its
    /// candidates, and so on until a free driver ends the chain. When no such
    /// path is left the matching is as large as any (Berge), so chunking costs
    /// some total cost but never a pairing. Breadth-first, so the chains are
    /// short, and each order tries its cheapest drivers first.
    fn add_missing_pairings(&mut self, orders: &[usize]) {
        let graph = self.graph;
        let mut visited = vec![false; graph.drivers.len()];
        let mut via = vec![NONE; graph.drivers.len()];
        let mut touched = Vec::new();
        let mut queue = VecDeque::new();
        for &start in orders {
            if self.order_driver[start] != NONE {
                continue;
            }
            queue.clear();
            queue.push_back(start);
            let mut free = NONE;
            'search: while let Some(o) = queue.pop_front() {
                for e in &graph.edges[o] {
                    if visited[e.driver] {
                        continue;
                    }
                    visited[e.driver] = true;
                    touched.push(e.driver);
                    via[e.driver] = o;
                    match self.driver_order[e.driver] {
                        NONE => {
                            free = e.driver;
                            break 'search;
                        }
                        holder => queue.push_back(holder),
                    }
                }
            }
            // A failed search leaves its drivers marked: nothing reachable
            // from them leads to a free driver, and as long as the matching
            // does not change that stays true for later searches. So the
            // repair costs one sweep of the edges per pairing it adds.
            if free == NONE {
                continue;
            }
            let mut driver = free;
            while driver != NONE {
                let o = via[driver];
                let previous = self.order_driver[o];
                self.order_driver[o] = driver;
                self.driver_order[driver] = o;
                driver = previous;
            }
            for d in touched.drain(..) {
                visited[d] = false;
            }
        }
    }
}

/// The round as a minimum-cost assignment. `candidates[i]` are the drivers the
/// index found for `orders[i]` (a driver may appear for many orders). Returns
/// at most one pairing per order and per driver, in the orders' order:
/// as many pairings as possible and, among those, the least total
/// [`pairing_cost`]. Drivers without capacity are skipped.
///
/// Only listed candidates are edges. The candidate graph is split into
/// connected components, each solved exactly with Kuhn-Munkres on a matrix of
/// only its own orders and drivers. A component too big for that (past
/// `MAX_EXACT_WORK`: hundreds of orders chained together by shared drivers,
/// as in a dense downtown with long candidate lists) falls back to a cheaper
/// method: it is cut into spatial chunks (k-d halving on the restaurants),
/// each solved exactly with the drivers the earlier chunks left, and then
/// augmenting paths add back every pairing the cuts lost. So the count of
/// pairings stays the maximum; only the total cost can be above the optimum
/// (by 0.4-10% in the dense test cities, where chunks compete for drivers).
pub fn assign_round(
    orders: &[OpenOrder],
    candidates: &[Vec<Candidate>],
    params: &PolicyParams,
) -> Vec<Pairing> {
    assign_within(orders, candidates, params, MAX_EXACT_WORK)
}

fn assign_within(
    orders: &[OpenOrder],
    candidates: &[Vec<Candidate>],
    params: &PolicyParams,
    budget: u64,
) -> Vec<Pairing> {
    let graph = Graph::build(orders, candidates, params);
    let mut solver = Solver {
        graph: &graph,
        order_driver: vec![NONE; orders.len()],
        driver_order: vec![NONE; graph.drivers.len()],
        column: vec![NONE; graph.drivers.len()],
    };
    for mut component in graph.components() {
        let mut chunks = Vec::new();
        solver.chunks(&mut component, budget, &mut chunks);
        for chunk in &chunks {
            solver.solve_exact(chunk);
        }
        if chunks.len() > 1 {
            solver.add_missing_pairings(&component);
        }
    }
    let mut pairings = Vec::new();
    for (o, &driver) in solver.order_driver.iter().enumerate() {
        if let Some(edge) = graph.edges[o].iter().find(|e| e.driver == driver) {
            pairings.push(Pairing {
                order_id: orders[o].order_id,
                driver_id: graph.drivers[driver].driver_id,
                cost: edge.cost,
            });
        }
    }
    pairings
}

/// First-come nearest: orders in the given order, each takes its nearest
/// (great-circle) remaining driver with capacity. The baseline the README
/// compares [`assign_round`] against.
pub fn assign_greedy(
    orders: &[OpenOrder],
    candidates: &[Vec<Candidate>],
    params: &PolicyParams,
) -> Vec<Pairing> {
    let mut taken: HashSet<DriverId> = HashSet::new();
    let mut pairings = Vec::new();
    for (order, list) in orders.iter().zip(candidates) {
        let nearest = list
            .iter()
            .filter(|c| has_capacity(c, params) && !taken.contains(&c.driver_id))
            .map(|c| (distance_km(c.at, order.restaurant), c))
            .filter(|(km, _)| km.is_finite())
            .min_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, driver)) = nearest {
            let cost = pairing_cost(order, driver, params);
            if cost.is_finite() {
                taken.insert(driver.driver_id);
                pairings.push(Pairing {
                    order_id: order.order_id,
                    driver_id: driver.driver_id,
                    cost,
                });
            }
        }
    }
    pairings
}

/// Seeded synthetic cities for the benchmark and the tests.
pub mod scenario {
    use super::{Candidate, OpenOrder, Pairing, PolicyParams, has_capacity};
    use crate::domain::eta::travel_secs;
    use crate::domain::geo::distance_km;
    use crate::domain::model::{LatLon, VehicleType};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    /// Downtown Austin.
    pub const CENTER: LatLon = LatLon {
        lat: 30.27,
        lon: -97.74,
    };
    pub const CITY_RADIUS_KM: f64 = 15.0;
    pub const DROPOFF_RADIUS_KM: f64 = 6.0;
    const KM_PER_DEGREE_LAT: f64 = 111.32;

    #[derive(Debug, Clone)]
    pub struct Scenario {
        pub restaurants: Vec<LatLon>,
        pub orders: Vec<OpenOrder>,
        /// `orders[i]` is picked up at `restaurants[order_restaurant[i]]`.
        pub order_restaurant: Vec<usize>,
        /// Every online driver, each with capacity or not.
        pub drivers: Vec<Candidate>,
    }

    /// What a round's pairings achieve, in the scenario's terms.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Quality {
        pub assigned: usize,
        /// Great-circle km from each assigned driver to the restaurant.
        pub total_pickup_km: f64,
        /// Seconds the food waits for the driver after it is ready, averaged
        /// over assigned orders.
        pub mean_food_wait_secs: f64,
        /// Seconds from now until pickup, `max(driver arrives, food ready)`,
        /// averaged over assigned orders.
        pub mean_pickup_secs: f64,
    }

    /// A point `km` away from `from` in a uniformly random direction.
    fn offset(rng: &mut StdRng, from: LatLon, km: f64) -> LatLon {
        let bearing = rng.random::<f64>() * std::f64::consts::TAU;
        let north = km * bearing.cos();
        let east = km * bearing.sin();
        LatLon {
            lat: from.lat + north / KM_PER_DEGREE_LAT,
            lon: from.lon + east / (KM_PER_DEGREE_LAT * from.lat.to_radians().cos()),
        }
    }

    /// Uniform over the disc of `radius_km` around `from`.
    fn in_disc(rng: &mut StdRng, from: LatLon, radius_km: f64) -> LatLon {
        let km = radius_km * rng.random::<f64>().sqrt();
        offset(rng, from, km)
    }

    /// Dense near the centre: half of these points are within a quarter of
    /// the radius.
    fn downtown_biased(rng: &mut StdRng) -> LatLon {
        let u: f64 = rng.random();
        offset(rng, CENTER, CITY_RADIUS_KM * u * u)
    }

    fn vehicle(rng: &mut StdRng) -> VehicleType {
        match rng.random::<f64>() {
            u if u < 0.5 => VehicleType::Car,
            u if u < 0.7 => VehicleType::Scooter,
            u if u < 0.95 => VehicleType::Bike,
            _ => VehicleType::Walk,
        }
    }

    /// A city around downtown Austin (15 km radius): restaurants clustered
    /// downtown; each order at a random restaurant with a dropoff within
    /// 6 km and food ready in 0..900 s; drivers half spread evenly, half
    /// where the restaurants are, with mixed vehicles and 0 or 1 active
    /// orders. With no restaurants there are no orders. Same seed, same city.
    pub fn generate(seed: u64, restaurants: usize, orders: usize, drivers: usize) -> Scenario {
        let mut rng = StdRng::seed_from_u64(seed);
        let restaurant_at: Vec<LatLon> = (0..restaurants)
            .map(|_| downtown_biased(&mut rng))
            .collect();
        let orders = if restaurants == 0 { 0 } else { orders };
        let mut order_restaurant = Vec::with_capacity(orders);
        let mut open = Vec::with_capacity(orders);
        for i in 0..orders {
            let r = rng.random_range(0..restaurants);
            order_restaurant.push(r);
            open.push(OpenOrder {
                order_id: 100_000 + i as i64,
                restaurant: restaurant_at[r],
                dropoff: in_disc(&mut rng, restaurant_at[r], DROPOFF_RADIUS_KM),
                ready_in_secs: rng.random_range(0.0..900.0),
            });
        }
        let drivers = (0..drivers)
            .map(|i| Candidate {
                driver_id: 1 + i as i64,
                at: if rng.random_bool(0.5) {
                    in_disc(&mut rng, CENTER, CITY_RADIUS_KM)
                } else {
                    downtown_biased(&mut rng)
                },
                vehicle: vehicle(&mut rng),
                active_orders: rng.random_range(0..=1),
            })
            .collect();
        Scenario {
            restaurants: restaurant_at,
            orders: open,
            order_restaurant,
            drivers,
        }
    }

    /// What the geo index would answer, by brute force: for each order, the
    /// `k` nearest drivers with capacity within `radius_km` of its restaurant
    /// (great-circle), nearest first. Computed once per restaurant.
    pub fn nearest_candidates(
        scenario: &Scenario,
        k: usize,
        radius_km: f64,
        params: &PolicyParams,
    ) -> Vec<Vec<Candidate>> {
        let per_restaurant: Vec<Vec<Candidate>> = scenario
            .restaurants
            .iter()
            .map(|&restaurant| {
                let mut near: Vec<(f64, usize)> = scenario
                    .drivers
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| has_capacity(d, params))
                    .map(|(i, d)| (distance_km(d.at, restaurant), i))
                    .filter(|&(km, _)| km <= radius_km)
                    .collect();
                let nearer =
                    |a: &(f64, usize), b: &(f64, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if near.len() > k {
                    near.select_nth_unstable_by(k, nearer);
                    near.truncate(k);
                }
                near.sort_by(nearer);
                near.into_iter().map(|(_, i)| scenario.drivers[i]).collect()
            })
            .collect();
        scenario
            .order_restaurant
            .iter()
            .map(|&r| per_restaurant[r].clone())
            .collect()
    }

    /// Scores `pairings` against the scenario; pairings naming an unknown
    /// order or driver are ignored.
    pub fn evaluate(scenario: &Scenario, pairings: &[Pairing], params: &PolicyParams) -> Quality {
        let orders: HashMap<_, _> = scenario.orders.iter().map(|o| (o.order_id, o)).collect();
        let drivers: HashMap<_, _> = scenario.drivers.iter().map(|d| (d.driver_id, d)).collect();
        let mut quality = Quality {
            assigned: 0,
            total_pickup_km: 0.0,
            mean_food_wait_secs: 0.0,
            mean_pickup_secs: 0.0,
        };
        for pairing in pairings {
            let (Some(order), Some(driver)) = (
                orders.get(&pairing.order_id),
                drivers.get(&pairing.driver_id),
            ) else {
                continue;
            };
            let travel = travel_secs(
                driver.at,
                order.restaurant,
                driver.vehicle,
                params.road_factor,
            );
            quality.assigned += 1;
            quality.total_pickup_km += distance_km(driver.at, order.restaurant);
            quality.mean_food_wait_secs += (travel - order.ready_in_secs).max(0.0);
            quality.mean_pickup_secs += travel.max(order.ready_in_secs);
        }
        if quality.assigned > 0 {
            quality.mean_food_wait_secs /= quality.assigned as f64;
            quality.mean_pickup_secs /= quality.assigned as f64;
        }
        quality
    }
}

#[cfg(test)]
mod tests {
    use super::scenario::{evaluate, generate, nearest_candidates};
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const DOWNTOWN: LatLon = LatLon {
        lat: 30.2672,
        lon: -97.7431,
    };

    /// `km` east of downtown.
    fn east(km: f64) -> LatLon {
        LatLon {
            lat: DOWNTOWN.lat,
            lon: DOWNTOWN.lon + km / (111.32 * DOWNTOWN.lat.to_radians().cos()),
        }
    }

    fn order(order_id: OrderId, restaurant: LatLon, ready_in_secs: f64) -> OpenOrder {
        OpenOrder {
            order_id,
            restaurant,
            dropoff: DOWNTOWN,
            ready_in_secs,
        }
    }

    fn driver(driver_id: DriverId, at: LatLon) -> Candidate {
        Candidate {
            driver_id,
            at,
            vehicle: VehicleType::Car,
            active_orders: 0,
        }
    }

    fn total(pairings: &[Pairing]) -> f64 {
        pairings.iter().map(|p| p.cost).sum()
    }

    /// Checks what must hold of any round's pairings, whatever the method.
    fn assert_valid(
        orders: &[OpenOrder],
        candidates: &[Vec<Candidate>],
        pairings: &[Pairing],
        params: &PolicyParams,
    ) {
        let mut orders_seen = HashSet::new();
        let mut drivers_seen = HashSet::new();
        for p in pairings {
            assert!(orders_seen.insert(p.order_id), "order {} twice", p.order_id);
            assert!(
                drivers_seen.insert(p.driver_id),
                "driver {} twice",
                p.driver_id
            );
            let i = orders
                .iter()
                .position(|o| o.order_id == p.order_id)
                .expect("a known order");
            let listed = candidates[i]
                .iter()
                .find(|c| c.driver_id == p.driver_id)
                .expect("a listed candidate");
            assert!(has_capacity(listed, params));
            assert_eq!(p.cost, pairing_cost(&orders[i], listed, params));
        }
    }

    /// The best (most pairings, then least cost) by trying every assignment.
    fn brute_force(
        orders: &[OpenOrder],
        candidates: &[Vec<Candidate>],
        params: &PolicyParams,
    ) -> (usize, f64) {
        fn go(
            i: usize,
            orders: &[OpenOrder],
            candidates: &[Vec<Candidate>],
            params: &PolicyParams,
            used: &mut Vec<DriverId>,
        ) -> (usize, f64) {
            if i == orders.len() {
                return (0, 0.0);
            }
            let mut best = go(i + 1, orders, candidates, params, used);
            for c in &candidates[i] {
                if !has_capacity(c, params) || used.contains(&c.driver_id) {
                    continue;
                }
                used.push(c.driver_id);
                let (n, cost) = go(i + 1, orders, candidates, params, used);
                used.pop();
                let option = (n + 1, cost + pairing_cost(&orders[i], c, params));
                if option.0 > best.0 || (option.0 == best.0 && option.1 < best.1) {
                    best = option;
                }
            }
            best
        }
        go(0, orders, candidates, params, &mut Vec::new())
    }

    fn random_round(rng: &mut StdRng, max_orders: usize) -> (Vec<OpenOrder>, Vec<Vec<Candidate>>) {
        let drivers: Vec<Candidate> = (0..rng.random_range(1..=6))
            .map(|d| Candidate {
                driver_id: d,
                at: east(rng.random_range(-3.0..3.0)),
                vehicle: if rng.random_bool(0.5) {
                    VehicleType::Car
                } else {
                    VehicleType::Bike
                },
                active_orders: rng.random_range(0..=2),
            })
            .collect();
        let orders: Vec<OpenOrder> = (0..rng.random_range(1..=max_orders))
            .map(|o| {
                order(
                    o as OrderId,
                    east(rng.random_range(-3.0..3.0)),
                    rng.random_range(-60.0..600.0),
                )
            })
            .collect();
        let candidates = orders
            .iter()
            .map(|_| {
                drivers
                    .iter()
                    .filter(|_| rng.random_bool(0.6))
                    .copied()
                    .collect()
            })
            .collect();
        (orders, candidates)
    }

    #[test]
    fn while_the_food_is_not_ready_the_nearer_driver_still_costs_less() {
        let params = PolicyParams::default();
        // Both drivers would arrive long before the food: the pickup time is
        // the same, and the one who drives less is the better choice.
        let o = order(1, DOWNTOWN, 900.0);
        let near = pairing_cost(&o, &driver(1, east(0.3)), &params);
        let far = pairing_cost(&o, &driver(2, east(3.0)), &params);
        assert!(near < far, "{near} vs {far}");
    }

    #[test]
    fn a_nearer_driver_costs_less() {
        let params = PolicyParams::default();
        let o = order(1, DOWNTOWN, 0.0);
        let near = pairing_cost(&o, &driver(1, east(1.0)), &params);
        let far = pairing_cost(&o, &driver(2, east(3.0)), &params);
        assert!(near < far, "{near} vs {far}");
    }

    #[test]
    fn food_waiting_for_the_driver_costs_more_than_the_driver_waiting_for_food() {
        let params = PolicyParams::default();
        let (near, far) = (driver(1, east(1.0)), driver(2, east(2.0)));
        let t_near = travel_secs(near.at, DOWNTOWN, near.vehicle, params.road_factor);
        let t_far = travel_secs(far.at, DOWNTOWN, far.vehicle, params.road_factor);
        let gap = t_far - t_near;
        // Pickup at `t_far` both times, `gap` seconds of waiting both times;
        // only who waits differs.
        let driver_waits = pairing_cost(&order(1, DOWNTOWN, t_far), &near, &params);
        let food_waits = pairing_cost(&order(2, DOWNTOWN, t_near), &far, &params);
        assert!(food_waits > driver_waits, "{food_waits} vs {driver_waits}");
        assert!((driver_waits - (t_far + params.travel_weight * t_near)).abs() < 1e-9);
        assert!(
            (food_waits - (t_far + params.travel_weight * t_far + params.food_wait_weight * gap))
                .abs()
                < 1e-9
        );
        // Food that was ready before now counts from now.
        let at_restaurant = driver(3, DOWNTOWN);
        assert_eq!(
            pairing_cost(&order(3, DOWNTOWN, -300.0), &at_restaurant, &params),
            0.0
        );
    }

    #[test]
    fn each_active_order_adds_the_load_penalty() {
        let params = PolicyParams::default();
        let o = order(1, DOWNTOWN, 60.0);
        let free = driver(1, east(1.0));
        let busy = Candidate {
            active_orders: 1,
            ..free
        };
        let idle_cost = pairing_cost(&o, &free, &params);
        assert!(
            (pairing_cost(&o, &busy, &params) - idle_cost - params.load_penalty_secs).abs() < 1e-9
        );
    }

    #[test]
    fn only_drivers_below_the_maximum_have_capacity() {
        let params = PolicyParams::default();
        let d = driver(1, DOWNTOWN);
        assert!(has_capacity(&d, &params));
        assert!(has_capacity(
            &Candidate {
                active_orders: 1,
                ..d
            },
            &params
        ));
        assert!(!has_capacity(
            &Candidate {
                active_orders: 2,
                ..d
            },
            &params
        ));
        assert!(!has_capacity(
            &Candidate {
                active_orders: 5,
                ..d
            },
            &params
        ));
    }

    #[test]
    fn the_radius_widens_step_by_step_and_stops_at_the_maximum() {
        let mut steps = vec![2.0];
        while let Some(next) = widen_radius(*steps.last().expect("never empty"), 2.0, 9.0) {
            steps.push(next);
        }
        assert_eq!(steps, vec![2.0, 4.0, 6.0, 8.0, 9.0]);
        assert_eq!(widen_radius(0.0, 2.0, 9.0), Some(2.0));
        assert_eq!(widen_radius(9.0, 2.0, 9.0), None);
        assert_eq!(widen_radius(12.0, 2.0, 9.0), None);
        assert_eq!(widen_radius(f64::NAN, 2.0, 9.0), None);
        assert_eq!(widen_radius(2.0, 2.0, f64::NAN), None);
        assert_eq!(widen_radius(1.0, 0.0, 9.0), Some(9.0));
    }

    #[test]
    fn the_optimum_gives_the_shared_near_driver_to_the_order_that_needs_it() {
        // Y(0) ... A(0.7) .. X(1.2) .. B(1.8) on one street: greedy gives A
        // its nearest, X, and leaves B the far Y; the optimum swaps them.
        let params = PolicyParams::default();
        let (x, y) = (driver(1, east(1.2)), driver(2, east(0.0)));
        let orders = vec![order(10, east(0.7), 0.0), order(20, east(1.8), 0.0)];
        let candidates = vec![vec![x, y], vec![x, y]];
        let greedy = assign_greedy(&orders, &candidates, &params);
        let best = assign_round(&orders, &candidates, &params);
        assert_valid(&orders, &candidates, &greedy, &params);
        assert_valid(&orders, &candidates, &best, &params);
        assert_eq!(
            greedy.iter().map(|p| p.driver_id).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            best.iter()
                .map(|p| (p.order_id, p.driver_id))
                .collect::<Vec<_>>(),
            vec![(10, 2), (20, 1)]
        );
        assert!(total(&best) < total(&greedy));
    }

    #[test]
    fn a_round_gives_each_order_and_each_driver_at_most_one_pairing() {
        let params = PolicyParams::default();
        let s = generate(3, 10, 120, 60);
        let candidates = nearest_candidates(&s, 8, 5.0, &params);
        let pairings = assign_round(&s.orders, &candidates, &params);
        assert!(!pairings.is_empty());
        assert_valid(&s.orders, &candidates, &pairings, &params);
    }

    #[test]
    fn a_round_matches_the_brute_force_optimum_on_small_rounds() {
        let params = PolicyParams::default();
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..400 {
            let (orders, candidates) = random_round(&mut rng, 6);
            let pairings = assign_round(&orders, &candidates, &params);
            assert_valid(&orders, &candidates, &pairings, &params);
            let (count, cost) = brute_force(&orders, &candidates, &params);
            assert_eq!(pairings.len(), count, "{orders:?} {candidates:?}");
            // One order per chunk: the fallback still finds the most pairings.
            let chunked = assign_within(&orders, &candidates, &params, 1);
            assert_valid(&orders, &candidates, &chunked, &params);
            assert_eq!(chunked.len(), count, "{orders:?} {candidates:?}");
            // Weights are rounded to the millisecond for the solver.
            assert!(
                (total(&pairings) - cost).abs() < 0.01,
                "{} vs {cost}",
                total(&pairings)
            );
        }
    }

    #[test]
    fn more_pairings_beat_a_lower_total_cost() {
        // Taking the near driver X for order A would be cheapest, but then B,
        // which can only use X, is left out: A must take the far Y.
        let params = PolicyParams::default();
        let (x, y) = (driver(1, east(0.1)), driver(2, east(8.0)));
        let orders = vec![order(10, DOWNTOWN, 0.0), order(20, DOWNTOWN, 800.0)];
        let candidates = vec![vec![x, y], vec![x]];
        let pairings = assign_round(&orders, &candidates, &params);
        assert_eq!(
            pairings
                .iter()
                .map(|p| (p.order_id, p.driver_id))
                .collect::<Vec<_>>(),
            vec![(10, 2), (20, 1)]
        );
    }

    #[test]
    fn only_listed_candidates_with_capacity_are_assigned() {
        let params = PolicyParams::default();
        let full = Candidate {
            active_orders: 2,
            ..driver(1, DOWNTOWN)
        };
        let listed = driver(2, east(2.0));
        let orders = vec![
            order(10, DOWNTOWN, 0.0),
            order(20, DOWNTOWN, 0.0),
            order(30, DOWNTOWN, 0.0),
        ];
        // Driver 2 listed twice for order 10; order 30's list is missing.
        let candidates = vec![vec![full, listed, listed], vec![full]];
        for pairings in [
            assign_round(&orders, &candidates, &params),
            assign_greedy(&orders, &candidates, &params),
        ] {
            assert_eq!(pairings.len(), 1);
            assert_eq!((pairings[0].order_id, pairings[0].driver_id), (10, 2));
        }
    }

    #[test]
    fn empty_rounds_give_no_pairings() {
        let params = PolicyParams::default();
        let o = vec![order(1, DOWNTOWN, 0.0)];
        assert!(assign_round(&[], &[], &params).is_empty());
        assert!(assign_greedy(&[], &[], &params).is_empty());
        assert!(assign_round(&o, &[vec![]], &params).is_empty());
        assert!(assign_greedy(&o, &[vec![]], &params).is_empty());
        assert!(assign_round(&[], &[vec![driver(1, DOWNTOWN)]], &params).is_empty());
    }

    #[test]
    fn a_nan_coordinate_makes_a_pair_unusable() {
        let params = PolicyParams::default();
        let lost = driver(
            1,
            LatLon {
                lat: f64::NAN,
                lon: 0.0,
            },
        );
        let o = vec![order(1, DOWNTOWN, 0.0)];
        assert!(assign_round(&o, &[vec![lost]], &params).is_empty());
        assert!(assign_greedy(&o, &[vec![lost]], &params).is_empty());
    }

    #[test]
    fn components_too_big_for_one_solve_are_chunked_without_losing_pairings() {
        let params = PolicyParams::default();
        let s = generate(5, 30, 400, 500);
        let candidates = nearest_candidates(&s, 8, 5.0, &params);
        let exact = assign_within(&s.orders, &candidates, &params, u64::MAX);
        for budget in [1, 1_000, 100_000] {
            let split = assign_within(&s.orders, &candidates, &params, budget);
            assert_valid(&s.orders, &candidates, &split, &params);
            // The repair restores every pairing the cuts lost; only the
            // total cost may be worse.
            assert_eq!(split.len(), exact.len());
            assert!(total(&split) >= total(&exact) - 0.5);
        }
        assert_valid(&s.orders, &candidates, &exact, &params);
    }

    #[test]
    fn the_assignment_beats_greedy_on_a_generated_city() {
        let params = PolicyParams::default();
        let s = generate(1, 30, 200, 400);
        let candidates = nearest_candidates(&s, 8, 5.0, &params);
        let best = assign_round(&s.orders, &candidates, &params);
        let greedy = assign_greedy(&s.orders, &candidates, &params);
        assert!(best.len() >= greedy.len());
        let (q_best, q_greedy) = (evaluate(&s, &best, &params), evaluate(&s, &greedy, &params));
        assert_eq!(q_best.assigned, best.len());
        if best.len() == greedy.len() {
            assert!(total(&best) <= total(&greedy) + 0.01);
        }
        assert!(q_greedy.assigned > 0);
    }

    #[test]
    fn scenarios_are_deterministic_and_inside_the_city() {
        let a = generate(9, 20, 100, 200);
        let b = generate(9, 20, 100, 200);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(
            format!("{a:?}"),
            format!("{:?}", generate(10, 20, 100, 200))
        );
        for r in &a.restaurants {
            assert!(distance_km(*r, scenario::CENTER) <= scenario::CITY_RADIUS_KM + 0.01);
        }
        for (o, &r) in a.orders.iter().zip(&a.order_restaurant) {
            assert_eq!(o.restaurant, a.restaurants[r]);
            assert!(distance_km(o.restaurant, o.dropoff) <= scenario::DROPOFF_RADIUS_KM + 0.01);
            assert!((0.0..900.0).contains(&o.ready_in_secs));
        }
        assert!(a.drivers.iter().all(|d| d.active_orders <= 1));
        assert!(generate(1, 0, 10, 10).orders.is_empty());
    }

    #[test]
    fn brute_force_candidates_are_the_k_nearest_with_capacity_in_the_radius() {
        let params = PolicyParams::default();
        let s = generate(4, 5, 20, 300);
        let candidates = nearest_candidates(&s, 8, 3.0, &params);
        for (o, list) in s.orders.iter().zip(&candidates) {
            assert!(list.len() <= 8);
            let km: Vec<f64> = list
                .iter()
                .map(|c| distance_km(c.at, o.restaurant))
                .collect();
            assert!(km.windows(2).all(|w| w[0] <= w[1]));
            assert!(km.iter().all(|&d| d <= 3.0));
            let farthest = km.last().copied().unwrap_or(0.0);
            let nearer_left_out = s
                .drivers
                .iter()
                .filter(|d| !list.contains(d))
                .any(|d| distance_km(d.at, o.restaurant) < farthest);
            assert!(!nearer_left_out);
        }
    }

    #[test]
    fn evaluation_measures_distance_and_waiting() {
        let params = PolicyParams::default();
        let s = generate(2, 5, 10, 20);
        let first = &s.orders[0];
        let d = s.drivers[0];
        let pairing = Pairing {
            order_id: first.order_id,
            driver_id: d.driver_id,
            cost: pairing_cost(first, &d, &params),
        };
        let unknown = Pairing {
            order_id: -1,
            ..pairing
        };
        let q = evaluate(&s, &[pairing, unknown], &params);
        let travel = travel_secs(d.at, first.restaurant, d.vehicle, params.road_factor);
        assert_eq!(q.assigned, 1);
        assert!((q.total_pickup_km - distance_km(d.at, first.restaurant)).abs() < 1e-9);
        assert!((q.mean_food_wait_secs - (travel - first.ready_in_secs).max(0.0)).abs() < 1e-9);
        assert!((q.mean_pickup_secs - travel.max(first.ready_in_secs)).abs() < 1e-9);
        assert_eq!(evaluate(&s, &[], &params).assigned, 0);
    }
}
