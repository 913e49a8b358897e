//! Seeded synthetic cities for the matching benchmark and the dispatch
//! tests: a benchmark fixture, built only for tests and for the benches
//! (feature `scenarios`), never into the production binary.

use super::cost::{Candidate, OpenOrder, PolicyParams, has_capacity};
use super::round::Pairing;
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
            latest_pickup_secs: f64::INFINITY,
            trip_secs: 0.0,
            orders: 1,
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
            free_in_secs: 0.0,
            off_in_secs: f64::INFINITY,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dispatch::cost::pairing_cost;

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
            assert!(distance_km(*r, CENTER) <= CITY_RADIUS_KM + 0.01);
        }
        for (o, &r) in a.orders.iter().zip(&a.order_restaurant) {
            assert_eq!(o.restaurant, a.restaurants[r]);
            assert!(distance_km(o.restaurant, o.dropoff) <= DROPOFF_RADIUS_KM + 0.01);
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
