//! Postgres, the production store.

use super::StoreOptions;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;

pub type Db = sqlx::Postgres;

include!("sql.rs");
include!("events_sql.rs");
include!("zones_sql.rs");

/// The SQLSTATE `dispatchd_check_owner` raises (migration 0041).
const NOT_THE_OWNER: &str = "DF001";

/// Asks the database whether this node holds the fence's region at its
/// epoch; the row lock it takes lasts until `tx` ends, so a newer claim
/// waits for this write and every later write sees that claim.
async fn check_fence(
    tx: &mut sqlx::Transaction<'_, Db>,
    fence: &super::WriteFence,
) -> StoreResult<()> {
    let checked = sqlx::query("SELECT dispatchd_check_owner($1, $2, $3)")
        .bind(&fence.region)
        .bind(&fence.node)
        .bind(fence.epoch)
        .execute(&mut **tx)
        .await;
    match checked {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some(NOT_THE_OWNER) => {
            let holder = db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|pg| pg.hint())
                .filter(|holder| !holder.is_empty())
                .map(String::from);
            metrics::counter!(actors::metrics::CLUSTER_FENCED_WRITES_TOTAL, "stage" => "database")
                .increment(1);
            tracing::warn!(region = %fence.region, epoch = fence.epoch, holder = ?holder, "Order write refused by the database: another node holds the region");
            Err(StoreError::NotServed {
                region: fence.region.clone(),
                owner: holder,
            })
        }
        Err(error) => Err(map_error(error)),
    }
}

#[async_trait]
impl super::RegionOwners for SqlStore {
    async fn record_claim(&self, region: &str, node: &str, epoch: i64) -> StoreResult<bool> {
        sqlx::query_scalar("SELECT dispatchd_claim_region($1, $2, $3)")
            .bind(region)
            .bind(node)
            .bind(epoch)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)
    }
}

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
