//! The simulated city: the restaurants taking part (with their menus), and
//! the geometry everyone moves by: random points, bearings, straight-line
//! steps.
//!
//! Distances are small (a city), so offsets use the local flat-earth
//! approximation; `actors::domain::geo::distance_km` stays the one true distance.

use actors::domain::geo::distance_km;
use actors::domain::model::{LatLon, MenuItemId, RestaurantId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

const KM_PER_DEGREE_LAT: f64 = 111.32;

/// A restaurant the simulation orders from.
#[derive(Debug, Clone)]
pub struct Kitchen {
    pub id: RestaurantId,
    pub at: LatLon,
    pub delivery_radius_km: f64,
    /// What the restaurant says its kitchen takes, in real minutes.
    pub prep_time_minutes: i32,
    /// Items on its menu that are available.
    pub menu: Vec<MenuItemId>,
}

pub struct City {
    pub kitchens: Vec<Kitchen>,
    /// Where every open restaurant is, also those not taking part (a
    /// driver may still carry an order from one, left by an earlier run).
    pub places: HashMap<RestaurantId, LatLon>,
}

impl City {
    /// A point within `km` of a random kitchen: drivers wait where the
    /// restaurants are, as real ones do.
    pub fn near_a_kitchen(&self, rng: &mut StdRng, km: f64) -> Option<LatLon> {
        let kitchen = self
            .kitchens
            .get(rng.random_range(0..self.kitchens.len().max(1)))?;
        Some(point_within(rng, kitchen.at, 0.0, km))
    }
}

/// One RNG per simulated party, all derived from `--seed`, so a run is
/// reproducible however the tasks interleave.
pub fn rng_for(seed: u64, party: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ party)
}

/// The point `km` from `from` on `bearing_deg` (0 = north, clockwise).
pub fn offset(from: LatLon, km: f64, bearing_deg: f64) -> LatLon {
    let bearing = bearing_deg.to_radians();
    let dlat = km * bearing.cos() / KM_PER_DEGREE_LAT;
    let dlon = km * bearing.sin() / (KM_PER_DEGREE_LAT * from.lat.to_radians().cos().max(0.01));
    LatLon {
        lat: (from.lat + dlat).clamp(-89.9, 89.9),
        lon: from.lon + dlon,
    }
}

/// A uniformly random point in the ring between `min_km` and `max_km`
/// around `center`.
pub fn point_within(rng: &mut StdRng, center: LatLon, min_km: f64, max_km: f64) -> LatLon {
    let (min_km, max_km) = (min_km.max(0.0), max_km.max(min_km.max(0.0)));
    // Uniform in area: the radius goes with the square root.
    let u: f64 = rng.random();
    let km = (min_km * min_km + u * (max_km * max_km - min_km * min_km)).sqrt();
    offset(center, km, rng.random_range(0.0..360.0))
}

/// The initial bearing from `from` to `to`, in [0, 360).
pub fn bearing(from: LatLon, to: LatLon) -> f64 {
    let north = to.lat - from.lat;
    let east = (to.lon - from.lon) * from.lat.to_radians().cos();
    let degrees = east.atan2(north).to_degrees();
    let degrees = if degrees < 0.0 {
        degrees + 360.0
    } else {
        degrees
    };
    // atan2 can round to exactly 360 for tiny negative angles.
    if degrees >= 360.0 { 0.0 } else { degrees }
}

/// Moves `km` in a straight line from `from` towards `to`; the new position
/// and whether it arrived.
pub fn step_toward(from: LatLon, to: LatLon, km: f64) -> (LatLon, bool) {
    let left = distance_km(from, to);
    if left <= km || left <= f64::EPSILON {
        return (to, true);
    }
    let f = km / left;
    let at = LatLon {
        lat: from.lat + (to.lat - from.lat) * f,
        lon: from.lon + (to.lon - from.lon) * f,
    };
    (at, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPITOL: LatLon = LatLon {
        lat: 30.2747,
        lon: -97.7404,
    };

    #[test]
    fn offsets_land_at_the_asked_distance_and_bearing() {
        for bearing_deg in [0.0, 45.0, 90.0, 200.0, 359.0] {
            let to = offset(CAPITOL, 3.0, bearing_deg);
            assert!((distance_km(CAPITOL, to) - 3.0).abs() < 0.02);
            assert!((bearing(CAPITOL, to) - bearing_deg).abs() < 0.5);
        }
    }

    #[test]
    fn random_points_stay_in_their_ring() {
        let mut rng = rng_for(1, 2);
        for _ in 0..1000 {
            let d = distance_km(CAPITOL, point_within(&mut rng, CAPITOL, 0.5, 4.0));
            assert!((0.49..=4.02).contains(&d), "{d}");
        }
    }

    #[test]
    fn steps_arrive_without_overshooting() {
        let to = offset(CAPITOL, 1.0, 90.0);
        let (mid, arrived) = step_toward(CAPITOL, to, 0.4);
        assert!(!arrived);
        assert!((distance_km(mid, to) - 0.6).abs() < 0.01);
        assert_eq!(step_toward(mid, to, 5.0), (to, true));
    }

    #[test]
    fn the_same_seed_gives_the_same_city() {
        let a: f64 = rng_for(7, 3).random();
        let b: f64 = rng_for(7, 3).random();
        let c: f64 = rng_for(8, 3).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
