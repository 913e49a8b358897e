//! Estimated delivery time (CONTRACT.md "Dispatch"): before pickup,
//! `max(food ready, driver at the restaurant) + travel to the customer`;
//! after pickup, travel from the driver to the customer. Travel time is
//! great-circle distance x road factor / the vehicle's speed.

use crate::domain::geo::distance_km;
use crate::domain::model::{LatLon, Order, VehicleType};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

/// The contract's default road factor: streets are longer than the crow flies.
pub const DEFAULT_ROAD_FACTOR: f64 = 1.3;

/// Typical urban speed of each vehicle, in metres per second.
pub fn speed_mps(vehicle: VehicleType) -> f64 {
    match vehicle {
        VehicleType::Car => 25.0 / 3.6,
        VehicleType::Scooter => 22.0 / 3.6,
        VehicleType::Bike => 15.0 / 3.6,
        VehicleType::Walk => 5.0 / 3.6,
    }
}

/// Seconds to travel from `a` to `b`.
pub fn travel_secs(a: LatLon, b: LatLon, vehicle: VehicleType, road_factor: f64) -> f64 {
    distance_km(a, b) * 1000.0 * road_factor / speed_mps(vehicle)
}

/// What the kitchen has said about an order so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kitchen {
    pub placed_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub preparing_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
}

impl Kitchen {
    /// A just-placed order: nothing said yet.
    pub fn placed(at: DateTime<Utc>) -> Kitchen {
        Kitchen {
            placed_at: at,
            confirmed_at: None,
            preparing_at: None,
            ready_at: None,
        }
    }
}

impl From<&Order> for Kitchen {
    fn from(order: &Order) -> Kitchen {
        Kitchen {
            placed_at: order.placed_at,
            confirmed_at: order.confirmed_at,
            preparing_at: order.preparing_at,
            ready_at: order.ready_at,
        }
    }
}

/// When the food is (or will be) ready, the one rule behind every ETA,
/// offer and dispatch score: when it was marked ready; else the prep time
/// after it went into the kitchen; else the prep time after the restaurant
/// confirmed it (or, before that, after it was placed).
pub fn food_ready_at(kitchen: Kitchen, prep_time_minutes: i32) -> DateTime<Utc> {
    let prep = Duration::minutes(i64::from(prep_time_minutes));
    kitchen
        .ready_at
        .or_else(|| kitchen.preparing_at.map(|t| t + prep))
        .unwrap_or_else(|| kitchen.confirmed_at.unwrap_or(kitchen.placed_at) + prep)
}

fn after(at: DateTime<Utc>, secs: f64) -> DateTime<Utc> {
    at + Duration::milliseconds((secs * 1000.0).round() as i64)
}

/// Where the delivery stands, for the estimate.
pub enum Leg {
    /// No driver yet: the estimate assumes one is at the restaurant when the
    /// food is ready, travelling by `vehicle`.
    Unassigned { vehicle: VehicleType },
    /// A driver at `at` is on the way to the restaurant.
    ToRestaurant { at: LatLon, vehicle: VehicleType },
    /// The driver at `at` carries the food.
    ToCustomer { at: LatLon, vehicle: VehicleType },
}

pub fn estimate_delivery(
    now: DateTime<Utc>,
    food_ready_at: DateTime<Utc>,
    restaurant: LatLon,
    dropoff: LatLon,
    leg: Leg,
    road_factor: f64,
) -> DateTime<Utc> {
    estimate_delivery_via(
        now,
        food_ready_at,
        restaurant,
        &[],
        dropoff,
        leg,
        road_factor,
    )
}

/// [`estimate_delivery`] for an order of a bundle: the driver makes the
/// drop-offs `drops_before` (in sequence, those not made yet) on the way
/// from the restaurant, or from where it is after pickup, to `dropoff`.
pub fn estimate_delivery_via(
    now: DateTime<Utc>,
    food_ready_at: DateTime<Utc>,
    restaurant: LatLon,
    drops_before: &[LatLon],
    dropoff: LatLon,
    leg: Leg,
    road_factor: f64,
) -> DateTime<Utc> {
    let route = |from: LatLon, vehicle: VehicleType| {
        let mut at = from;
        let mut secs = 0.0;
        for &stop in drops_before.iter().chain(std::iter::once(&dropoff)) {
            secs += travel_secs(at, stop, vehicle, road_factor);
            at = stop;
        }
        secs
    };
    match leg {
        Leg::ToCustomer { at, vehicle } => after(now, route(at, vehicle)),
        Leg::Unassigned { vehicle } => {
            let leave = food_ready_at.max(now);
            after(leave, route(restaurant, vehicle))
        }
        Leg::ToRestaurant { at, vehicle } => {
            let arrival = after(now, travel_secs(at, restaurant, vehicle, road_factor));
            let leave = food_ready_at.max(arrival);
            after(leave, route(restaurant, vehicle))
        }
    }
}

/// The `eta` field of order responses and pushes.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Eta {
    pub estimated_delivery_at: DateTime<Utc>,
    /// Whole seconds from now, never negative.
    pub seconds_remaining: i64,
}

impl Eta {
    pub fn at(estimated_delivery_at: DateTime<Utc>, now: DateTime<Utc>) -> Eta {
        Eta {
            estimated_delivery_at,
            seconds_remaining: (estimated_delivery_at - now).num_seconds().max(0),
        }
    }

    /// The `eta` clients see of `order`: its stored estimate, none once it
    /// is delivered or cancelled.
    pub fn of(order: &Order, now: DateTime<Utc>) -> Option<Eta> {
        if order.status.is_terminal() {
            return None;
        }
        order.estimated_delivery_at.map(|at| Eta::at(at, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn food_is_ready_when_marked_else_prep_time_after_the_latest_kitchen_step() {
        use chrono::TimeZone;
        let t =
            |m: i64| Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap() + Duration::minutes(m);
        let mut kitchen = Kitchen::placed(t(0));
        assert_eq!(food_ready_at(kitchen, 15), t(15));
        kitchen.confirmed_at = Some(t(4));
        assert_eq!(food_ready_at(kitchen, 15), t(19));
        kitchen.preparing_at = Some(t(10));
        assert_eq!(food_ready_at(kitchen, 15), t(25));
        // Marked ready early (or late): that is when it is ready.
        kitchen.ready_at = Some(t(12));
        assert_eq!(food_ready_at(kitchen, 15), t(12));
    }

    const RESTAURANT: LatLon = LatLon {
        lat: 30.2672,
        lon: -97.7431,
    };
    const CUSTOMER: LatLon = LatLon {
        lat: 30.2862,
        lon: -97.7394,
    };

    #[test]
    fn waits_for_the_food_when_the_driver_is_early() {
        let now = Utc::now();
        let ready = now + Duration::minutes(15);
        let eta = estimate_delivery(
            now,
            ready,
            RESTAURANT,
            CUSTOMER,
            Leg::ToRestaurant {
                at: RESTAURANT,
                vehicle: VehicleType::Car,
            },
            DEFAULT_ROAD_FACTOR,
        );
        let leg = travel_secs(RESTAURANT, CUSTOMER, VehicleType::Car, DEFAULT_ROAD_FACTOR);
        assert_eq!(eta, after(ready, leg));
    }

    #[test]
    fn waits_for_the_driver_when_the_food_is_early() {
        let now = Utc::now();
        let far = LatLon {
            lat: 30.40,
            lon: -97.74,
        };
        let eta = estimate_delivery(
            now,
            now,
            RESTAURANT,
            CUSTOMER,
            Leg::ToRestaurant {
                at: far,
                vehicle: VehicleType::Bike,
            },
            DEFAULT_ROAD_FACTOR,
        );
        let to_restaurant = travel_secs(far, RESTAURANT, VehicleType::Bike, DEFAULT_ROAD_FACTOR);
        let to_customer = travel_secs(RESTAURANT, CUSTOMER, VehicleType::Bike, DEFAULT_ROAD_FACTOR);
        assert_eq!(eta, after(after(now, to_restaurant), to_customer));
    }

    #[test]
    fn after_pickup_counts_from_the_driver_and_slower_vehicles_take_longer() {
        let now = Utc::now();
        let car = estimate_delivery(
            now,
            now,
            RESTAURANT,
            CUSTOMER,
            Leg::ToCustomer {
                at: RESTAURANT,
                vehicle: VehicleType::Car,
            },
            1.3,
        );
        let walk = estimate_delivery(
            now,
            now,
            RESTAURANT,
            CUSTOMER,
            Leg::ToCustomer {
                at: RESTAURANT,
                vehicle: VehicleType::Walk,
            },
            1.3,
        );
        assert!(walk > car);
        let there = estimate_delivery(
            now,
            now,
            RESTAURANT,
            CUSTOMER,
            Leg::ToCustomer {
                at: CUSTOMER,
                vehicle: VehicleType::Car,
            },
            1.3,
        );
        assert_eq!(there, now);
    }

    #[test]
    fn an_order_of_a_bundle_counts_the_drop_offs_before_it() {
        let now = Utc::now();
        let first = LatLon {
            lat: 30.2672,
            lon: -97.70,
        };
        let car = |at| Leg::ToRestaurant {
            at,
            vehicle: VehicleType::Car,
        };
        let alone = estimate_delivery(now, now, RESTAURANT, CUSTOMER, car(RESTAURANT), 1.3);
        let second = estimate_delivery_via(
            now,
            now,
            RESTAURANT,
            &[first],
            CUSTOMER,
            car(RESTAURANT),
            1.3,
        );
        let via = travel_secs(RESTAURANT, first, VehicleType::Car, 1.3)
            + travel_secs(first, CUSTOMER, VehicleType::Car, 1.3);
        assert_eq!(second, after(now, via));
        assert!(second > alone);
        // After pickup, from the driver through the drop-off still ahead.
        let on_the_way = estimate_delivery_via(
            now,
            now,
            RESTAURANT,
            &[first],
            CUSTOMER,
            Leg::ToCustomer {
                at: first,
                vehicle: VehicleType::Car,
            },
            1.3,
        );
        let last_leg = travel_secs(first, CUSTOMER, VehicleType::Car, 1.3);
        assert_eq!(on_the_way, after(now, last_leg));
    }

    #[test]
    fn seconds_remaining_is_never_negative() {
        let now = Utc::now();
        assert_eq!(
            Eta::at(now - Duration::minutes(1), now).seconds_remaining,
            0
        );
        assert_eq!(
            Eta::at(now + Duration::seconds(90), now).seconds_remaining,
            90
        );
    }
}
