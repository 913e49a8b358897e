//! The GeoIndex actor: the single writer of the R-tree of online drivers,
//! and the keeper of presence (a driver whose last position is older than
//! the presence TTL leaves the index until its next position).
//!
//! Positions reach it through each driver's [`PendingUpsert`], coalesced per
//! driver, so the one mailbox every position passes through stays bounded.

use crate::domain::geo_index::{DriverEntry, GeoIndex, Nearby};
use crate::domain::model::{DriverId, LatLon};
use crate::engine::driver::DriverMessage;
use crate::metrics as m;
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One order's question in a dispatch round.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub at: LatLon,
    pub max_km: f64,
    pub exclude: HashSet<DriverId>,
}

/// A driver's next update for the index: its newest entry, which replaces
/// one the geo actor has not taken yet. The driver casts only when nothing
/// was pending, so however far the geo actor falls behind, its mailbox
/// holds at most one update per driver: bounded by the fleet, not by time.
#[derive(Default)]
pub struct PendingUpsert {
    /// The entry, and how many new positions it stands for (zero: only
    /// availability changed).
    slot: Mutex<Option<(DriverEntry, u32)>>,
}

impl PendingUpsert {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(DriverEntry, u32)>> {
        // A plain slot: a panic elsewhere cannot leave it half written.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `entry` (`fresh` when it is a new position, which renews
    /// presence); true when the geo actor must be told, because nothing
    /// was pending.
    pub fn put(&self, entry: DriverEntry, fresh: bool) -> bool {
        let mut slot = self.lock();
        let replaced = slot.take();
        let positions = replaced
            .map_or(0, |(_, n)| n)
            .saturating_add(u32::from(fresh));
        *slot = Some((entry, positions));
        if replaced.is_some() {
            metrics::counter!(m::GEO_UPDATES_COALESCED_TOTAL).increment(1);
        }
        replaced.is_none()
    }

    /// The pending update and the new positions it stands for, if any; the
    /// next `put` tells the geo actor again.
    pub fn take(&self) -> Option<(DriverEntry, u32)> {
        self.lock().take()
    }
}

pub enum GeoMessage {
    /// A driver's place and availability changed: take its pending update.
    Upsert(Arc<PendingUpsert>),
    Remove(DriverId),
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
        k: usize,
        max_active_orders: u32,
        reply: RpcReplyPort<Vec<Vec<Nearby>>>,
    },
    /// Drop drivers whose last position is older than the TTL.
    Sweep,
    /// Every indexed driver with the age of its position, and the count of
    /// positions received so far (for the operator's view).
    Everyone(RpcReplyPort<(Vec<(DriverEntry, Duration)>, u64)>),
}

pub struct GeoActor;

pub struct GeoArguments {
    pub presence_ttl: Duration,
    /// Driver actors to tell when they go stale.
    pub drivers: Arc<DashMap<DriverId, ActorRef<DriverMessage>>>,
}

pub struct GeoState {
    /// Every online driver (for `nearby` and the operator's map).
    index: GeoIndex,
    /// Only the drivers that may be offered an order. Dispatch queries walk
    /// this one: when most drivers are busy, searching the full tree for the
    /// few available ones cost most of a core per round (measured with perf
    /// under the simulator).
    available_index: GeoIndex,
    last_seen: HashMap<DriverId, Instant>,
    presence_ttl: Duration,
    drivers: Arc<DashMap<DriverId, ActorRef<DriverMessage>>>,
    /// Entries with `available` set, kept as they change (for the gauge).
    available: usize,
    /// Positions received since start.
    positions: u64,
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
            drivers: args.drivers,
            available: 0,
            positions: 0,
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
                let Some((entry, positions)) = pending.take() else {
                    return Ok(());
                };
                if positions > 0 {
                    // Counted as received, coalesced or not.
                    state.positions += u64::from(positions);
                    state.last_seen.insert(entry.id, Instant::now());
                } else if !state.last_seen.contains_key(&entry.id) {
                    // An availability change of a driver that is not online
                    // must not bring it back into the index.
                    return Ok(());
                }
                state.upsert(entry);
            }
            GeoMessage::Remove(id) => state.remove(id),
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
                k,
                max_active_orders,
                reply,
            } => {
                let answers = queries
                    .iter()
                    .map(|q| {
                        state
                            .index
                            .nearest_available(q.at, k, q.max_km, max_active_orders, |id| {
                                q.exclude.contains(&id)
                            })
                    })
                    .collect();
                let _ = reply.send(answers);
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
            if let Some(driver) = self.drivers.get(&id) {
                let _ = driver.cast(DriverMessage::WentStale);
            }
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

    #[test]
    fn a_pending_update_is_replaced_and_the_actor_told_once() {
        let pending = PendingUpsert::default();
        assert!(
            pending.put(entry(30.0, true), true),
            "first: tell the actor"
        );
        assert!(!pending.put(entry(30.1, true), false), "pending: coalesce");
        // The newest entry wins; the earlier new position still counts
        // (and renews presence).
        assert_eq!(pending.take(), Some((entry(30.1, true), 1)));
        assert_eq!(pending.take(), None);
        assert!(
            pending.put(entry(30.2, false), false),
            "taken: tell it again"
        );
        assert_eq!(pending.take(), Some((entry(30.2, false), 0)));
        assert!(pending.put(entry(30.3, true), true));
        assert!(!pending.put(entry(30.4, true), true));
        assert_eq!(pending.take(), Some((entry(30.4, true), 2)));
    }

    #[tokio::test]
    async fn the_geo_actor_indexes_the_newest_of_coalesced_positions() {
        let (geo, handle) = Actor::spawn(
            None,
            GeoActor,
            GeoArguments {
                presence_ttl: Duration::from_secs(60),
                drivers: Arc::new(DashMap::new()),
            },
        )
        .await
        .unwrap();
        let pending = Arc::new(PendingUpsert::default());
        assert!(pending.put(entry(30.0, true), true));
        geo.cast(GeoMessage::Upsert(pending.clone())).unwrap();
        // Positions before the actor took the first: no more messages.
        for lat in [30.001, 30.002, 30.003] {
            if pending.put(entry(lat, true), true) {
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
