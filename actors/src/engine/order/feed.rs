//! One live order's audience: the sessions watching it, and the position and
//! trip of its driver. Shared by two actors so that a position reaches the
//! watchers in one hop (DESIGN.md "The two hot paths"):
//!
//! - the order actor owns who may watch (it checks visibility and queues the
//!   snapshot), what they hear of status changes, and which driver's
//!   positions count ([`OrderFeed::track`], after every committed change);
//! - the actor of the driver carrying the order publishes each position
//!   here directly ([`OrderFeed::publish_location`]), as a `driver_location`
//!   frame with a fresh ETA, coalesced per order in each watcher's outbox.
//!
//! Before this, a position took one more task wake-up: driver actor, then
//! order actor, then outboxes. At 30,000 deliveries a second on two cores
//! the wake-ups were the dominant cost (benches/README.md).
//!
//! The lock is held to edit the watcher list, or for one position: its ETA,
//! its frame, and one push per watcher. No await happens under it, and the
//! only lock taken inside it is each outbox's, which never calls back here.

use crate::domain::arrival::{Arrival, ArrivalRules, ArrivalWatch, Stop};
use crate::domain::eta::{self, Eta, Leg};
use crate::domain::model::*;
use crate::engine::order::bus::{BusFrame, OrderBus};
use crate::engine::outbox::{Outbox, SessionId};
use crate::wire::{Frame, ServerMessage};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub struct OrderFeed {
    order_id: OrderId,
    restaurant: LatLon,
    road_factor: f64,
    eta_push_threshold: Duration,
    arrival_rules: Option<ArrivalRules>,
    /// Cluster mode: every frame for watchers also goes here, once, for
    /// the watchers on other nodes.
    bus: Option<Arc<dyn OrderBus>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    watchers: HashMap<SessionId, Arc<Outbox>>,
    /// The assigned driver's own socket: it gets status updates, but not its
    /// own positions echoed back.
    driver_session: Option<SessionId>,
    /// Set while a driver carries the order and it is not terminal.
    trip: Option<Trip>,
    /// The carrying driver's newest position.
    location: Option<DriverLocation>,
    /// Bumped by every [`OrderFeed::track`], so that an estimate computed
    /// before the order last changed can be recognised as stale.
    generation: u64,
    /// The geofence of the trip's next stop: whose trip, which stop.
    arrival: Option<(DriverId, ArrivalWatch)>,
    /// The drop-offs the carrying driver makes before this order's, in
    /// sequence: the earlier orders of its bundle, each until its driver
    /// no longer carries it (delivered, cancelled). Empty for an order
    /// offered alone. In memory only: after a restart, an estimate counts
    /// from the restaurant or the driver straight to this door again.
    drops_before: Vec<(OrderId, LatLon)>,
}

/// What one position did, for the driver actor to pass on to the order
/// actor: returned rather than kept in the feed, so a position takes the
/// feed's lock once.
#[derive(Debug, Default, PartialEq)]
pub struct Published {
    /// The estimate to store, when it moved past the push threshold.
    pub moved: Option<MovedEta>,
    /// Arrival events this position completed (almost always none, which
    /// allocates nothing).
    pub arrivals: Vec<Arrival>,
}

/// An estimate a position moved past the push threshold, for the order
/// actor to store and push unless the order changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovedEta {
    pub estimated_delivery_at: DateTime<Utc>,
    generation: u64,
}

/// What a position needs to become an ETA, copied from the order on every
/// committed change.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trip {
    pub driver_id: DriverId,
    pub vehicle: VehicleType,
    pub picked_up: bool,
    pub food_ready_at: DateTime<Utc>,
    pub dropoff: LatLon,
    /// The estimate last stored (and pushed as an `order_update`).
    pub stored_eta: Option<DateTime<Utc>>,
}

impl OrderFeed {
    pub fn new(
        order_id: OrderId,
        restaurant: &RestaurantInfo,
        road_factor: f64,
        eta_push_threshold: Duration,
        arrival_rules: Option<ArrivalRules>,
    ) -> OrderFeed {
        OrderFeed {
            order_id,
            restaurant: restaurant.location,
            road_factor,
            eta_push_threshold,
            arrival_rules,
            bus: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every edit under this lock is a single insert, remove or
        // assignment: a panic elsewhere cannot leave it half done.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a watcher after queueing its snapshot, built from the current
    /// position under the same lock, so no position can slip in between or
    /// before it. False if the session is already closed.
    pub fn subscribe(
        &self,
        outbox: Arc<Outbox>,
        snapshot: impl FnOnce(Option<&DriverLocation>) -> Frame,
    ) -> bool {
        let mut inner = self.lock();
        let frame = snapshot(inner.location.as_ref());
        if !outbox.push(frame) {
            return false;
        }
        inner.watchers.insert(outbox.session_id, outbox);
        true
    }

    /// Queues a fresh snapshot for every watcher (a revived order actor
    /// adopting this feed: its watchers may have missed a change).
    pub fn resnapshot(&self, snapshot: impl Fn(Option<&DriverLocation>) -> Frame) {
        let mut inner = self.lock();
        let frame = snapshot(inner.location.as_ref());
        inner
            .watchers
            .retain(|_, outbox| outbox.push(frame.clone()));
    }

    /// Where the order's restaurant is (which region the order is of).
    pub fn restaurant_at(&self) -> LatLon {
        self.restaurant
    }

    /// The driver whose positions count, while one carries the order.
    pub fn driver_id(&self) -> Option<DriverId> {
        self.lock().trip.map(|trip| trip.driver_id)
    }

    /// Marks `session_id` as the carrying driver's own socket.
    pub fn set_driver_session(&self, session_id: SessionId) {
        self.lock().driver_session = Some(session_id);
    }

    pub fn unsubscribe(&self, session_id: SessionId) {
        self.lock().watchers.remove(&session_id);
    }

    /// Cluster mode: the order's actor stops here (its region went to
    /// another node): its watchers leave this feed, to follow the order
    /// over the bus. The carrying driver's own socket stays (it is the
    /// driver's actor's, not a subscription).
    pub fn take_watchers(&self) -> Vec<Arc<Outbox>> {
        let mut inner = self.lock();
        let driver_session = inner.driver_session;
        let taken: Vec<SessionId> = inner
            .watchers
            .keys()
            .filter(|id| Some(**id) != driver_session)
            .copied()
            .collect();
        taken
            .iter()
            .filter_map(|id| inner.watchers.remove(id))
            .filter(|outbox| !outbox.is_closed())
            .collect()
    }

    /// Queues a frame that must not be dropped for every watcher, forgetting
    /// those whose session closed.
    pub fn broadcast(&self, frame: &Frame) {
        let mut inner = self.lock();
        inner
            .watchers
            .retain(|_, outbox| outbox.push(frame.clone()));
        // Under the lock: the bus hears an order's frames in their order.
        if let Some(bus) = &self.bus {
            bus.publish(self.order_id, BusFrame::Update, frame);
        }
    }

    /// Cluster mode: also publish every frame to `bus`.
    pub fn with_bus(mut self, bus: Option<Arc<dyn OrderBus>>) -> OrderFeed {
        self.bus = bus;
        self
    }

    /// Whose positions count from now on, and what they mean for the ETA;
    /// `None` once the order has no driver or is terminal. A new driver's
    /// positions replace the old one's.
    pub fn track(&self, trip: Option<Trip>) {
        let mut inner = self.lock();
        let same_driver =
            matches!((&inner.trip, &trip), (Some(a), Some(b)) if a.driver_id == b.driver_id);
        if !same_driver {
            inner.location = None;
            inner.drops_before.clear();
        }
        inner.trip = trip;
        inner.generation += 1;
    }

    /// The drop-offs the driver just assigned makes before this order's
    /// (the earlier orders of its bundle, in sequence).
    pub fn set_drops_before(&self, drops: Vec<(OrderId, LatLon)>) {
        self.lock().drops_before = drops;
    }

    /// The carrying driver no longer carries `order_id` (delivered,
    /// cancelled): it is no stop before this order's any more.
    pub fn drop_made(&self, order_id: OrderId) {
        self.lock().drops_before.retain(|(id, _)| *id != order_id);
    }

    /// The drop-offs still to be made before this order's, in sequence.
    pub fn drops_before(&self) -> Vec<LatLon> {
        self.lock().drops_before.iter().map(|(_, at)| *at).collect()
    }

    /// Whether `moved` was computed from the trip as it still stands. A
    /// committed change in between (a new stage, food ready, another
    /// driver) made its own estimate, which must not be overwritten.
    pub fn is_current(&self, moved: &MovedEta) -> bool {
        self.lock().generation == moved.generation
    }

    /// The carrying driver's newest position.
    pub fn location(&self) -> Option<DriverLocation> {
        self.lock().location
    }

    /// A position of `location.driver_id`: ignored unless that driver
    /// carries the order, else kept and queued for every watcher but the
    /// driver with a fresh ETA. Returns the new estimate when it moved more
    /// than the push threshold from the stored one (the order actor then
    /// stores it and pushes an `order_update`), and the arrival events the
    /// position completed.
    pub fn publish_location(&self, location: DriverLocation, received_at: Instant) -> Published {
        let mut guard = self.lock();
        // Disjoint borrows of the fields below.
        let inner = &mut *guard;
        let Some(trip) = inner
            .trip
            .as_mut()
            .filter(|trip| trip.driver_id == location.driver_id)
        else {
            return Published::default();
        };
        let at = location.at();
        let leg = if trip.picked_up {
            Leg::ToCustomer {
                at,
                vehicle: trip.vehicle,
            }
        } else {
            Leg::ToRestaurant {
                at,
                vehicle: trip.vehicle,
            }
        };
        let now = now();
        // Almost always empty, which allocates nothing.
        let drops_before: Vec<LatLon> = inner.drops_before.iter().map(|(_, at)| *at).collect();
        let fresh = eta::estimate_delivery_via(
            now,
            trip.food_ready_at,
            self.restaurant,
            &drops_before,
            trip.dropoff,
            leg,
            self.road_factor,
        );
        let moved = match trip.stored_eta {
            Some(stored) => {
                (fresh - stored).num_milliseconds().unsigned_abs()
                    > self.eta_push_threshold.as_millis() as u64
            }
            None => true,
        };
        if moved {
            // Asked once: positions until the order actor catches up
            // compare against the estimate it is about to store.
            trip.stored_eta = Some(fresh);
        }
        let mut arrivals = Vec::new();
        if let Some(rules) = &self.arrival_rules {
            let (stop, target) = if trip.picked_up {
                (Stop::Dropoff, trip.dropoff)
            } else {
                (Stop::Restaurant, self.restaurant)
            };
            let (driver_id, vehicle) = (trip.driver_id, trip.vehicle);
            // A new driver or the next stop: a fresh geofence.
            let fresh =
                !matches!(&inner.arrival, Some((d, w)) if *d == driver_id && w.stop == stop);
            if fresh {
                inner.arrival = Some((driver_id, ArrivalWatch::new(stop)));
            }
            let distance_m = crate::domain::geo::distance_km(at, target) * 1000.0;
            // `eta::travel_secs` of the distance just measured.
            let travel = distance_m * self.road_factor / eta::speed_mps(vehicle);
            if let Some((_, watch)) = inner.arrival.as_mut() {
                arrivals.extend(watch.observe(rules, distance_m, travel, received_at));
            }
        }
        inner.location = Some(location);
        let frame = ServerMessage::DriverLocation {
            order_id: self.order_id,
            location: &location,
            eta: Some(Eta::at(fresh, now)),
        }
        .encode();
        let driver_session = inner.driver_session;
        let order_id = self.order_id;
        inner.watchers.retain(|session_id, outbox| {
            if Some(*session_id) != driver_session {
                outbox.push_location(order_id, frame.clone(), received_at);
            }
            !outbox.is_closed()
        });
        if let Some(bus) = &self.bus {
            bus.publish(order_id, BusFrame::Location, &frame);
        }
        Published {
            moved: moved.then_some(MovedEta {
                estimated_delivery_at: fresh,
                generation: inner.generation,
            }),
            arrivals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::arrival::ArrivalKind;
    use crate::engine::outbox::next_session_id;

    fn feed() -> OrderFeed {
        let restaurant = RestaurantInfo {
            id: 1,
            name: "R".into(),
            location: LatLon {
                lat: 30.0,
                lon: -97.0,
            },
            prep_time_minutes: 10,
        };
        OrderFeed::new(7, &restaurant, 1.3, Duration::from_secs(60), None)
    }

    fn trip(driver_id: DriverId) -> Trip {
        Trip {
            driver_id,
            vehicle: VehicleType::Car,
            picked_up: false,
            food_ready_at: now(),
            dropoff: LatLon {
                lat: 30.02,
                lon: -97.0,
            },
            stored_eta: None,
        }
    }

    fn position(driver_id: DriverId, lat: f64) -> DriverLocation {
        DriverLocation {
            driver_id,
            lat,
            lon: -97.0,
            heading: None,
            speed_mps: None,
            timestamp: 0,
        }
    }

    fn watcher() -> Arc<Outbox> {
        Arc::new(Outbox::new(next_session_id(), 8))
    }

    async fn frame(outbox: &Outbox) -> serde_json::Value {
        let out = tokio::time::timeout(Duration::from_secs(1), outbox.next())
            .await
            .expect("a frame")
            .expect("open");
        serde_json::from_slice(&out.frame).unwrap()
    }

    /// Whether nothing waits in the outbox.
    fn quiet(outbox: &Outbox) -> bool {
        outbox.try_next().is_none()
    }

    #[tokio::test]
    async fn only_the_carrying_driver_is_published_and_never_to_itself() {
        let feed = feed();
        let customer = watcher();
        let driver = watcher();
        assert!(feed.subscribe(customer.clone(), |_| Frame::from_static(b"{}")));
        assert!(feed.subscribe(driver.clone(), |_| Frame::from_static(b"{}")));
        feed.set_driver_session(driver.session_id);
        frame(&customer).await;
        frame(&driver).await;

        // No trip yet: nobody's positions count.
        assert_eq!(
            feed.publish_location(position(3, 30.01), Instant::now())
                .moved,
            None
        );
        assert!(quiet(&customer));
        feed.track(Some(trip(3)));
        // Another driver's positions do not count either.
        assert_eq!(
            feed.publish_location(position(4, 30.01), Instant::now())
                .moved,
            None
        );
        assert!(quiet(&customer));
        assert!(feed.location().is_none());

        let first = feed
            .publish_location(position(3, 30.01), Instant::now())
            .moved;
        assert!(first.is_some(), "the first estimate is always stored");
        let pushed = frame(&customer).await;
        assert_eq!(pushed["type"], "driver_location");
        assert_eq!(pushed["orderId"], 7);
        assert_eq!(pushed["location"]["driverId"], 3);
        assert!(pushed["eta"]["estimatedDeliveryAt"].is_string());
        assert_eq!(feed.location().map(|l| l.driver_id), Some(3));
        // A step that barely moves the estimate is sent, not stored again.
        assert_eq!(
            feed.publish_location(position(3, 30.0101), Instant::now())
                .moved,
            None
        );
        assert_eq!(frame(&customer).await["location"]["lat"], 30.0101);
        assert!(
            quiet(&driver),
            "the driver's own positions are not echoed to it"
        );

        // Delivered, cancelled or unassigned: the position is forgotten and
        // nothing more goes out.
        feed.track(None);
        assert!(feed.location().is_none());
        assert_eq!(
            feed.publish_location(position(3, 30.01), Instant::now())
                .moved,
            None
        );
        assert!(quiet(&customer));
    }

    #[tokio::test]
    async fn an_order_later_in_a_bundle_counts_the_drop_offs_before_it_until_they_are_made() {
        let eta_of = |published: Published| {
            published
                .moved
                .expect("a stored estimate")
                .estimated_delivery_at
        };
        let feed = feed();
        let picked_up = Trip {
            picked_up: true,
            stored_eta: None,
            ..trip(3)
        };
        feed.track(Some(picked_up));
        // At the restaurant, carrying the food: straight to the door.
        let alone = eta_of(feed.publish_location(position(3, 30.0), Instant::now()));
        // The same driver first goes to another door 10 km east.
        let first_door = LatLon {
            lat: 30.0,
            lon: -96.9,
        };
        feed.set_drops_before(vec![(6, first_door)]);
        feed.track(Some(picked_up));
        let after_first = eta_of(feed.publish_location(position(3, 30.0), Instant::now()));
        let detour = after_first - alone;
        assert!(
            detour > chrono::Duration::minutes(30),
            "the drop-off before it is counted: {detour}"
        );
        assert_eq!(feed.drops_before(), vec![first_door]);
        // Another order's drop-off is no stop of this one.
        feed.drop_made(5);
        assert_eq!(feed.drops_before().len(), 1);
        // Made: straight to this door again.
        feed.drop_made(6);
        assert!(feed.drops_before().is_empty());
        feed.track(Some(picked_up));
        let again = eta_of(feed.publish_location(position(3, 30.0), Instant::now()));
        assert!((again - alone).num_seconds().abs() <= 1, "{alone} {again}");
        // Another driver's trip has no stops of the old one's.
        feed.set_drops_before(vec![(6, first_door)]);
        feed.track(Some(trip(4)));
        assert!(feed.drops_before().is_empty());
    }

    #[tokio::test]
    async fn a_new_driver_starts_afresh_and_the_same_one_keeps_its_position() {
        let feed = feed();
        feed.track(Some(trip(3)));
        feed.publish_location(position(3, 30.01), Instant::now());
        // Picked up: same driver, the position stays.
        feed.track(Some(Trip {
            picked_up: true,
            ..trip(3)
        }));
        assert_eq!(feed.location().map(|l| l.driver_id), Some(3));
        // Reassigned: the old driver's position is not the new one's.
        feed.track(Some(trip(5)));
        assert!(feed.location().is_none());
        assert_eq!(
            feed.publish_location(position(3, 30.02), Instant::now())
                .moved,
            None
        );
        assert!(
            feed.publish_location(position(5, 30.02), Instant::now())
                .moved
                .is_some()
        );
    }

    #[tokio::test]
    async fn an_estimate_is_stale_once_the_order_changed_after_it() {
        let feed = feed();
        feed.track(Some(trip(3)));
        let moved = feed
            .publish_location(position(3, 30.01), Instant::now())
            .moved
            .expect("first estimate");
        assert!(feed.is_current(&moved));
        // A transition committed (with its own estimate) before the order
        // actor got to `moved`: it must not be stored over that one.
        feed.track(Some(Trip {
            picked_up: true,
            ..trip(3)
        }));
        assert!(!feed.is_current(&moved));
    }

    #[tokio::test]
    async fn a_position_returns_the_arrivals_it_completes_once_each() {
        let restaurant = RestaurantInfo {
            id: 1,
            name: "R".into(),
            location: LatLon {
                lat: 30.0,
                lon: -97.0,
            },
            prep_time_minutes: 10,
        };
        let rules = ArrivalRules::default();
        let feed = OrderFeed::new(7, &restaurant, 1.3, Duration::from_secs(60), Some(rules));
        feed.track(Some(trip(3)));
        let start = Instant::now();
        let kinds = |published: Published| -> Vec<ArrivalKind> {
            published.arrivals.iter().map(|a| a.kind).collect()
        };
        // 1.1 km out: nothing; 330 m: approaching the restaurant.
        assert!(kinds(feed.publish_location(position(3, 30.01), start)).is_empty());
        let approaching = feed.publish_location(position(3, 30.003), start);
        assert_eq!(approaching.arrivals.len(), 1);
        assert_eq!(approaching.arrivals[0].stop, Stop::Restaurant);
        assert_eq!(kinds(approaching), vec![ArrivalKind::Approaching]);
        // Inside 50 m: arrived only once the dwell time has passed, and once.
        assert!(kinds(feed.publish_location(position(3, 30.0002), start)).is_empty());
        let later = start + rules.dwell;
        assert_eq!(
            kinds(feed.publish_location(position(3, 30.0002), later)),
            vec![ArrivalKind::Arrived]
        );
        assert!(kinds(feed.publish_location(position(3, 30.0001), later)).is_empty());
        // Another driver's positions complete nothing.
        assert!(kinds(feed.publish_location(position(4, 30.0), later)).is_empty());
    }

    #[tokio::test]
    async fn status_frames_reach_every_watcher_until_it_unsubscribes() {
        let feed = feed();
        let (a, b) = (watcher(), watcher());
        for outbox in [&a, &b] {
            assert!(feed.subscribe(outbox.clone(), |_| Frame::from_static(b"{}")));
            frame(outbox).await;
        }
        feed.set_driver_session(b.session_id);
        feed.broadcast(&Frame::from_static(b"{\"status\":1}"));
        assert_eq!(frame(&a).await["status"], 1);
        assert_eq!(frame(&b).await["status"], 1, "the driver gets status too");
        feed.unsubscribe(a.session_id);
        feed.broadcast(&Frame::from_static(b"{\"status\":2}"));
        assert!(quiet(&a));
        assert_eq!(frame(&b).await["status"], 2);
    }

    #[tokio::test]
    async fn the_snapshot_carries_the_position_and_closed_watchers_are_forgotten() {
        let feed = feed();
        feed.track(Some(trip(3)));
        feed.publish_location(position(3, 30.01), Instant::now());
        let late = watcher();
        assert!(feed.subscribe(late.clone(), |location| {
            Frame::from(format!("{}", location.map_or(0, |l| l.driver_id)))
        }));
        assert_eq!(frame(&late).await, serde_json::json!(3));

        let gone = watcher();
        gone.close(crate::engine::outbox::CloseReason::PeerClosed);
        assert!(!feed.subscribe(gone, |_| Frame::from_static(b"{}")));
        late.close(crate::engine::outbox::CloseReason::PeerClosed);
        feed.publish_location(position(3, 30.02), Instant::now());
        assert!(feed.lock().watchers.is_empty());
    }
}
