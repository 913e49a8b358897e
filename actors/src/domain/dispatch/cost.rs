//! The cost model: what giving one order to one driver costs, in seconds
//! (DESIGN.md "Matching"). Pure: times are seconds relative to the round's
//! start, so a round is deterministic and testable without actors.

use crate::domain::eta::{DEFAULT_ROAD_FACTOR, travel_secs};
use crate::domain::model::{DriverId, LatLon, OrderId, VehicleType};

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
    /// Seconds between a driver reaching the restaurant and the earliest
    /// pickup (parking, walking in). 0 in the live engine, where the driver
    /// says when it picked up; the replay sets the instance's half service
    /// time.
    pub pickup_service_secs: f64,
    /// The same after reaching a customer, before the drop-off, and again
    /// before leaving; 0 in the live engine.
    pub dropoff_service_secs: f64,
    /// Ready-time-aware commitment: a driver who would wait longer than this
    /// at the restaurant is not committed yet; a better one may appear, and
    /// the order may still be bundled with a later one. Infinite: commit at
    /// once.
    pub commit_ahead_secs: f64,
    /// Cost per second an order could still wait before its latest pickup
    /// (up to `MAX_SLACK_SECS`): when drivers are short, the orders about
    /// to miss the maximum click-to-door go first, and the ones that can
    /// wait, wait. No effect on orders without a deadline.
    pub slack_weight: f64,
    /// Throughput: cost per second of the driver's time the job takes per
    /// order it carries (from the moment the driver is free to its last
    /// drop-off, over the job's orders). When drivers are short, a round
    /// that spends less driver time per order serves more orders; 0: off.
    /// Jobs without a known trip (`trip_secs` 0) count only the way to the
    /// pickup.
    pub throughput_weight: f64,
}

/// Slack beyond this is all the same to [`PolicyParams::slack_weight`].
pub const MAX_SLACK_SECS: f64 = 1800.0;

impl Default for PolicyParams {
    fn default() -> Self {
        PolicyParams {
            road_factor: DEFAULT_ROAD_FACTOR,
            max_active_orders: 2,
            travel_weight: 0.25,
            food_wait_weight: 1.0,
            load_penalty_secs: 300.0,
            pickup_service_secs: 0.0,
            dropoff_service_secs: 0.0,
            commit_ahead_secs: f64::INFINITY,
            slack_weight: 0.0,
            throughput_weight: 0.0,
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
    /// A pickup later than this (seconds from now) would deliver some order
    /// past its deadline: such a driver is no candidate. Infinite when no
    /// deadline binds.
    pub latest_pickup_secs: f64,
    /// Seconds from the pickup until the driver is free again after the
    /// job's last drop-off (0 when unknown).
    pub trip_secs: f64,
    /// Orders the job carries (a bundle: more than one).
    pub orders: u32,
}

/// A driver the geo index found near an order's restaurant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub driver_id: DriverId,
    pub at: LatLon,
    pub vehicle: VehicleType,
    pub active_orders: u32,
    /// Seconds until the driver is free at `at` (0: now). A driver finishing
    /// a delivery can be planned from its last drop-off.
    pub free_in_secs: f64,
    /// The driver cannot pick up later than this (seconds from now): the end
    /// of its shift. Infinite when it has none.
    pub off_in_secs: f64,
}

impl Candidate {
    /// A driver free now, without a shift end.
    pub fn free(
        driver_id: DriverId,
        at: LatLon,
        vehicle: VehicleType,
        active_orders: u32,
    ) -> Candidate {
        Candidate {
            driver_id,
            at,
            vehicle,
            active_orders,
            free_in_secs: 0.0,
            off_in_secs: f64::INFINITY,
        }
    }
}

/// Seconds until `driver` reaches `restaurant`: free, then driving there.
pub fn reach_secs(driver: &Candidate, restaurant: LatLon, params: &PolicyParams) -> f64 {
    driver.free_in_secs + travel_secs(driver.at, restaurant, driver.vehicle, params.road_factor)
}

/// Cost in seconds of giving `order` to `driver`:
///
/// ```text
/// travel = driver.free_in_secs
///        + travel_secs(driver.at, order.restaurant, driver.vehicle, road_factor)
/// ready  = max(order.ready_in_secs, 0)
/// cost   = max(travel, ready)                          // when pickup can happen
///        + travel_weight      * travel                 // the driving itself
///        + food_wait_weight   * max(travel - ready, 0) // food waits for driver
///        + load_penalty_secs  * driver.active_orders
///        + slack_weight       * min(latest_pickup - pickup, 30 min)
///        + throughput_weight  * (pickup - free_in + trip) / orders
/// ```
///
/// Food that was ready before now counts from now: the time it has already
/// waited is the same whichever driver is chosen, and counting it would make
/// the longest-waiting orders the most expensive to assign. A travel time
/// that is not finite (a NaN coordinate) gives an infinite cost, which both
/// assigners treat as "not a candidate"; so does a pickup
/// (`max(travel + pickup_service_secs, ready)`) after the driver's shift
/// ends or after the order's `latest_pickup_secs`, and a driver who would
/// wait at the restaurant longer than `commit_ahead_secs`.
pub fn pairing_cost(order: &OpenOrder, driver: &Candidate, params: &PolicyParams) -> f64 {
    let travel = reach_secs(driver, order.restaurant, params);
    // `f64::max` ignores NaN, so a NaN travel time would otherwise vanish
    // into a plausible-looking cost below.
    if !travel.is_finite() {
        return f64::INFINITY;
    }
    let ready = order.ready_in_secs.max(0.0);
    let pickup = (travel + params.pickup_service_secs).max(ready);
    if pickup > driver.off_in_secs
        || pickup > order.latest_pickup_secs
        || ready - (travel + params.pickup_service_secs) > params.commit_ahead_secs
    {
        return f64::INFINITY;
    }
    let food_wait = (travel - ready).max(0.0);
    let slack = if order.latest_pickup_secs.is_finite() {
        (order.latest_pickup_secs - pickup).clamp(0.0, MAX_SLACK_SECS)
    } else {
        0.0
    };
    let driver_time = (pickup - driver.free_in_secs).max(0.0) + order.trip_secs.max(0.0);
    let throughput = if params.throughput_weight > 0.0 {
        params.throughput_weight * driver_time / f64::from(order.orders.max(1))
    } else {
        0.0
    };
    throughput
        + params.slack_weight * slack
        + travel.max(ready)
        + params.travel_weight * travel
        + params.food_wait_weight * food_wait
        + params.load_penalty_secs * f64::from(driver.active_orders)
}

/// Whether a driver may be offered anything at all.
pub fn has_capacity(driver: &Candidate, params: &PolicyParams) -> bool {
    driver.active_orders < params.max_active_orders
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dispatch::fixtures::*;

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
    fn a_pickup_after_the_shift_or_the_orders_latest_pickup_is_no_candidate() {
        let params = PolicyParams::default();
        let d = driver(1, east(1.0));
        let travel = travel_secs(d.at, DOWNTOWN, d.vehicle, params.road_factor);
        let o = order(1, DOWNTOWN, 0.0);
        assert!(pairing_cost(&o, &d, &params).is_finite());
        let leaving = Candidate {
            off_in_secs: travel - 1.0,
            ..d
        };
        assert!(pairing_cost(&o, &leaving, &params).is_infinite());
        let urgent = OpenOrder {
            latest_pickup_secs: travel - 1.0,
            ..o.clone()
        };
        assert!(pairing_cost(&urgent, &d, &params).is_infinite());
        // A driver still busy for a minute arrives a minute later.
        let busy = Candidate {
            free_in_secs: 60.0,
            ..d
        };
        assert!(pairing_cost(&o, &busy, &params) > pairing_cost(&o, &d, &params) + 60.0);
    }

    #[test]
    fn with_a_throughput_weight_less_driver_time_per_order_costs_less() {
        let params = PolicyParams {
            throughput_weight: 1.0,
            ..PolicyParams::default()
        };
        let d = driver(1, east(1.0));
        let long = OpenOrder {
            trip_secs: 1200.0,
            ..order(1, DOWNTOWN, 0.0)
        };
        let short = OpenOrder {
            trip_secs: 600.0,
            ..long.clone()
        };
        let pair = OpenOrder {
            orders: 2,
            ..long.clone()
        };
        let (c_long, c_short, c_pair) = (
            pairing_cost(&long, &d, &params),
            pairing_cost(&short, &d, &params),
            pairing_cost(&pair, &d, &params),
        );
        // 600 s less of the driver's time, weight 1: 600 s cheaper.
        assert!(
            (c_long - c_short - 600.0).abs() < 1e-9,
            "{c_long} {c_short}"
        );
        // Two orders on the same trip: half the driver time per order.
        let travel = travel_secs(d.at, DOWNTOWN, d.vehicle, params.road_factor);
        assert!((c_long - c_pair - (travel + 1200.0) / 2.0).abs() < 1e-9);
        // Time the driver is still busy elsewhere is not the job's.
        let busy = Candidate {
            free_in_secs: 300.0,
            ..d
        };
        let off = PolicyParams::default();
        assert!(
            (pairing_cost(&long, &busy, &params)
                - pairing_cost(&long, &busy, &off)
                - (travel + 1200.0))
                .abs()
                < 1e-9
        );
        // Weight 0 (the default): the trip does not count; 0 orders count as 1.
        assert_eq!(
            pairing_cost(&long, &d, &off),
            pairing_cost(&short, &d, &off)
        );
        let none = OpenOrder {
            orders: 0,
            ..long.clone()
        };
        assert_eq!(pairing_cost(&none, &d, &params), c_long);
    }

    #[test]
    fn with_a_slack_weight_the_order_closer_to_its_deadline_costs_less() {
        let params = PolicyParams {
            slack_weight: 0.25,
            ..PolicyParams::default()
        };
        let d = driver(1, east(1.0));
        let relaxed = OpenOrder {
            latest_pickup_secs: 3000.0,
            ..order(1, DOWNTOWN, 0.0)
        };
        let urgent = OpenOrder {
            latest_pickup_secs: 600.0,
            ..order(2, DOWNTOWN, 0.0)
        };
        assert!(pairing_cost(&urgent, &d, &params) < pairing_cost(&relaxed, &d, &params));
        // Without a deadline (the live engine) the weight changes nothing.
        assert_eq!(
            pairing_cost(&order(3, DOWNTOWN, 0.0), &d, &params),
            pairing_cost(&order(3, DOWNTOWN, 0.0), &d, &PolicyParams::default())
        );
    }

    #[test]
    fn a_driver_who_would_wait_past_the_commitment_window_is_not_committed_yet() {
        let params = PolicyParams {
            commit_ahead_secs: 300.0,
            ..PolicyParams::default()
        };
        let d = driver(1, east(1.0));
        let travel = travel_secs(d.at, DOWNTOWN, d.vehicle, params.road_factor);
        assert!(pairing_cost(&order(1, DOWNTOWN, travel + 299.0), &d, &params).is_finite());
        assert!(pairing_cost(&order(1, DOWNTOWN, travel + 301.0), &d, &params).is_infinite());
        // Without a window (the default), any wait is committed.
        let eager = PolicyParams::default();
        assert!(pairing_cost(&order(1, DOWNTOWN, travel + 3600.0), &d, &eager).is_finite());
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
}
