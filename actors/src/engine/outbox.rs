//! A session's bounded outbound queue (DESIGN.md "The two hot paths").
//!
//! Producers (order actors and their feeds, driver actors through those
//! feeds, the session itself) push encoded frames; the
//! socket writer takes them in order. Location frames are coalesced per
//! order: while one waits unsent, a newer one replaces it in place, so a
//! slow reader gets the newest position and never a backlog of old ones.
//! Every other frame is kept; when more than `capacity` wait, the reader is
//! too slow and the session is closed (1013) rather than buffering without
//! bound.

use crate::domain::model::OrderId;
use crate::metrics as m;
use crate::wire::Frame;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::Notify;

pub type SessionId = u64;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique session id.
pub fn next_session_id() -> SessionId {
    NEXT_SESSION.fetch_add(1, Ordering::Relaxed)
}

/// Why a session's socket is being closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The reader fell `capacity` frames behind (close code 1013).
    SlowReader,
    /// The same driver connected again; this older socket goes (4002, in
    /// the range the WebSocket spec leaves to applications).
    Replaced,
    /// Server shutdown (1001).
    Shutdown,
    /// Too many bad messages in a row (1008).
    Abuse,
    /// A frame over the size limit (1009).
    TooBig,
    /// No pong or message from the peer within the keepalive timeout (1001).
    Dead,
    /// The client closed or vanished; nothing more to send (1000).
    PeerClosed,
    /// An actor behind this socket failed and was started again: the app
    /// reconnects to the new one (1012, "service restart").
    Restarting,
    /// The token the socket was opened with expired (4001, as a bad
    /// token at the opening): the app signs in again and reconnects.
    TokenExpired,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::SlowReader => 1013,
            CloseReason::Replaced => 4002,
            CloseReason::Shutdown => 1001,
            CloseReason::Abuse => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Dead => 1001,
            CloseReason::PeerClosed => 1000,
            CloseReason::Restarting => 1012,
            CloseReason::TokenExpired => 4001,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            CloseReason::SlowReader => "reader too slow",
            CloseReason::Replaced => "replaced by a newer connection",
            CloseReason::Shutdown => "server shutting down",
            CloseReason::Abuse => "too many bad messages",
            CloseReason::TooBig => "frame too large",
            CloseReason::Dead => "keepalive timeout",
            CloseReason::PeerClosed => "bye",
            CloseReason::Restarting => "restarted; reconnect",
            CloseReason::TokenExpired => "token expired",
        }
    }
}

/// What the writer gets: a frame, and when its cause entered the server (for
/// the fan-out latency histogram) if it is a location.
pub struct Outgoing {
    pub frame: Frame,
    pub received_at: Option<Instant>,
}

enum Slot {
    Frame(Frame),
    /// The newest location of this order, kept in `locations`.
    Location(OrderId),
}

#[derive(Default)]
struct Queue {
    slots: VecDeque<Slot>,
    locations: HashMap<OrderId, (Frame, Instant)>,
    closed: Option<CloseReason>,
}

pub struct Outbox {
    pub session_id: SessionId,
    queue: Mutex<Queue>,
    ready: Notify,
    capacity: usize,
}

impl Outbox {
    pub fn new(session_id: SessionId, capacity: usize) -> Outbox {
        Outbox {
            session_id,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue half
        // updated in a way that matters more than losing the session.
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a frame that must not be dropped. Returns false if the session
    /// is closed (or closes now because the reader is too slow).
    pub fn push(&self, frame: Frame) -> bool {
        let mut queue = self.lock();
        if queue.closed.is_some() {
            metrics::counter!(m::WS_DROPPED_TOTAL, "reason" => "closed").increment(1);
            return false;
        }
        if queue.slots.len() >= self.capacity {
            queue.closed = Some(CloseReason::SlowReader);
            drop(queue);
            metrics::counter!(m::WS_SLOW_READER_CLOSES_TOTAL).increment(1);
            self.ready.notify_one();
            return false;
        }
        queue.slots.push_back(Slot::Frame(frame));
        drop(queue);
        self.ready.notify_one();
        true
    }

    /// Queues the newest location of `order_id`, replacing an unsent older
    /// one. Never closes the session: coalescing bounds it by the number of
    /// orders watched.
    pub fn push_location(&self, order_id: OrderId, frame: Frame, received_at: Instant) {
        let mut queue = self.lock();
        if queue.closed.is_some() {
            metrics::counter!(m::WS_DROPPED_TOTAL, "reason" => "closed").increment(1);
            return;
        }
        if queue
            .locations
            .insert(order_id, (frame, received_at))
            .is_some()
        {
            metrics::counter!(m::WS_COALESCED_TOTAL).increment(1);
            return;
        }
        queue.slots.push_back(Slot::Location(order_id));
        drop(queue);
        self.ready.notify_one();
    }

    /// Closes the session; the writer sends a close frame and stops.
    pub fn close(&self, reason: CloseReason) {
        let mut queue = self.lock();
        if queue.closed.is_none() {
            queue.closed = Some(reason);
        }
        drop(queue);
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Takes the next frame without waiting, in order; `Err` once closed
    /// (and on every call after). Frames queued before a close are not
    /// sent: a closing session is not worth the wait.
    pub fn try_next(&self) -> Option<Result<Outgoing, CloseReason>> {
        let mut queue = self.lock();
        if let Some(reason) = queue.closed {
            let dropped = queue.slots.len() as u64;
            if dropped > 0 {
                queue.slots.clear();
                queue.locations.clear();
                metrics::counter!(m::WS_DROPPED_TOTAL, "reason" => "closed").increment(dropped);
            }
            return Some(Err(reason));
        }
        match queue.slots.pop_front()? {
            Slot::Frame(frame) => Some(Ok(Outgoing {
                frame,
                received_at: None,
            })),
            Slot::Location(order_id) => {
                let (frame, received_at) = queue.locations.remove(&order_id)?;
                Some(Ok(Outgoing {
                    frame,
                    received_at: Some(received_at),
                }))
            }
        }
    }

    /// Waits for the next frame to write, or the reason the session closed.
    pub async fn next(&self) -> Result<Outgoing, CloseReason> {
        loop {
            let notified = self.ready.notified();
            if let Some(next) = self.try_next() {
                return next;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(out: Outgoing) -> String {
        String::from_utf8(out.frame.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn locations_coalesce_per_order_and_keep_their_place() {
        let outbox = Outbox::new(1, 8);
        let now = Instant::now();
        outbox.push(Bytes::from_static(b"status-1"));
        outbox.push_location(7, Bytes::from_static(b"loc-7-a"), now);
        outbox.push_location(8, Bytes::from_static(b"loc-8-a"), now);
        outbox.push_location(7, Bytes::from_static(b"loc-7-b"), now);
        outbox.push(Bytes::from_static(b"status-2"));
        let got: Vec<String> = [(); 4]
            .iter()
            .map(|_| text(outbox.try_next().unwrap().unwrap()))
            .collect();
        assert_eq!(got, ["status-1", "loc-7-b", "loc-8-a", "status-2"]);
        assert!(outbox.try_next().is_none());
    }

    #[tokio::test]
    async fn status_frames_are_never_dropped_until_the_reader_is_too_slow() {
        let outbox = Outbox::new(1, 3);
        for i in 0..3 {
            assert!(outbox.push(Bytes::from(format!("s{i}"))));
        }
        assert!(!outbox.push(Bytes::from_static(b"one too many")));
        assert_eq!(outbox.next().await.err(), Some(CloseReason::SlowReader));
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_for_a_frame_and_for_a_close() {
        let outbox = std::sync::Arc::new(Outbox::new(1, 4));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { text(outbox.next().await.unwrap()) })
        };
        tokio::task::yield_now().await;
        outbox.push(Bytes::from_static(b"hello"));
        assert_eq!(writer.await.unwrap(), "hello");

        let waiting = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.next().await.err() })
        };
        tokio::task::yield_now().await;
        outbox.close(CloseReason::Shutdown);
        assert_eq!(waiting.await.unwrap(), Some(CloseReason::Shutdown));
    }
}
