//! The GeoIndex actor: the single writer of the R-trees of online drivers
//! (every one, and only the available ones), and the keeper of presence (a
//! driver whose last position is older than the presence TTL leaves the
//! index until its next position).
//!
//! Positions reach it through each driver's `PendingUpsert`, coalesced per
//! driver, so the one mailbox every position passes through stays bounded.
//! Everything else reaches it through [`Geo`], the handle that owns its
//! messages. Its index is soft state: after a restart, the driver actors
//! give it their entries again (`Change::Rejoin`).

use crate::domain::geo_index::{DriverEntry, GeoIndex, Nearby};
use crate::domain::model::{DriverId, LatLon};
use crate::engine::slot::Slot;
use crate::metrics as m;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a caller waits for the geo actor.
const GEO_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Who hears that a driver went stale (the driver actors, through their
/// directory), so the geo actor needs to know nothing of them.
pub trait PresenceListener: Send + Sync + 'static {
    fn went_stale(&self, driver_id: DriverId);
}

/// One restaurant's question in a dispatch round (the board's query).
pub use crate::domain::dispatch::Query as CandidateQuery;

/// What a driver's pending update stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// A new position: it renews presence and counts as received.
    Position,
    /// Only availability or load changed: a driver that is offline stays so.
    Availability,
    /// The geo actor restarted and lost its index: the driver gives its
    /// entry again, renewing presence without counting a position.
    Rejoin,
}

/// A driver's next update for the index: its newest entry, which replaces
/// one the geo actor has not taken yet. The driver casts only when nothing
/// was pending, so however far the geo actor falls behind, its mailbox
/// holds at most one update per driver: bounded by the fleet, not by time.
#[derive(Default)]
pub(crate) struct PendingUpsert {
    slot: Mutex<Option<Pending>>,
}

/// The entry, how many new positions it stands for, and whether it renews
/// the driver's presence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pending {
    pub entry: DriverEntry,
    pub positions: u32,
    pub renews: bool,
}

impl PendingUpsert {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        // A plain slot: a panic elsewhere cannot leave it half written.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `entry`; true when the geo actor must be told, because
    /// nothing was pending.
    pub(crate) fn put(&self, entry: DriverEntry, change: Change) -> bool {
        let mut slot = self.lock();
        let replaced = slot.take();
        let (positions, renews) = replaced.map_or((0, false), |p| (p.positions, p.renews));
        *slot = Some(Pending {
            entry,
            positions: positions.saturating_add(u32::from(change == Change::Position)),
            renews: renews || change != Change::Availability,
        });
        if replaced.is_some() {
            metrics::counter!(m::GEO_UPDATES_COALESCED_TOTAL).increment(1);
        }
        replaced.is_none()
    }

    /// The pending update, if any; the next `put` tells the geo actor again.
    pub(crate) fn take(&self) -> Option<Pending> {
        self.lock().take()
    }
}

pub(crate) enum GeoMessage {
    /// A driver's place and availability changed: take its pending update.
    Upsert(Arc<PendingUpsert>),
    /// Every online driver near a point (the admin's `nearby`).
    Within {
        at: LatLon,
        radius_km: f64,
        limit: usize,
        reply: RpcReplyPort<Vec<Nearby>>,
    },
    /// A dispatch round's questions in one round trip: up to `k` available
    /// drivers per query.
    Candidates {
        queries: Vec<CandidateQuery>,
        max_active_orders: u32,
        reply: RpcReplyPort<Vec<Vec<Nearby>>>,
    },
    /// Drop drivers whose last position is older than the TTL.
    Sweep,
    /// Every indexed driver with the age of its position, and the count of
    /// positions received so far (for the operator's view).
    Everyone(RpcReplyPort<(Vec<(DriverEntry, Duration)>, u64)>),
    /// Cluster mode: a driver whose socket is on another node, as that
    /// node published it for this node's regions. `renews` as for a local
    /// update: a position renews presence, an availability change does not
    /// bring an offline driver back.
    /// Coalesced per driver like a local update, so that a flood of bus
    /// messages holds at most one message per remote driver here.
    Remote(Arc<PendingUpsert>),
    /// Cluster mode: that node says the driver went offline here.
    RemoteGone(DriverId),
}

pub(crate) struct GeoActor;

pub(crate) struct GeoArguments {
    pub presence_ttl: Duration,
    /// Told when a driver goes stale.
    pub presence: Arc<dyn PresenceListener>,
}

pub(crate) struct GeoState {
    /// Every online driver (for `nearby` and the operator's map).
    index: GeoIndex,
    /// Only the drivers that may be offered an order. Dispatch queries walk
    /// this one: when most drivers are busy, searching the full tree for the
    /// few available ones cost most of a core per round (measured with perf
    /// under the simulator).
    available_index: GeoIndex,
    last_seen: HashMap<DriverId, Instant>,
    presence_ttl: Duration,
    presence: Arc<dyn PresenceListener>,
    /// Entries with `available` set, kept as they change (for the gauge).
    available: usize,
    /// Positions received since start.
    positions: u64,
    /// Cluster mode: the indexed drivers whose entry came from another
    /// node (they expire as local ones do; a local update takes them over).
    remote: std::collections::HashSet<DriverId>,
}

impl Actor for GeoActor {
    type Msg = GeoMessage;
    type State = GeoState;
    type Arguments = GeoArguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: GeoArguments,
    ) -> Result<GeoState, ActorProcessingErr> {
        // Sweep a few times per TTL, so a driver leaves within ~1.25 TTL.
        let period =
            (args.presence_ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        myself.send_interval(period, || GeoMessage::Sweep);
        Ok(GeoState {
            index: GeoIndex::new(),
            available_index: GeoIndex::new(),
            last_seen: HashMap::new(),
            presence_ttl: args.presence_ttl,
            presence: args.presence,
            available: 0,
            positions: 0,
            remote: std::collections::HashSet::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: GeoMessage,
        state: &mut GeoState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GeoMessage::Upsert(pending) => {
                let Some(Pending {
                    entry,
                    positions,
                    renews,
                }) = pending.take()
                else {
                    return Ok(());
                };
                // Counted as received, coalesced or not.
                state.positions += u64::from(positions);
                state.remote.remove(&entry.id);
                if renews {
                    state.last_seen.insert(entry.id, Instant::now());
                } else if !state.last_seen.contains_key(&entry.id) {
                    // An availability change of a driver that is not online
                    // must not bring it back into the index.
                    return Ok(());
                }
                state.upsert(entry);
            }
            GeoMessage::Within {
                at,
                radius_km,
                limit,
                reply,
            } => {
                let _ = reply.send(state.index.within(at, radius_km, limit));
            }
            GeoMessage::Candidates {
                queries,
                max_active_orders,
                reply,
            } => {
                let answers = queries
                    .iter()
                    .map(|q| {
                        state.available_index.nearest_available(
                            q.at,
                            q.k,
                            q.max_km,
                            max_active_orders,
                            |id| q.exclude.contains(&id),
                        )
                    })
                    .collect();
                let _ = reply.send(answers);
            }
            GeoMessage::Remote(pending) => {
                let Some(Pending { entry, renews, .. }) = pending.take() else {
                    return Ok(());
                };
                if renews {
                    state.last_seen.insert(entry.id, Instant::now());
                } else if !state.last_seen.contains_key(&entry.id) {
                    return Ok(());
                }
                state.remote.insert(entry.id);
                state.upsert(entry);
            }
            GeoMessage::RemoteGone(id) => {
                // Only an entry that came from another node: a driver that
                // reconnected here is this node's own now.
                if state.remote.contains(&id) {
                    state.remove(id);
                    state.presence.went_stale(id);
                }
            }
            GeoMessage::Sweep => state.sweep(),
            GeoMessage::Everyone(reply) => {
                let everyone = state
                    .last_seen
                    .iter()
                    .filter_map(|(id, seen)| Some((state.index.get(*id)?, seen.elapsed())))
                    .collect();
                let _ = reply.send((everyone, state.positions));
            }
        }
        Ok(())
    }
}

impl GeoState {
    fn sweep(&mut self) {
        let ttl = self.presence_ttl;
        let stale: Vec<DriverId> = self
            .last_seen
            .iter()
            .filter(|(_, seen)| seen.elapsed() > ttl)
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.remove(id);
            metrics::counter!(m::DRIVERS_WENT_STALE_TOTAL).increment(1);
            self.presence.went_stale(id);
        }
        metrics::gauge!(m::DRIVERS_ONLINE).set(self.index.len() as f64);
        metrics::gauge!(m::DRIVERS_AVAILABLE).set(self.available as f64);
    }

    fn upsert(&mut self, entry: DriverEntry) {
        let was_available = self.index.get(entry.id).is_some_and(|e| e.available);
        self.available = self.available + usize::from(entry.available) - usize::from(was_available);
        self.index.upsert(entry);
        if entry.available {
            self.available_index.upsert(entry);
        } else if was_available {
            self.available_index.remove(entry.id);
        }
    }

    fn remove(&mut self, id: DriverId) {
        if self.index.get(id).is_some_and(|e| e.available) {
            self.available -= 1;
            self.available_index.remove(id);
        }
        self.index.remove(id);
        self.last_seen.remove(&id);
        self.remote.remove(&id);
    }
}

/// The handle on the geo index: the only way in from outside the engine.
#[derive(Clone)]
pub struct Geo {
    slot: Slot<GeoMessage>,
}

impl Geo {
    pub(crate) fn new(slot: Slot<GeoMessage>) -> Geo {
        Geo { slot }
    }

    /// Every online driver within `radius_km` of `at`, nearest first, at
    /// most `limit`; `None` while the geo actor is down or busy past the
    /// timeout.
    pub async fn within(&self, at: LatLon, radius_km: f64, limit: usize) -> Option<Vec<Nearby>> {
        self.slot
            .call(
                |reply| GeoMessage::Within {
                    at,
                    radius_km,
                    limit,
                    reply,
                },
                GEO_CALL_TIMEOUT,
            )
            .await
    }

    /// A dispatch round's questions in one round trip: up to `k` available
    /// drivers per query, from the tree of available drivers.
    pub(crate) async fn candidates(
        &self,
        queries: Vec<CandidateQuery>,
        max_active_orders: u32,
    ) -> Option<Vec<Vec<Nearby>>> {
        self.slot
            .call(
                |reply| GeoMessage::Candidates {
                    queries,
                    max_active_orders,
                    reply,
                },
                GEO_CALL_TIMEOUT,
            )
            .await
    }

    /// Every indexed driver with the age of its position, and the positions
    /// received so far.
    pub(crate) async fn everyone(&self) -> Option<(Vec<(DriverEntry, Duration)>, u64)> {
        self.slot.call(GeoMessage::Everyone, GEO_CALL_TIMEOUT).await
    }

    /// Cluster mode: a driver of another node, for this node's dispatch.
    pub(crate) fn remote(&self, pending: &Arc<PendingUpsert>) -> bool {
        self.slot.cast(GeoMessage::Remote(pending.clone()))
    }

    /// Cluster mode: a driver of another node went offline there.
    pub(crate) fn remote_gone(&self, id: DriverId) -> bool {
        self.slot.cast(GeoMessage::RemoteGone(id))
    }

    /// Tells the geo actor a driver's update is pending; false if it is down.
    pub(crate) fn upsert(&self, pending: &Arc<PendingUpsert>) -> bool {
        self.slot.cast(GeoMessage::Upsert(pending.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lat: f64, available: bool) -> DriverEntry {
        DriverEntry {
            id: 9,
            at: LatLon { lat, lon: -97.74 },
            available,
            active_orders: 0,
        }
    }

    fn pending(entry: DriverEntry, positions: u32, renews: bool) -> Option<Pending> {
        Some(Pending {
            entry,
            positions,
            renews,
        })
    }

    #[test]
    fn a_pending_update_is_replaced_and_the_actor_told_once() {
        let slot = PendingUpsert::default();
        assert!(
            slot.put(entry(30.0, true), Change::Position),
            "first: tell the actor"
        );
        assert!(
            !slot.put(entry(30.1, true), Change::Availability),
            "pending: coalesce"
        );
        // The newest entry wins; the earlier new position still counts
        // (and renews presence).
        assert_eq!(slot.take(), pending(entry(30.1, true), 1, true));
        assert_eq!(slot.take(), None);
        assert!(
            slot.put(entry(30.2, false), Change::Availability),
            "taken: tell it again"
        );
        assert_eq!(slot.take(), pending(entry(30.2, false), 0, false));
        assert!(slot.put(entry(30.3, true), Change::Position));
        assert!(!slot.put(entry(30.4, true), Change::Position));
        assert_eq!(slot.take(), pending(entry(30.4, true), 2, true));
        // After a restart of the geo actor: presence renewed, no position.
        assert!(slot.put(entry(30.5, true), Change::Rejoin));
        assert_eq!(slot.take(), pending(entry(30.5, true), 0, true));
    }

    struct NobodyListens;

    impl PresenceListener for NobodyListens {
        fn went_stale(&self, _driver_id: DriverId) {}
    }

    #[tokio::test]
    async fn the_geo_actor_indexes_the_newest_of_coalesced_positions() {
        let (geo, handle) = Actor::spawn(
            None,
            GeoActor,
            GeoArguments {
                presence_ttl: Duration::from_secs(60),
                presence: Arc::new(NobodyListens),
            },
        )
        .await
        .unwrap();
        let pending = Arc::new(PendingUpsert::default());
        assert!(pending.put(entry(30.0, true), Change::Position));
        geo.cast(GeoMessage::Upsert(pending.clone())).unwrap();
        // Positions before the actor took the first: no more messages.
        for lat in [30.001, 30.002, 30.003] {
            if pending.put(entry(lat, true), Change::Position) {
                geo.cast(GeoMessage::Upsert(pending.clone())).unwrap();
            }
        }
        // An update for a slot already taken is a no-op, not an error.
        geo.cast(GeoMessage::Upsert(pending.clone())).unwrap();
        let found = geo
            .call(
                |reply| GeoMessage::Within {
                    at: LatLon {
                        lat: 30.0,
                        lon: -97.74,
                    },
                    radius_km: 5.0,
                    limit: 10,
                    reply,
                },
                Some(Duration::from_secs(5)),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].entry.at.lat, 30.003);
        geo.stop(None);
        handle.await.unwrap();
    }
}
