//! Postgres, the production store.

use super::StoreOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

pub type Db = sqlx::Postgres;

include!("sql.rs");
include!("events_sql.rs");
include!("zones_sql.rs");

pub async fn open(options: &StoreOptions) -> anyhow::Result<SqlStore> {
    // Server-side bounds on every session: a statement that hangs is
    // aborted, and a transaction whose client vanished is rolled back
    // (and noticed through keepalives) instead of lingering, or committing
    // after the engine answered 503.
    let timeout_ms = options.statement_timeout.as_millis().to_string();
    let connect = PgConnectOptions::from_str(&options.url)?.options([
        ("statement_timeout", timeout_ms.as_str()),
        ("idle_in_transaction_session_timeout", timeout_ms.as_str()),
        ("tcp_keepalives_idle", "10"),
        ("tcp_keepalives_interval", "5"),
        ("tcp_keepalives_count", "3"),
    ]);
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore::new(pool))
}
