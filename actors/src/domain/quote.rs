//! Placing an order, as one pure decision (CONTRACT.md `POST /api/orders`):
//! is the restaurant open, is the address within its delivery radius, is
//! every item on its menu and available, what does it cost, when will the
//! food be ready and the order delivered. The gateway parses the request,
//! reads the restaurant and its menu, asks [`quote`], and hands the draft
//! to the store; nothing here reads a clock or a database.

use crate::domain::eta::{self, Kitchen, Leg};
use crate::domain::geo::distance_km;
use crate::domain::input::{FieldError, NewOrder};
use crate::domain::model::{LatLon, MenuItem, MenuItemId, Restaurant, UserId, VehicleType};
use crate::domain::pricing;
use chrono::{DateTime, Utc};

/// A priced order line, ready to be written.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedLine {
    pub menu_item_id: MenuItemId,
    pub name: String,
    pub quantity: i32,
    pub unit_price_cents: i64,
    pub special_instructions: Option<String>,
}

/// Everything the store writes for a new order, in its one transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderDraft {
    pub customer_id: UserId,
    pub order: NewOrder,
    pub lines: Vec<PricedLine>,
    pub subtotal_cents: i64,
    pub delivery_fee_cents: i64,
    pub service_fee_cents: i64,
    pub total_cents: i64,
    pub estimated_delivery_at: Option<DateTime<Utc>>,
    pub placed_at: DateTime<Utc>,
}

/// Why an order cannot be placed (the contract's 422s).
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    RestaurantClosed,
    /// The address is `distance_km` away; the restaurant delivers within `radius_km`.
    OutOfRange {
        distance_km: f64,
        radius_km: f64,
    },
    /// Each line whose item is unavailable or not on this menu.
    ItemsUnavailable(Vec<FieldError>),
}

/// Prices `order` from `restaurant`'s `menu` as of `now`, or says why it
/// cannot be placed. The estimate assumes a car waiting at the restaurant
/// when the food is ready: no driver is known yet.
pub fn quote(
    customer_id: UserId,
    restaurant: &Restaurant,
    menu: &[MenuItem],
    order: NewOrder,
    now: DateTime<Utc>,
    road_factor: f64,
) -> Result<OrderDraft, Rejection> {
    if !restaurant.is_open {
        return Err(Rejection::RestaurantClosed);
    }
    let dropoff = LatLon {
        lat: order.delivery_address.lat,
        lon: order.delivery_address.lon,
    };
    let distance = distance_km(restaurant.location, dropoff);
    if distance > restaurant.delivery_radius_km {
        return Err(Rejection::OutOfRange {
            distance_km: distance,
            radius_km: restaurant.delivery_radius_km,
        });
    }

    let mut unavailable = Vec::new();
    let mut lines = Vec::with_capacity(order.lines.len());
    for (i, line) in order.lines.iter().enumerate() {
        let item = menu
            .iter()
            .find(|item| item.id == line.menu_item_id && item.restaurant_id == restaurant.id);
        match item {
            Some(item) if item.is_available => lines.push(PricedLine {
                menu_item_id: item.id,
                name: item.name.clone(),
                quantity: line.quantity,
                unit_price_cents: item.price_cents,
                special_instructions: line.special_instructions.clone(),
            }),
            Some(item) => unavailable.push(FieldError {
                field: format!("items[{i}].menuItemId"),
                message: format!("{} ({}) is unavailable", item.name, item.id),
            }),
            None => unavailable.push(FieldError {
                field: format!("items[{i}].menuItemId"),
                message: format!(
                    "item {} is not on this restaurant's menu",
                    line.menu_item_id
                ),
            }),
        }
    }
    if !unavailable.is_empty() {
        return Err(Rejection::ItemsUnavailable(unavailable));
    }

    let price = pricing::price(
        lines.iter().map(|l| (l.unit_price_cents, l.quantity)),
        restaurant.delivery_fee_cents,
    );
    let food_ready_at = eta::food_ready_at(Kitchen::placed(now), restaurant.prep_time_minutes);
    let estimated_delivery_at = eta::estimate_delivery(
        now,
        food_ready_at,
        restaurant.location,
        dropoff,
        Leg::Unassigned {
            vehicle: VehicleType::Car,
        },
        road_factor,
    );
    Ok(OrderDraft {
        customer_id,
        order,
        lines,
        subtotal_cents: price.subtotal_cents,
        delivery_fee_cents: price.delivery_fee_cents,
        service_fee_cents: price.service_fee_cents,
        total_cents: price.total_cents,
        estimated_delivery_at: Some(estimated_delivery_at),
        placed_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::eta::DEFAULT_ROAD_FACTOR;
    use crate::domain::input::OrderLine;
    use crate::domain::model::DeliveryAddress;
    use chrono::TimeZone;

    fn restaurant() -> Restaurant {
        Restaurant {
            id: 7,
            name: "Congress Avenue Tacos".into(),
            address: "1 Congress Ave".into(),
            location: LatLon {
                lat: 30.2686,
                lon: -97.7425,
            },
            cuisine_type: "mexican".into(),
            rating: 4.5,
            prep_time_minutes: 15,
            delivery_fee_cents: 299,
            delivery_radius_km: 10.0,
            is_open: true,
            image_url: None,
            distance_km: None,
        }
    }

    fn item(id: MenuItemId, price_cents: i64, is_available: bool) -> MenuItem {
        MenuItem {
            id,
            restaurant_id: 7,
            name: format!("item {id}"),
            description: String::new(),
            price_cents,
            category: "mains".into(),
            is_available,
            image_url: None,
        }
    }

    fn order_at(lat: f64, lines: &[(MenuItemId, i32)]) -> NewOrder {
        NewOrder {
            restaurant_id: 7,
            lines: lines
                .iter()
                .map(|&(menu_item_id, quantity)| OrderLine {
                    menu_item_id,
                    quantity,
                    special_instructions: None,
                })
                .collect(),
            delivery_address: DeliveryAddress {
                street: "1100 Congress Ave".into(),
                city: "Austin".into(),
                state: "TX".into(),
                zip: "78701".into(),
                lat,
                lon: -97.7404,
                instructions: None,
            },
        }
    }

    fn noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_quote_prices_the_lines_and_estimates_from_the_prep_time() {
        let menu = [item(1, 1250, true), item(2, 400, true)];
        let draft = quote(
            3,
            &restaurant(),
            &menu,
            order_at(30.2747, &[(1, 2), (2, 1)]),
            noon(),
            DEFAULT_ROAD_FACTOR,
        )
        .expect("a valid order");
        assert_eq!(draft.customer_id, 3);
        assert_eq!(draft.subtotal_cents, 2900);
        assert_eq!(draft.delivery_fee_cents, 299);
        assert_eq!(draft.service_fee_cents, 435);
        assert_eq!(draft.total_cents, 2900 + 299 + 435);
        assert_eq!(draft.lines[0].name, "item 1");
        assert_eq!(draft.lines[1].unit_price_cents, 400);
        assert_eq!(draft.placed_at, noon());
        // Food ready at 12:15; the drive is under a kilometre.
        let eta = draft.estimated_delivery_at.expect("an estimate");
        assert!(eta > noon() + chrono::Duration::minutes(15));
        assert!(eta < noon() + chrono::Duration::minutes(18), "{eta}");
    }

    #[test]
    fn a_closed_restaurant_refuses_before_anything_else() {
        let closed = Restaurant {
            is_open: false,
            ..restaurant()
        };
        let far_and_unknown = order_at(31.5, &[(99, 1)]);
        assert_eq!(
            quote(
                3,
                &closed,
                &[],
                far_and_unknown,
                noon(),
                DEFAULT_ROAD_FACTOR
            ),
            Err(Rejection::RestaurantClosed)
        );
    }

    #[test]
    fn an_address_beyond_the_delivery_radius_is_out_of_range() {
        let menu = [item(1, 1250, true)];
        let Err(Rejection::OutOfRange {
            distance_km,
            radius_km,
        }) = quote(
            3,
            &restaurant(),
            &menu,
            order_at(30.40, &[(1, 1)]),
            noon(),
            DEFAULT_ROAD_FACTOR,
        )
        else {
            panic!("expected OutOfRange");
        };
        assert_eq!(radius_km, 10.0);
        assert!((distance_km - 14.6).abs() < 0.2, "{distance_km}");
    }

    #[test]
    fn every_unavailable_or_unknown_item_is_named() {
        let mut foreign = item(3, 100, true);
        foreign.restaurant_id = 8;
        let menu = [item(1, 1250, true), item(2, 400, false), foreign];
        let Err(Rejection::ItemsUnavailable(fields)) = quote(
            3,
            &restaurant(),
            &menu,
            order_at(30.2747, &[(1, 1), (2, 1), (3, 1), (4, 1)]),
            noon(),
            DEFAULT_ROAD_FACTOR,
        ) else {
            panic!("expected ItemsUnavailable");
        };
        let named: Vec<&str> = fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            named,
            [
                "items[1].menuItemId",
                "items[2].menuItemId",
                "items[3].menuItemId"
            ]
        );
        assert!(fields[0].message.contains("unavailable"));
        assert!(fields[1].message.contains("not on this restaurant's menu"));
    }
}
