//! The durable store: `actors::store::Store` implemented on sqlx, for
//! Postgres (production) and SQLite (the embedded default).
//!
//! Both backends share one SQL source (`sql.rs`); this module picks the
//! backend from the URL, configures its pool, runs its migrations, and
//! classifies driver errors into the store's error kinds.

use crate::events::store::EventStore;
use crate::zones::ZoneStore;
use actors::domain::model::LatLon;
use actors::store::{Store, StoreError, StoreResult};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

pub mod postgres;
pub mod sqlite;

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    pub max_connections: u32,
    /// How long a caller waits for a pooled connection before the store is
    /// declared unavailable (503).
    pub acquire_timeout: Duration,
    /// Postgres aborts statements (and idle transactions) older than this.
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn of(url: &str) -> Option<Backend> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else {
            None
        }
    }
}

/// What an order write of a cluster node carries to the database: the
/// region of the order and the lease this node holds it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFence {
    pub region: String,
    pub node: String,
    pub epoch: i64,
}

/// Cluster mode's say on order writes (`crate::cluster` implements it).
/// Each write (creation, transition) asks it for the fence of the order's
/// restaurant's region, and the database checks that fence against
/// `region_owners` in the write's own transaction.
pub trait OrderFencing: Send + Sync + 'static {
    /// The fence for an order of the restaurant at `at`, or
    /// [`StoreError::NotServed`] when this node does not serve its region
    /// now (refused before the database is asked).
    fn fence_for(&self, at: LatLon) -> Result<WriteFence, StoreError>;
}

/// Postgres's record of which node holds each region at which epoch
/// (`region_owners`, migration 0041); cluster mode only.
#[async_trait]
pub trait RegionOwners: Send + Sync + 'static {
    /// Records that `node` holds `region` from `epoch` on; false (nothing
    /// changed) when an epoch as new or newer is recorded already.
    async fn record_claim(&self, region: &str, node: &str, epoch: i64) -> StoreResult<bool>;
}

/// The one store behind each of its ports.
pub struct Stores {
    pub store: Arc<dyn Store>,
    /// The outbox and webhooks (`crate::events`).
    pub events: Arc<dyn EventStore>,
    /// Service zones (`crate::zones`).
    pub zones: Arc<dyn ZoneStore>,
    /// Postgres only: `None` on SQLite, which is single-node.
    pub region_owners: Option<Arc<dyn RegionOwners>>,
}

/// Connects, migrates, and returns the store behind the `Store` port.
pub async fn open(options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_all(options, None).await?.store)
}

/// [`open`], and the same store behind its other ports. With `fencing`
/// (cluster mode, Postgres only) every order write is fenced by it.
pub async fn open_all(
    options: &StoreOptions,
    fencing: Option<Arc<dyn OrderFencing>>,
) -> anyhow::Result<Stores> {
    match Backend::of(&options.url) {
        Some(Backend::Postgres) => {
            let store = Arc::new(postgres::open(options).await?.with_fencing(fencing));
            Ok(Stores {
                store: store.clone(),
                events: store.clone(),
                zones: store.clone(),
                region_owners: Some(store),
            })
        }
        Some(Backend::Sqlite) => {
            if fencing.is_some() {
                anyhow::bail!("SQLite is single-node only: no cluster fencing");
            }
            let store = Arc::new(sqlite::open(options).await?);
            Ok(Stores {
                store: store.clone(),
                events: store.clone(),
                zones: store,
                region_owners: None,
            })
        }
        None => anyhow::bail!("unsupported database URL (expected postgres:// or sqlite:)"),
    }
}

/// Runs the migrations of the backend at `url` and nothing else.
pub async fn migrate(options: &StoreOptions) -> anyhow::Result<()> {
    open(options).await.map(drop)
}

/// SQLSTATE classes and SQLite result codes that mean "the store cannot do
/// this right now" rather than "this request is wrong".
fn is_transient(code: &str) -> bool {
    // 57014 is a statement canceled by statement_timeout: a write stuck
    // behind a lock or a hung server, nothing committed.
    const POSTGRES_PREFIXES: [&str; 6] = ["08", "53", "57P", "57014", "40001", "40P01"];
    // SQLite: BUSY, LOCKED, IOERR, FULL, CANTOPEN and their extended codes.
    const SQLITE_CODES: [i64; 5] = [5, 6, 10, 13, 14];
    if POSTGRES_PREFIXES.iter().any(|p| code.starts_with(p)) {
        return true;
    }
    code.parse::<i64>()
        .is_ok_and(|n| SQLITE_CODES.contains(&(n & 0xff)))
}

/// Maps a driver error to the store's error kinds.
pub(crate) fn map_error(error: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    match &error {
        E::PoolTimedOut
        | E::PoolClosed
        | E::Io(_)
        | E::Tls(_)
        | E::Protocol(_)
        | E::WorkerCrashed => StoreError::Unavailable(error.to_string()),
        E::Database(db) if db.code().is_some_and(|c| is_transient(&c)) => {
            StoreError::Unavailable(error.to_string())
        }
        E::Database(db) if db.is_foreign_key_violation() => StoreError::UnknownReference,
        _ => StoreError::Internal(error.to_string()),
    }
}
