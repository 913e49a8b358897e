//! Postgres, the production store.

use super::StoreOptions;
use sqlx::postgres::PgPoolOptions;

pub type Db = sqlx::Postgres;

include!("sql.rs");
include!("events_sql.rs");
include!("zones_sql.rs");

pub async fn open(options: &StoreOptions) -> anyhow::Result<SqlStore> {
    let pool = PgPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(options.acquire_timeout)
        .connect(&options.url)
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(SqlStore::new(pool))
}
