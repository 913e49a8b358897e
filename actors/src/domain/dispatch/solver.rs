//! The assignment solver: a minimum-cost maximum-cardinality matching on
//! the sparse bipartite graph of one dispatch round (rows are orders,
//! columns drivers), by Kuhn-Munkres per connected component
//! (`pathfinding::kuhn_munkres`), with a spatial cut and an augmenting-path
//! repair for components too big to solve whole. It knows nothing of
//! orders or costs: [`super::round`] builds the graph.

use crate::domain::model::LatLon;
use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;
use std::collections::VecDeque;

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
pub const MAX_EXACT_WORK: u64 = 32_000_000;

/// No column (or no row): an unmatched side.
pub const NONE: usize = usize::MAX;

/// A cost in seconds as the solver's integer weight.
pub fn weight(cost_secs: f64) -> i64 {
    (cost_secs.clamp(0.0, MAX_COST_SECS) * WEIGHT_PER_SEC).round() as i64
}

/// One usable (row, column) pair: an order and a driver that may take it.
pub struct Edge {
    /// The driver's column.
    pub column: usize,
    /// The pair's cost in solver units ([`weight`]).
    pub weight: i64,
    /// The same cost in seconds, carried for the caller (the solver reads
    /// only `weight`).
    pub cost: f64,
}

/// A round's bipartite graph: rows are orders, columns drivers, and only
/// the listed pairs are edges.
pub struct Graph {
    /// Where each row's restaurant is, for cutting a component in space.
    pub row_at: Vec<LatLon>,
    /// How many columns (drivers) there are.
    pub columns: usize,
    /// `edges[row]`, cheapest first, without duplicate columns.
    pub edges: Vec<Vec<Edge>>,
}

impl Graph {
    /// Groups the orders that share drivers, directly or through a chain:
    /// different components cannot affect each other's best assignment.
    fn components(&self) -> Vec<Vec<usize>> {
        let n = self.row_at.len();
        let mut sets = DisjointSets::new(n + self.columns);
        for (o, edges) in self.edges.iter().enumerate() {
            for e in edges {
                sets.union(o, n + e.column);
            }
        }
        let mut component_of_root = vec![NONE; n + self.columns];
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
struct Solver<'g> {
    graph: &'g Graph,
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

impl Solver<'_> {
    /// How many drivers `orders` list between them. Borrows `column` as the
    /// "seen" mark, which is all `NONE` outside a solve.
    fn distinct_drivers(&mut self, orders: &[usize]) -> usize {
        let mut seen = Vec::new();
        for &o in orders {
            for e in &self.graph.edges[o] {
                if self.column[e.column] == NONE {
                    self.column[e.column] = 0;
                    seen.push(e.column);
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
        let all = &self.graph.row_at;
        let (mut lat_min, mut lat_max) = (f64::INFINITY, f64::NEG_INFINITY);
        let (mut lon_min, mut lon_max) = (f64::INFINITY, f64::NEG_INFINITY);
        for &o in orders.iter() {
            let at = all[o];
            lat_min = lat_min.min(at.lat);
            lat_max = lat_max.max(at.lat);
            lon_min = lon_min.min(at.lon);
            lon_max = lon_max.max(at.lon);
        }
        // A degree of longitude shrinks with the cosine of the latitude.
        let lon_scale = ((lat_min + lat_max) / 2.0).to_radians().cos().abs();
        let by_lat = lat_max - lat_min >= (lon_max - lon_min) * lon_scale;
        let key = |o: usize| {
            let at = all[o];
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
                .filter(|e| self.driver_order[e.column] == NONE)
            {
                usable = true;
                max_weight = max_weight.max(e.weight);
                if self.column[e.column] == NONE {
                    self.column[e.column] = col_drivers.len();
                    col_drivers.push(e.column);
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
                    .filter(|e| self.driver_order[e.column] == NONE)
                {
                    let c = self.column[e.column];
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
        let mut visited = vec![false; graph.columns];
        let mut via = vec![NONE; graph.columns];
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
                    if visited[e.column] {
                        continue;
                    }
                    visited[e.column] = true;
                    touched.push(e.column);
                    via[e.column] = o;
                    match self.driver_order[e.column] {
                        NONE => {
                            free = e.column;
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

/// The minimum-cost maximum-cardinality matching of `graph`: the column of
/// each row, or [`NONE`]. Components whose exact solve would exceed
/// `budget` (`rows² x columns`) are cut into spatial chunks, each solved
/// exactly, and augmenting paths then restore every pairing the cuts lost.
pub fn solve(graph: &Graph, budget: u64) -> Vec<usize> {
    let mut solver = Solver {
        graph,
        order_driver: vec![NONE; graph.row_at.len()],
        driver_order: vec![NONE; graph.columns],
        column: vec![NONE; graph.columns],
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
    solver.order_driver
}
