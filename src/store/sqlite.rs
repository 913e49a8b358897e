//! SQLite, the embedded default: a single file, no server to install.
//!
//! One connection writes at a time (SQLite has one writer anyway); WAL lets
//! readers go on meanwhile, and a busy timeout makes writers queue instead of
//! failing.

use super::StoreOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::str::FromStr;

pub type Db = sqlx::Sqlite;

include!("sql.rs");
include!("events_sql.rs");
include!("zones_sql.rs");

/// SQLite is single-node: `open_all` never gives it a fencing, so this is
/// never reached; refusing beats writing unfenced if it ever were.
async fn check_fence(
    _tx: &mut sqlx::Transaction<'_, Db>,
    fence: &super::WriteFence,
) -> StoreResult<()> {
    Err(StoreError::Internal(format!(
        "SQLite cannot fence writes (region {}): cluster mode needs Postgres",
        fence.region
    )))
}

pub async fn open(options: &StoreOptions) -> anyhow::Result<SqlStore> {
    let connect = SqliteConnectOptions::from_str(&options.url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk (the WAL synced) before it is
        // acknowledged, so "acknowledged = durable" holds across a power
        // failure too; NORMAL could lose the last commits.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(options.acquire_timeout);
    if let Some(dir) = std::path::Path::new(connect.get_filename()).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    // A single connection serialises writers inside the process: SQLite
    // allows one writer, and a pool of them would only trade in SQLITE_BUSY.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await?;
    sqlx::migrate!("migrations/sqlite").run(&pool).await?;
    Ok(SqlStore::new(pool))
}
