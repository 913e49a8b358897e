//! The GeoIndex actor: the single writer of the R-tree of online drivers,
//! and the keeper of presence (a driver whose last position is older than
//! the presence TTL leaves the index until its next position).

use crate::driver::DriverMessage;
use crate::geo_index::{DriverEntry, GeoIndex, Nearby};
use crate::metrics as m;
use crate::model::{DriverId, LatLon};
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One order's question in a dispatch round.
#[derive(Debug, Clone)]
pub struct CandidateQuery {
    pub at: LatLon,
    pub max_km: f64,
    pub exclude: HashSet<DriverId>,
}

pub enum GeoMessage {
    /// A driver's place and availability; `fresh` when it is a new position
    /// (which renews presence), not just an availability change.
    Upsert {
        entry: DriverEntry,
        fresh: bool,
    },
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
            GeoMessage::Upsert { entry, fresh } => {
                if fresh {
                    state.positions += 1;
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
