//! The durable store: `actors::store::Store` implemented on sqlx, for
//! Postgres (production) and SQLite (the embedded default).
//!
//! Both backends share one SQL source (`sql.rs`); this module picks the
//! backend from the URL, configures its pool, runs its migrations, and
//! classifies driver errors into the store's error kinds.

use crate::events::store::EventStore;
use crate::zones::ZoneStore;
use actors::store::{Store, StoreError};
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

/// Connects, migrates, and returns the store behind the `Store` port.
pub async fn open(options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_with_events(options).await?.0)
}

/// [`open`], and the same store behind the `EventStore` port (the outbox
/// and webhooks, `crate::events`) and the `ZoneStore` port (`crate::zones`).
pub async fn open_with_events(
    options: &StoreOptions,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn EventStore>, Arc<dyn ZoneStore>)> {
    match Backend::of(&options.url) {
        Some(Backend::Postgres) => {
            let store = Arc::new(postgres::open(options).await?);
            Ok((store.clone(), store.clone(), store))
        }
        Some(Backend::Sqlite) => {
            let store = Arc::new(sqlite::open(options).await?);
            Ok((store.clone(), store.clone(), store))
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
