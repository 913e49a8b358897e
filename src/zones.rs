//! Service zones: the admin's areas (`/api/zones`), the zone each
//! restaurant delivers inside, and the in-memory index the order check
//! reads (no store read per order). Writes go to the store first, then
//! the index is rebuilt from it.
//!
//! Single node: another node's index learns of a change at its next start.

use actors::domain::model::LatLon;
use actors::domain::zone::{Zone, ZoneIndex, covers};
use actors::store::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// A zone as the API shows it.
#[derive(Debug, Clone, Serialize)]
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
}

impl Zones {
    pub async fn load(store: Arc<dyn ZoneStore>) -> anyhow::Result<Zones> {
        let zones = Zones {
            store,
            current: Arc::new(RwLock::new(Arc::new(Snapshot {
                index: ZoneIndex::default(),
                limits: HashMap::new(),
            }))),
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
}
