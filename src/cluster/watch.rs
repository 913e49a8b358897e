//! Orders watched across nodes (DESIGN.md "Cluster", subjects): each
//! live order's frames for its watchers travel on
//! `<bucket>.order.<id>.out` (prefixed like the command subjects, so that
//! clusters sharing a NATS server stay apart).
//!
//! - **Publishing.** The node that runs an order's feed publishes each of
//!   its frames once: the owner its status updates, and the carrying
//!   driver's node its positions (today that is the owner too, since a
//!   driver's positions reach only the node its socket is on). Publishing
//!   never blocks the feed: frames go through one bounded queue to one
//!   publisher task; when it is full they are dropped and counted.
//! - **Watching.** A node with at least one local session watching an
//!   order another node runs subscribes to its subject once, and ends that
//!   subscription when its last local watcher leaves. Each bus message is
//!   fanned out to the local watchers' outboxes: status updates as frames
//!   that must not be dropped, positions coalesced per order (drop-oldest),
//!   exactly as the local path does.
//!
//! Bounded: at most `cluster.max_watched_orders` subscriptions per node
//! (10,000 by default; one more subscribe is refused with RATE_LIMITED),
//! each held by the server within `cluster.watch_timeout_ms` (5 s) or
//! refused with ENGINE_UNAVAILABLE; each
//! subscription's own buffer is async-nats' (bounded; a slow consumer
//! loses messages there); at most [`MAX_HELD`] frames (one position, the
//! newest) are held for a watcher until its snapshot is queued, a window
//! of one store read.

use actors::domain::model::{OrderId, OrderStatus};
use actors::engine::order::bus::{BusFrame, OrderBus, WatchFuture, WatchRefused};
use actors::engine::outbox::{Outbox, SessionId};
use actors::metrics as m;
use actors::wire::Frame;
use futures::StreamExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Frames held for a watcher between its subscription and its snapshot
/// (a few milliseconds: one store read). Past it the oldest go.
const MAX_HELD: usize = 64;
/// Frames waiting for the publisher task; past it, frames are dropped.
const PUBLISH_QUEUE: usize = 16_384;
/// Room in the publish queue that positions may not take, so that a burst
/// of positions never crowds out a status update (which watchers must not
/// miss; a position is replaced by the next one anyway).
const KEPT_FOR_UPDATES: usize = PUBLISH_QUEUE / 4;

/// Whether a frame of `kind` may enter the publish queue with `free` slots left.
fn admits(kind: BusFrame, free: usize) -> bool {
    match kind {
        BusFrame::Update => free > 0,
        BusFrame::Location => free > KEPT_FOR_UPDATES,
    }
}
/// Header: what the frame is (`update` or `location`).
const KIND: &str = "Dispatch-Kind";
/// Header: the publisher's wall clock, in Unix milliseconds, when the
/// feed handed the frame over (for the cross-node fan-out latency).
const PUBLISHED_MS: &str = "Dispatch-Published-Ms";

/// The NATS side of [`OrderBus`], cheap to clone.
#[derive(Clone)]
pub struct NatsOrderBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: async_nats::Client,
    bucket: String,
    outgoing: mpsc::Sender<(OrderId, BusFrame, Frame, i64)>,
    watched: Mutex<HashMap<OrderId, Watched>>,
    /// At most this many orders subscribed to at once.
    max_watched: usize,
    /// How long a subscription may take to be held by the server.
    watch_timeout: Duration,
    /// Makes one subscription at a time, so two sessions watching the
    /// same order at once end with one subscription.
    subscribing: tokio::sync::Mutex<()>,
}

/// One order of another node, as this node follows it.
struct Watched {
    task: JoinHandle<()>,
    sessions: HashMap<SessionId, Watcher>,
}

enum Watcher {
    /// Subscribed, its snapshot not queued yet: frames wait here.
    Waiting {
        outbox: Arc<Outbox>,
        held: VecDeque<(BusFrame, Frame)>,
    },
    Live(Arc<Outbox>),
}

impl Watcher {
    fn outbox(&self) -> &Arc<Outbox> {
        match self {
            Watcher::Waiting { outbox, .. } | Watcher::Live(outbox) => outbox,
        }
    }

    /// Queues (or holds) one frame; false once the session is closed.
    fn deliver(&mut self, order_id: OrderId, kind: BusFrame, frame: &Frame) -> bool {
        match self {
            Watcher::Waiting { outbox, held } => {
                // Positions coalesce as in an outbox: only the newest waits.
                if kind == BusFrame::Location {
                    held.retain(|(held_kind, _)| *held_kind != BusFrame::Location);
                }
                if held.len() >= MAX_HELD {
                    held.pop_front();
                    metrics::counter!(m::CLUSTER_ORDER_BUS_DROPPED_TOTAL, "kind" => kind.as_str())
                        .increment(1);
                }
                held.push_back((kind, frame.clone()));
                !outbox.is_closed()
            }
            Watcher::Live(outbox) => queue(outbox, order_id, kind, frame.clone()),
        }
    }
}

fn queue(outbox: &Outbox, order_id: OrderId, kind: BusFrame, frame: Frame) -> bool {
    match kind {
        BusFrame::Update => outbox.push(frame),
        BusFrame::Location => {
            outbox.push_location(order_id, frame, Instant::now());
            !outbox.is_closed()
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn subject(bucket: &str, order_id: OrderId) -> String {
    format!("{bucket}.order.{order_id}.out")
}

impl NatsOrderBus {
    /// The bus on `client`, with its publisher task: following at most
    /// `max_watched` orders at once, each subscription held by the server
    /// within `watch_timeout` or refused.
    pub fn start(
        client: async_nats::Client,
        bucket: &str,
        max_watched: usize,
        watch_timeout: Duration,
    ) -> NatsOrderBus {
        let (outgoing, queued) = mpsc::channel(PUBLISH_QUEUE);
        let bus = NatsOrderBus {
            shared: Arc::new(Shared {
                client,
                bucket: bucket.to_string(),
                outgoing,
                watched: Mutex::default(),
                max_watched,
                watch_timeout,
                subscribing: tokio::sync::Mutex::new(()),
            }),
        };
        tokio::spawn(bus.clone().publish_queued(queued));
        bus
    }

    async fn publish_queued(self, mut queued: mpsc::Receiver<(OrderId, BusFrame, Frame, i64)>) {
        while let Some((order_id, kind, frame, published_ms)) = queued.recv().await {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(KIND, kind.as_str());
            headers.insert(PUBLISHED_MS, published_ms.to_string().as_str());
            let sent = self
                .shared
                .client
                .publish_with_headers(subject(&self.shared.bucket, order_id), headers, frame)
                .await;
            match sent {
                Ok(()) => metrics::counter!(m::CLUSTER_ORDER_BUS_MESSAGES_TOTAL, "direction" => "out", "kind" => kind.as_str()).increment(1),
                Err(error) => {
                    metrics::counter!(m::CLUSTER_ORDER_BUS_DROPPED_TOTAL, "kind" => kind.as_str())
                        .increment(1);
                    tracing::debug!(order_id, %error, "Order frame not published");
                }
            }
        }
    }

    /// Fans each message of one order's subscription out to its local
    /// watchers, until the last of them leaves (the task is aborted) or
    /// every one of them is found closed.
    async fn fan_out(self, order_id: OrderId, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            let header = |name: &str| {
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let kind = match header(KIND).as_deref() {
                Some("location") => BusFrame::Location,
                _ => BusFrame::Update,
            };
            metrics::counter!(m::CLUSTER_ORDER_BUS_MESSAGES_TOTAL, "direction" => "in", "kind" => kind.as_str()).increment(1);
            let everyone_left = {
                let mut watched = lock(&self.shared.watched);
                let Some(order) = watched.get_mut(&order_id) else {
                    return;
                };
                order
                    .sessions
                    .retain(|_, watcher| watcher.deliver(order_id, kind, &message.payload));
                // A delivered or cancelled order says nothing more: its
                // watchers keep their last frame, the subscription ends.
                let left = order.sessions.is_empty()
                    || (kind == BusFrame::Update && is_terminal_update(&message.payload));
                if left {
                    watched.remove(&order_id);
                }
                gauges(&watched);
                left
            };
            if let Some(published_ms) = header(PUBLISHED_MS).and_then(|ms| ms.parse::<i64>().ok()) {
                let waited_ms = (chrono::Utc::now().timestamp_millis() - published_ms).max(0);
                metrics::histogram!(m::CLUSTER_FANOUT_LATENCY_SECONDS, "kind" => kind.as_str())
                    .record(waited_ms as f64 / 1000.0);
            }
            if everyone_left {
                metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "unsubscribe")
                    .increment(1);
                // Dropping the subscriber ends the subscription on the server.
                return;
            }
        }
    }
}

fn gauges(watched: &HashMap<OrderId, Watched>) {
    metrics::gauge!(m::CLUSTER_WATCHED_ORDERS).set(watched.len() as f64);
    let watchers: usize = watched.values().map(|order| order.sessions.len()).sum();
    metrics::gauge!(m::CLUSTER_REMOTE_WATCHERS).set(watchers as f64);
}

impl OrderBus for NatsOrderBus {
    fn publish(&self, order_id: OrderId, kind: BusFrame, frame: &Frame) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let outgoing = &self.shared.outgoing;
        if !admits(kind, outgoing.capacity())
            || outgoing
                .try_send((order_id, kind, frame.clone(), now_ms))
                .is_err()
        {
            metrics::counter!(m::CLUSTER_ORDER_BUS_DROPPED_TOTAL, "kind" => kind.as_str())
                .increment(1);
        }
    }

    fn watch(&self, order_id: OrderId, outbox: Arc<Outbox>) -> WatchFuture {
        let bus = self.clone();
        Box::pin(async move {
            let waiting = || Watcher::Waiting {
                outbox: outbox.clone(),
                held: VecDeque::new(),
            };
            let _one_at_a_time = bus.shared.subscribing.lock().await;
            {
                let mut watched = lock(&bus.shared.watched);
                if let Some(order) = watched.get_mut(&order_id) {
                    order.sessions.insert(outbox.session_id, waiting());
                    gauges(&watched);
                    return Ok(());
                }
                if watched.len() >= bus.shared.max_watched {
                    metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "refused_full")
                        .increment(1);
                    return Err(WatchRefused::Full(bus.shared.max_watched));
                }
            }
            let client = &bus.shared.client;
            // The flush makes the server hold the subscription before the
            // caller reads the snapshot: no frame published after that
            // read can pass this node by.
            let subscribed = tokio::time::timeout(bus.shared.watch_timeout, async {
                let subscriber = client
                    .subscribe(subject(&bus.shared.bucket, order_id))
                    .await
                    .map_err(|e| e.to_string())?;
                client.flush().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(subscriber)
            })
            .await;
            let subscriber = match subscribed {
                Ok(Ok(subscriber)) => subscriber,
                Ok(Err(error)) => return Err(failed(error)),
                Err(_) => return Err(failed("no answer from NATS in time".into())),
            };
            metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "subscribe")
                .increment(1);
            let mut watched = lock(&bus.shared.watched);
            let task = tokio::spawn(bus.clone().fan_out(order_id, subscriber));
            let mut sessions = HashMap::new();
            sessions.insert(outbox.session_id, waiting());
            watched.insert(order_id, Watched { task, sessions });
            gauges(&watched);
            Ok(())
        })
    }

    fn ready(&self, order_id: OrderId, session_id: SessionId, snapshot: Frame, version: i64) {
        let mut watched = lock(&self.shared.watched);
        let Some(watcher) = watched
            .get_mut(&order_id)
            .and_then(|order| order.sessions.get_mut(&session_id))
        else {
            return;
        };
        let outbox = watcher.outbox().clone();
        let mut open = outbox.push(snapshot);
        if let Watcher::Waiting { held, .. } = watcher {
            for (kind, frame) in held.drain(..) {
                if kind == BusFrame::Update && shown_by_snapshot(&frame, version) {
                    continue;
                }
                open = open && queue(&outbox, order_id, kind, frame);
            }
        }
        *watcher = Watcher::Live(outbox);
        drop(watched);
        if !open {
            self.unwatch(order_id, session_id);
        }
    }

    fn unwatch(&self, order_id: OrderId, session_id: SessionId) {
        let mut watched = lock(&self.shared.watched);
        let Some(order) = watched.get_mut(&order_id) else {
            return;
        };
        order.sessions.remove(&session_id);
        if order.sessions.is_empty()
            && let Some(order) = watched.remove(&order_id)
        {
            // Aborting the task drops its subscriber: NATS stops sending.
            order.task.abort();
            metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "unsubscribe")
                .increment(1);
        }
        gauges(&watched);
    }

    fn take_watchers(&self, order_id: OrderId) -> Vec<Arc<Outbox>> {
        let mut watched = lock(&self.shared.watched);
        let Some(order) = watched.remove(&order_id) else {
            return Vec::new();
        };
        order.task.abort();
        metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "unsubscribe").increment(1);
        gauges(&watched);
        order
            .sessions
            .into_values()
            .map(|watcher| watcher.outbox().clone())
            .filter(|outbox| !outbox.is_closed())
            .collect()
    }
}

/// Whether an `order_update` frame says the order is delivered or cancelled.
fn is_terminal_update(frame: &Frame) -> bool {
    #[derive(serde::Deserialize)]
    struct Status {
        #[serde(rename = "type")]
        kind: Option<String>,
        status: Option<OrderStatus>,
    }
    serde_json::from_slice::<Status>(frame).is_ok_and(|update| {
        update.kind.as_deref() == Some("order_update")
            && update.status.is_some_and(OrderStatus::is_terminal)
    })
}

/// Whether a held status update is of a version the snapshot already
/// shows (it committed before the snapshot's read; its frame came after
/// the subscription). Only frames held while a watcher waited are read.
fn shown_by_snapshot(frame: &Frame, snapshot_version: i64) -> bool {
    #[derive(serde::Deserialize)]
    struct Versioned {
        version: Option<i64>,
    }
    serde_json::from_slice::<Versioned>(frame)
        .ok()
        .and_then(|update| update.version)
        .is_some_and(|version| version <= snapshot_version)
}

fn failed(error: String) -> WatchRefused {
    metrics::counter!(m::CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL, "op" => "failed").increment(1);
    WatchRefused::Unavailable(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_leave_room_in_the_publish_queue_for_status_updates() {
        assert!(admits(BusFrame::Location, PUBLISH_QUEUE));
        assert!(admits(BusFrame::Location, KEPT_FOR_UPDATES + 1));
        assert!(!admits(BusFrame::Location, KEPT_FOR_UPDATES));
        assert!(admits(BusFrame::Update, KEPT_FOR_UPDATES));
        assert!(admits(BusFrame::Update, 1));
        assert!(!admits(BusFrame::Update, 0));
    }
    use actors::engine::outbox::next_session_id;

    fn update(version: i64) -> Frame {
        Frame::from(format!(
            "{{\"type\":\"order_update\",\"orderId\":7,\"status\":\"CONFIRMED\",\"version\":{version}}}"
        ))
    }

    #[test]
    fn a_held_update_the_snapshot_shows_is_recognised_by_its_version() {
        assert!(shown_by_snapshot(&update(2), 2));
        assert!(shown_by_snapshot(&update(1), 2));
        assert!(!shown_by_snapshot(&update(3), 2));
        // Frames without a version (arrivals) are never taken for shown.
        assert!(!shown_by_snapshot(
            &Frame::from_static(b"{\"type\":\"driver_arrived\",\"orderId\":7}"),
            2
        ));
    }

    #[test]
    fn a_waiting_watcher_holds_at_most_max_held_frames_the_newest_kept() {
        let outbox = Arc::new(Outbox::new(next_session_id(), 8));
        let mut watcher = Watcher::Waiting {
            outbox,
            held: VecDeque::new(),
        };
        for version in 0..(MAX_HELD as i64 + 10) {
            assert!(watcher.deliver(7, BusFrame::Update, &update(version)));
        }
        let Watcher::Waiting { held, .. } = &watcher else {
            panic!("still waiting");
        };
        assert_eq!(held.len(), MAX_HELD);
        assert_eq!(held.front().map(|(_, f)| f.clone()), Some(update(10)));
    }

    #[test]
    fn only_a_delivered_or_cancelled_update_ends_the_subscription() {
        let with = |status: &str| {
            Frame::from(format!(
                "{{\"type\":\"order_update\",\"orderId\":7,\"status\":\"{status}\",\"version\":5}}"
            ))
        };
        assert!(is_terminal_update(&with("DELIVERED")));
        assert!(is_terminal_update(&with("CANCELLED")));
        assert!(!is_terminal_update(&with("PICKED_UP")));
        assert!(!is_terminal_update(&Frame::from_static(
            b"{\"type\":\"driver_arrived\"}"
        )));
    }

    #[test]
    fn a_waiting_watcher_holds_only_the_newest_position() {
        let outbox = Arc::new(Outbox::new(next_session_id(), 8));
        let mut watcher = Watcher::Waiting {
            outbox,
            held: VecDeque::new(),
        };
        let position =
            |lat: &str| Frame::from(format!("{{\"type\":\"driver_location\",\"lat\":{lat}}}"));
        watcher.deliver(7, BusFrame::Location, &position("1"));
        watcher.deliver(7, BusFrame::Update, &update(3));
        watcher.deliver(7, BusFrame::Location, &position("2"));
        let Watcher::Waiting { held, .. } = &watcher else {
            panic!("still waiting");
        };
        let frames: Vec<Frame> = held.iter().map(|(_, f)| f.clone()).collect();
        assert_eq!(frames, vec![update(3), position("2")]);
    }
}
