//! The dispatch policy (DESIGN.md "Matching"), as pure functions:
//!
//! - [`board`]: the waiting orders and one round over them, clock injected,
//!   shared by the live dispatcher and the replay;
//! - [`cost`]: what giving one order to one driver costs, in seconds;
//! - [`round`]: which pairings one dispatch round makes (a minimum-cost
//!   assignment), the greedy baseline, and radius widening;
//! - [`solver`]: the matching algorithm behind a round, which knows nothing
//!   of orders;
//! - `scenario`: seeded synthetic cities, a fixture of the tests and the
//!   benchmarks only (feature `scenarios`).

pub mod board;
pub mod cost;
pub mod round;
#[cfg(any(test, feature = "scenarios"))]
pub mod scenario;
pub mod solver;

pub use board::{Assignment, Board, BoardEntry, BoardRules, Decision, Plan, Query, WaitingOrder};
pub use cost::{Candidate, OpenOrder, PolicyParams, has_capacity, pairing_cost};
pub use round::{Pairing, assign_greedy, assign_round, widen_radius};

/// Small fixtures the policy's unit tests share: a street running east
/// from downtown Austin.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Candidate, OpenOrder};
    use crate::domain::model::{DriverId, LatLon, OrderId, VehicleType};

    pub const DOWNTOWN: LatLon = LatLon {
        lat: 30.2672,
        lon: -97.7431,
    };

    /// `km` east of downtown.
    pub fn east(km: f64) -> LatLon {
        LatLon {
            lat: DOWNTOWN.lat,
            lon: DOWNTOWN.lon + km / (111.32 * DOWNTOWN.lat.to_radians().cos()),
        }
    }

    pub fn order(order_id: OrderId, restaurant: LatLon, ready_in_secs: f64) -> OpenOrder {
        OpenOrder {
            order_id,
            restaurant,
            dropoff: DOWNTOWN,
            ready_in_secs,
            latest_pickup_secs: f64::INFINITY,
            trip_secs: 0.0,
            orders: 1,
        }
    }

    pub fn driver(driver_id: DriverId, at: LatLon) -> Candidate {
        Candidate::free(driver_id, at, VehicleType::Car, 0)
    }
}
