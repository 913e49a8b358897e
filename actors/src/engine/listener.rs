//! What a committed order change sets in motion elsewhere: the dispatcher
//! opens or withdraws the order, the carrying driver's actor takes it on or
//! lets it go, and the restaurant's tablets hear of every change of its
//! orders (new, confirmed, assigned, picked up, cancelled...). Runs inside
//! order actors, after their write: it only casts (or spawns), never waits.

use crate::domain::eta::{self, Eta, Kitchen};
use crate::domain::lifecycle;
use crate::domain::model::*;
use crate::engine::dispatcher::{DispatchHandle, Dispatchable};
use crate::engine::driver::Drivers;
use crate::engine::feeds::RestaurantFeeds;
use crate::engine::order::{OrderChanged, OrderListener};
use crate::wire;
use std::sync::Arc;
use tracing::Instrument;

pub(crate) struct EngineListener {
    pub feeds: Arc<RestaurantFeeds>,
    pub drivers: Drivers,
    pub dispatch: DispatchHandle,
}

impl EngineListener {
    fn open_for_dispatch(&self, change: &OrderChanged<'_>) {
        let order = change.order;
        self.dispatch.open(Dispatchable {
            order_id: order.id,
            restaurant: change.restaurant.clone(),
            dropoff: LatLon {
                lat: order.delivery_address.lat,
                lon: order.delivery_address.lon,
            },
            food_ready_at: eta::food_ready_at(
                Kitchen::from(order),
                change.restaurant.prep_time_minutes,
            ),
            placed_at: order.placed_at,
        });
    }

    fn carry(&self, change: &OrderChanged<'_>) {
        let (Some(driver_id), Some(profile)) = (change.order.driver_id, change.driver.cloned())
        else {
            return;
        };
        let drivers = self.drivers.clone();
        let order = change.order_ref.clone();
        let feed = change.feed.clone();
        // Starting a driver actor is a call to its supervisor: off the
        // order actor, which must not wait on it.
        // In the span of the request behind the change, if there is one.
        tokio::spawn(
            async move {
                let order_id = order.order_id();
                if !drivers.carry(profile, order, feed).await {
                    tracing::warn!(
                        order_id,
                        driver_id,
                        "Driver actor unavailable; order not carried"
                    );
                }
            }
            .in_current_span(),
        );
    }

    fn release(&self, order: &Order) {
        if let Some(driver_id) = order.driver_id {
            self.drivers.release(driver_id, order.id);
        }
    }
}

impl OrderListener for EngineListener {
    fn order_changed(&self, change: OrderChanged<'_>) {
        let order = change.order;
        // A tablet follows all of its restaurant's orders on one
        // subscription. The DRIVER_UNASSIGNED of a cancellation is skipped:
        // the cancellation's own update, just after, carries the same order.
        let unassigned_by_cancel =
            change.event.kind == OrderEventType::DriverUnassigned && order.status.is_terminal();
        if !unassigned_by_cancel {
            self.feeds.publish(
                order.restaurant_id,
                &wire::order_update(order, Eta::of(order, now())),
            );
        }
        match change.event.kind {
            OrderEventType::OrderPlaced => {}
            OrderEventType::StatusChanged => match order.status {
                OrderStatus::Confirmed if lifecycle::awaits_driver(order) => {
                    self.open_for_dispatch(&change)
                }
                // The kitchen's news moves the food-ready time dispatch
                // plans with (the batching window stops holding food that
                // is ready).
                OrderStatus::Preparing | OrderStatus::ReadyForPickup
                    if lifecycle::awaits_driver(order) =>
                {
                    self.dispatch.ready_at(
                        order.id,
                        eta::food_ready_at(
                            Kitchen::from(order),
                            change.restaurant.prep_time_minutes,
                        ),
                    )
                }
                OrderStatus::Cancelled | OrderStatus::Delivered => {
                    self.dispatch.withdraw(order.id);
                    self.release(order);
                }
                _ => {}
            },
            OrderEventType::DriverAssigned => {
                self.dispatch.withdraw(order.id);
                self.carry(&change);
            }
            OrderEventType::DriverUnassigned => self.release(order),
            // The order's watchers heard it from the order actor; the
            // restaurant's tablets hear of their own stop here.
            OrderEventType::DriverApproaching | OrderEventType::DriverArrived => {
                if change.event.data["stop"] == "restaurant"
                    && let Some(frame) = wire::arrival(order.id, change.event)
                {
                    self.feeds.publish(order.restaurant_id, &frame);
                }
            }
        }
    }

    fn order_released(&self, order: &Order) {
        self.dispatch.withdraw(order.id);
        // Live, and carried on by the region's next owner: its driver's
        // load is not freed in between.
        if let Some(driver_id) = order.driver_id {
            self.drivers.handed_over(driver_id, order.id);
        }
    }

    fn order_started(&self, change: OrderChanged<'_>) {
        if lifecycle::awaits_driver(change.order) {
            self.open_for_dispatch(&change);
        } else if change.order.driver_id.is_some() {
            self.carry(&change);
        }
    }
}
