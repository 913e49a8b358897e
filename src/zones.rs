//! Service zones: the admin's areas (`/api/zones`), the zone each
//! restaurant delivers inside, and the in-memory index the order check
//! reads (no store read per order). Writes go to the store first, then
//! the index is rebuilt from it.
//!
//! Single node: another node's index learns of a change at its next start.

use crate::events::store::{EventStore, NewOutboxEvent};
use actors::domain::model::LatLon;
use actors::domain::zone::{Zone, ZoneIndex, covers};
use actors::metrics as m;
use actors::store::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A zone as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZoneRecord {
    pub id: i64,
    pub name: String,
    /// The GeoJSON geometry.
    pub geometry: serde_json::Value,
    /// Restaurants that deliver only inside it.
    pub restaurant_ids: Vec<i64>,
    pub created_at: DateTime<Utc>,
}

/// The zones' port; `crate::store` implements it (`store/zones_sql.rs`).
#[async_trait]
pub trait ZoneStore: Send + Sync + 'static {
    async fn create_zone(
        &self,
        name: &str,
        geometry: &serde_json::Value,
    ) -> StoreResult<ZoneRecord>;
    async fn zones(&self) -> StoreResult<Vec<ZoneRecord>>;
    async fn delete_zone(&self, id: i64) -> StoreResult<bool>;
    /// Limits a restaurant to a zone, or (with `None`) lifts the limit.
    async fn set_restaurant_zone(
        &self,
        restaurant_id: i64,
        zone_id: Option<i64>,
    ) -> StoreResult<()>;
}

/// Why an address may not be delivered to.
#[derive(Debug, Clone, PartialEq)]
pub struct OutOfZone {
    pub zone_id: i64,
}

struct Snapshot {
    index: ZoneIndex,
    /// restaurant -> its zone.
    limits: HashMap<i64, i64>,
}

/// The handle: the store and the index. Cheap to clone.
#[derive(Clone)]
pub struct Zones {
    store: Arc<dyn ZoneStore>,
    current: Arc<RwLock<Arc<Snapshot>>>,
    /// The zones each driver was last seen in (only drivers in some zone).
    drivers: Arc<dashmap::DashMap<i64, Vec<i64>>>,
    /// To the writer of zone crossings (bounded; full drops and counts).
    crossings: Option<tokio::sync::mpsc::Sender<NewOutboxEvent>>,
}

/// Crossings waiting for their writer before new ones are dropped.
const CROSSINGS_QUEUE: usize = 10_000;

impl Zones {
    pub async fn load(store: Arc<dyn ZoneStore>) -> anyhow::Result<Zones> {
        let zones = Zones {
            store,
            current: Arc::new(RwLock::new(Arc::new(Snapshot {
                index: ZoneIndex::default(),
                limits: HashMap::new(),
            }))),
            drivers: Arc::default(),
            crossings: None,
        };
        zones.reload().await?;
        Ok(zones)
    }

    pub fn store(&self) -> &dyn ZoneStore {
        self.store.as_ref()
    }

    /// Rebuilds the index from the store (after every write).
    pub async fn reload(&self) -> StoreResult<()> {
        let records = self.store.zones().await?;
        let mut limits = HashMap::new();
        let mut indexed = Vec::with_capacity(records.len());
        for record in &records {
            for restaurant in &record.restaurant_ids {
                limits.insert(*restaurant, record.id);
            }
            // Stored geometries were validated on the way in.
            match actors::domain::zone::parse_geojson("geometry", &record.geometry) {
                Ok(area) => indexed.push(Zone {
                    id: record.id,
                    area,
                }),
                Err(_) => tracing::error!(
                    zone = record.id,
                    "Stored zone geometry no longer parses; ignored"
                ),
            }
        }
        let snapshot = Arc::new(Snapshot {
            index: ZoneIndex::new(indexed),
            limits,
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
        Ok(())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether `restaurant_id` may deliver to `at`.
    pub fn check_delivery(&self, restaurant_id: i64, at: LatLon) -> Result<(), OutOfZone> {
        let snapshot = self.snapshot();
        let Some(zone_id) = snapshot.limits.get(&restaurant_id).copied() else {
            return Ok(());
        };
        match snapshot.index.get(zone_id) {
            Some(zone) if covers(&zone.area, at) => Ok(()),
            _ => Err(OutOfZone { zone_id }),
        }
    }

    /// The zones holding `at` (an R-tree lookup).
    pub fn containing(&self, at: LatLon) -> Vec<i64> {
        self.snapshot().index.containing(at)
    }

    /// Sends drivers' zone crossings to the outbox from now on.
    pub fn with_driver_events(
        mut self,
        events: Arc<dyn EventStore>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Zones {
        let (tx, rx) = tokio::sync::mpsc::channel(CROSSINGS_QUEUE);
        tokio::spawn(write_crossings(events, rx, shutdown));
        self.crossings = Some(tx);
        self
    }

    /// A driver's position: an event for each zone it entered or left
    /// since its last one. One R-tree lookup; nothing when no zone exists
    /// and the driver was in none.
    pub fn observe_driver(&self, driver_id: i64, at: LatLon) {
        let Some(crossings) = &self.crossings else {
            return;
        };
        let snapshot = self.snapshot();
        if snapshot.index.is_empty() && !self.drivers.contains_key(&driver_id) {
            return;
        }
        let now_in = snapshot.index.containing(at);
        let before = if now_in.is_empty() {
            self.drivers.remove(&driver_id).map(|(_, z)| z)
        } else {
            self.drivers.insert(driver_id, now_in.clone())
        }
        .unwrap_or_default();
        if before == now_in {
            return;
        }
        let left = before
            .iter()
            .filter(|z| !now_in.contains(z))
            .map(|z| (*z, "driver_left_zone"));
        let entered = now_in
            .iter()
            .filter(|z| !before.contains(z))
            .map(|z| (*z, "driver_entered_zone"));
        let now = chrono::Utc::now();
        for (zone_id, event_type) in left.chain(entered) {
            let id = format!(
                "driver-{driver_id}-zone-{zone_id}-{}",
                now.timestamp_micros()
            );
            let payload = serde_json::json!({
                "id": id,
                "type": event_type,
                "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": { "driverId": driver_id, "zoneId": zone_id, "lat": at.lat, "lon": at.lon },
            });
            let kind = if event_type == "driver_left_zone" {
                "left"
            } else {
                "entered"
            };
            metrics::counter!(m::ZONE_CROSSINGS_TOTAL, "kind" => kind).increment(1);
            let event = NewOutboxEvent {
                event_id: id,
                event_type,
                subject: format!("drivers.{driver_id}.{event_type}"),
                payload: payload.to_string(),
            };
            if crossings.try_send(event).is_err() {
                metrics::counter!(m::ZONE_CROSSINGS_DROPPED_TOTAL).increment(1);
            }
        }
    }
}

/// Writes zone crossings to the outbox in batches, off the position path.
async fn write_crossings(
    events: Arc<dyn EventStore>,
    mut rx: tokio::sync::mpsc::Receiver<NewOutboxEvent>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut batch = Vec::with_capacity(100);
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            n = rx.recv_many(&mut batch, 100) => n,
        };
        if received == 0 {
            return;
        }
        if let Err(error) = events.outbox_append(&batch).await {
            metrics::counter!(m::ZONE_CROSSINGS_DROPPED_TOTAL).increment(batch.len() as u64);
            tracing::warn!(%error, dropped = batch.len(), "Zone crossings not written");
        }
        batch.clear();
    }
}
