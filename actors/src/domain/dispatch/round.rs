//! Dispatch rounds: which pairings one round makes, as a minimum-cost
//! assignment over the candidates the geo index found (DESIGN.md
//! "Matching"), the greedy baseline it is compared with, and how an order
//! that found nobody widens its search.

use super::cost::{Candidate, OpenOrder, PolicyParams, has_capacity, pairing_cost};
use super::solver::{self, Edge, Graph};
use crate::domain::geo::distance_km;
use crate::domain::model::{DriverId, OrderId};
use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

/// One offer the round decided to make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pairing {
    pub order_id: OrderId,
    pub driver_id: DriverId,
    /// [`pairing_cost`] of this pair, in seconds.
    pub cost: f64,
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
    assign_within(orders, candidates, params, solver::MAX_EXACT_WORK)
}

pub(crate) fn assign_within(
    orders: &[OpenOrder],
    candidates: &[Vec<Candidate>],
    params: &PolicyParams,
    budget: u64,
) -> Vec<Pairing> {
    let (graph, drivers) = build_graph(orders, candidates, params);
    let matched = solver::solve(&graph, budget);
    let mut pairings = Vec::new();
    for (o, &column) in matched.iter().enumerate() {
        if let Some(edge) = graph.edges[o].iter().find(|e| e.column == column) {
            pairings.push(Pairing {
                order_id: orders[o].order_id,
                driver_id: drivers[column].driver_id,
                cost: edge.cost,
            });
        }
    }
    pairings
}

/// The round's graph: an edge for each listed candidate with capacity and a
/// finite cost, and the drivers behind the columns.
fn build_graph(
    orders: &[OpenOrder],
    candidates: &[Vec<Candidate>],
    params: &PolicyParams,
) -> (Graph, Vec<Candidate>) {
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
            let column = *index.entry(candidate.driver_id).or_insert_with(|| {
                drivers.push(*candidate);
                drivers.len() - 1
            });
            // The index may list a driver twice; lists are short (k ~ 8).
            if mine.iter().any(|e| e.column == column) {
                continue;
            }
            mine.push(Edge {
                column,
                weight: solver::weight(cost),
                cost,
            });
        }
        // Cheapest first: the pairing repair tries them in this order.
        mine.sort_by_key(|e| (e.weight, e.column));
        edges.push(mine);
    }
    let graph = Graph {
        row_at: orders.iter().map(|o| o.restaurant).collect(),
        columns: drivers.len(),
        edges,
    };
    (graph, drivers)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dispatch::fixtures::*;
    use crate::domain::dispatch::scenario::{evaluate, generate, nearest_candidates};
    use crate::domain::model::{LatLon, VehicleType};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
                free_in_secs: 0.0,
                off_in_secs: f64::INFINITY,
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
}
