// The `EventStore` implementation shared by both backends: the event
// outbox and the webhook tables (issue 13). Included after sql.rs by
// postgres.rs and sqlite.rs, in the same dialect and with the same `Db`.

use crate::events::store::{
    Attempt, Backlog, Delivery, EventStore, NewOutboxEvent, NewWebhook, OutboxRow, Sink, Trimmed,
    Webhook,
};

macro_rules! webhook_columns {
    () => {
        "id, url, event_types, restaurant_id, secret, enabled, disabled_reason, created_at"
    };
}

macro_rules! delivery_columns {
    () => {
        "id, webhook_id, event_id, event_type, payload, status, attempts, next_attempt_at, \
         last_status, last_error, created_at, delivered_at"
    };
}

fn webhook_from(row: &DbRow) -> StoreResult<Webhook> {
    let types: String = row.try_get("event_types").map_err(map_error)?;
    let enabled: bool = row.try_get("enabled").map_err(map_error)?;
    Ok(Webhook {
        id: row.try_get("id").map_err(map_error)?,
        url: row.try_get("url").map_err(map_error)?,
        event_types: serde_json::from_str(&types).map_err(|_| corrupt("event types", &types))?,
        restaurant_id: row.try_get("restaurant_id").map_err(map_error)?,
        status: if enabled { "active" } else { "disabled" },
        disabled_reason: row.try_get("disabled_reason").map_err(map_error)?,
        created_at: row.try_get("created_at").map_err(map_error)?,
        secret: row.try_get("secret").map_err(map_error)?,
    })
}

fn delivery_from(row: &DbRow) -> Result<Delivery, sqlx::Error> {
    Ok(Delivery {
        id: row.try_get("id")?,
        webhook_id: row.try_get("webhook_id")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        payload: row.try_get("payload")?,
        status: row.try_get("status")?,
        attempts: row.try_get("attempts")?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        last_status: row.try_get("last_status")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
    })
}

fn outbox_row_from(row: &DbRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        order_id: row.try_get("order_id")?,
        restaurant_id: row.try_get("restaurant_id")?,
        event_type: row.try_get("type")?,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
        subject: row.try_get("subject")?,
    })
}

/// Counts, per sink, the rows older than `cutoff` or up to id `up_to` that
/// the sink has not taken, then deletes them.
async fn drop_outbox_rows(
    pool: &Pool<Db>,
    cutoff: Option<DateTime<Utc>>,
    up_to: Option<i64>,
) -> StoreResult<(u64, u64)> {
    let mut tx = pool.begin().await.map_err(map_error)?;
    let row = sqlx::query(
        "SELECT COALESCE(SUM(CASE WHEN published_at IS NULL THEN 1 ELSE 0 END), 0) AS nats, \
                COALESCE(SUM(CASE WHEN fanned_out_at IS NULL THEN 1 ELSE 0 END), 0) AS hooks \
         FROM event_outbox WHERE created_at < $1 OR id <= $2",
    )
    .bind(cutoff)
    .bind(up_to)
    .fetch_one(&mut *tx)
    .await
    .map_err(map_error)?;
    let nats: i64 = row.try_get("nats").map_err(map_error)?;
    let hooks: i64 = row.try_get("hooks").map_err(map_error)?;
    sqlx::query("DELETE FROM event_outbox WHERE created_at < $1 OR id <= $2")
        .bind(cutoff)
        .bind(up_to)
        .execute(&mut *tx)
        .await
        .map_err(map_error)?;
    tx.commit().await.map_err(map_error)?;
    Ok((nats.max(0) as u64, hooks.max(0) as u64))
}

#[async_trait]
impl EventStore for SqlStore {
    async fn outbox_pending(&self, sink: Sink, limit: i64) -> StoreResult<Vec<OutboxRow>> {
        let sql = match sink {
            Sink::Nats => {
                "SELECT id, event_id, order_id, restaurant_id, type, payload, created_at, subject \
                 FROM event_outbox WHERE published_at IS NULL ORDER BY id LIMIT $1"
            }
            Sink::Webhooks => {
                "SELECT id, event_id, order_id, restaurant_id, type, payload, created_at, subject \
                 FROM event_outbox WHERE fanned_out_at IS NULL ORDER BY id LIMIT $1"
            }
        };
        let rows = sqlx::query(sql)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|r| outbox_row_from(r).map_err(map_error))
            .collect()
    }

    async fn outbox_published(&self, ids: &[i64]) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut builder =
            sqlx::QueryBuilder::<Db>::new("UPDATE event_outbox SET published_at = ");
        builder.push_bind(Utc::now()).push(" WHERE id IN (");
        let mut list = builder.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        builder.push(")");
        builder
            .build()
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        Ok(())
    }

    async fn outbox_fan_out(
        &self,
        rows: &[OutboxRow],
        deliveries: &[(i64, usize)],
    ) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        // 8 parameters a row; 1,000 rows stay inside SQLite's limit.
        for chunk in deliveries.chunks(1000) {
            let mut builder = sqlx::QueryBuilder::<Db>::new(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status, \
                 attempts, next_attempt_at, created_at) ",
            );
            builder.push_values(chunk, |mut b, (webhook_id, index)| {
                let row = &rows[*index];
                b.push_bind(*webhook_id)
                    .push_bind(&row.event_id)
                    .push_bind(&row.event_type)
                    .push_bind(&row.payload)
                    .push_bind("pending")
                    .push_bind(0_i32)
                    .push_bind(now)
                    .push_bind(now);
            });
            builder.build().execute(&mut *tx).await.map_err(map_error)?;
        }
        let mut builder =
            sqlx::QueryBuilder::<Db>::new("UPDATE event_outbox SET fanned_out_at = ");
        builder.push_bind(now).push(" WHERE id IN (");
        let mut list = builder.separated(", ");
        for row in rows {
            list.push_bind(row.id);
        }
        builder.push(")");
        builder.build().execute(&mut *tx).await.map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(())
    }

    async fn outbox_backlog(&self, sink: Sink) -> StoreResult<Backlog> {
        let sql = match sink {
            Sink::Nats => {
                "SELECT COUNT(*) AS n, MIN(id) AS first FROM event_outbox WHERE published_at IS NULL"
            }
            Sink::Webhooks => {
                "SELECT COUNT(*) AS n, MIN(id) AS first FROM event_outbox WHERE fanned_out_at IS NULL"
            }
        };
        let row = sqlx::query(sql)
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        let rows: i64 = row.try_get("n").map_err(map_error)?;
        let first: Option<i64> = row.try_get("first").map_err(map_error)?;
        let oldest = match first {
            Some(id) => sqlx::query("SELECT created_at FROM event_outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_error)?
                .map(|r| r.try_get("created_at"))
                .transpose()
                .map_err(map_error)?,
            None => None,
        };
        Ok(Backlog { rows, oldest })
    }

    async fn outbox_trim(
        &self,
        nats: bool,
        cutoff: DateTime<Utc>,
        max_rows: i64,
    ) -> StoreResult<Trimmed> {
        let done = sqlx::query(
            "DELETE FROM event_outbox WHERE fanned_out_at IS NOT NULL AND (published_at IS NOT NULL OR $1)",
        )
        .bind(!nats)
        .execute(&self.pool)
        .await
        .map_err(map_error)?
        .rows_affected();
        let (mut dropped_nats, mut dropped_webhooks) =
            drop_outbox_rows(&self.pool, Some(cutoff), None).await?;
        let row = sqlx::query("SELECT COUNT(*) AS n FROM event_outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        let total: i64 = row.try_get("n").map_err(map_error)?;
        if total > max_rows {
            let cut = sqlx::query("SELECT id FROM event_outbox ORDER BY id LIMIT 1 OFFSET $1")
                .bind(total - max_rows - 1)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_error)?;
            if let Some(cut) = cut {
                let cut: i64 = cut.try_get("id").map_err(map_error)?;
                let (n, w) = drop_outbox_rows(&self.pool, None, Some(cut)).await?;
                dropped_nats += n;
                dropped_webhooks += w;
            }
        }
        if !nats {
            dropped_nats = 0;
        }
        Ok(Trimmed {
            done,
            dropped_nats,
            dropped_webhooks,
        })
    }

    async fn outbox_append(&self, events: &[NewOutboxEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut builder = sqlx::QueryBuilder::<Db>::new(
            "INSERT INTO event_outbox (event_id, order_id, restaurant_id, type, payload, created_at, subject) ",
        );
        builder.push_values(events, |mut b, e| {
            b.push_bind(&e.event_id)
                .push_bind(0_i64)
                .push_bind(0_i64)
                .push_bind(e.event_type)
                .push_bind(&e.payload)
                .push_bind(now)
                .push_bind(&e.subject);
        });
        builder
            .build()
            .execute(&self.pool)
            .await
            .map_err(map_error)?;
        self.outbox_written();
        Ok(())
    }

    fn outbox_signal(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outbox_signal.subscribe()
    }

    async fn create_webhook(&self, webhook: &NewWebhook) -> StoreResult<Webhook> {
        let types = serde_json::to_string(&webhook.event_types)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let sql = concat!(
            "INSERT INTO webhooks (url, event_types, restaurant_id, secret, enabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
            webhook_columns!()
        );
        let row = sqlx::query(sql)
            .bind(&webhook.url)
            .bind(types)
            .bind(webhook.restaurant_id)
            .bind(&webhook.secret)
            .bind(true)
            .bind(Utc::now())
            .fetch_one(&self.pool)
            .await
            .map_err(map_error)?;
        webhook_from(&row)
    }

    async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        let sql = concat!("SELECT ", webhook_columns!(), " FROM webhooks ORDER BY id");
        let rows = sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter().map(webhook_from).collect()
    }

    async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>> {
        let sql = concat!("SELECT ", webhook_columns!(), " FROM webhooks WHERE id = $1");
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(webhook_from).transpose()
    }

    async fn delete_webhook(&self, id: i64) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        let done = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_error)?;
        tx.commit().await.map_err(map_error)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_webhook_enabled(
        &self,
        id: i64,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<Option<Webhook>> {
        let sql = concat!(
            "UPDATE webhooks SET enabled = $2, disabled_reason = $3 WHERE id = $1 RETURNING ",
            webhook_columns!()
        );
        let row = sqlx::query(sql)
            .bind(id)
            .bind(enabled)
            .bind(if enabled { None } else { reason })
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref().map(webhook_from).transpose()
    }

    async fn next_delivery(&self, webhook_id: i64) -> StoreResult<Option<Delivery>> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending' ORDER BY id LIMIT 1"
        );
        let row = sqlx::query(sql)
            .bind(webhook_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref()
            .map(delivery_from)
            .transpose()
            .map_err(map_error)
    }

    async fn pending_deliveries(&self, webhook_id: i64) -> StoreResult<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'pending'",
        )
        .bind(webhook_id)
        .fetch_one(&self.pool)
        .await
        .map_err(map_error)?;
        row.try_get("n").map_err(map_error)
    }

    async fn record_attempt(&self, delivery: &Delivery, attempt: &Attempt) -> StoreResult<()> {
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(map_error)?;
        match attempt {
            Attempt::Delivered { status } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, \
                     last_status = $2, last_error = NULL, delivered_at = $3 WHERE id = $1",
                )
                .bind(delivery.id)
                .bind(*status)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
            }
            Attempt::Failed {
                status,
                error,
                retry_at,
            } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $2, \
                     last_error = $3, next_attempt_at = $4 WHERE id = $1",
                )
                .bind(delivery.id)
                .bind(*status)
                .bind(error)
                .bind(*retry_at)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
            }
            Attempt::GaveUp { status, error } => {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, \
                     last_status = $2, last_error = $3 WHERE id = $1",
                )
                .bind(delivery.id)
                .bind(*status)
                .bind(error)
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
                sqlx::query(
                    "UPDATE webhooks SET enabled = $2, disabled_reason = $3 WHERE id = $1",
                )
                .bind(delivery.webhook_id)
                .bind(false)
                .bind(format!(
                    "delivery {} ({}) failed {} times; last error: {error}",
                    delivery.id,
                    delivery.event_id,
                    delivery.attempts + 1
                ))
                .execute(&mut *tx)
                .await
                .map_err(map_error)?;
            }
        }
        tx.commit().await.map_err(map_error)?;
        Ok(())
    }

    async fn deliveries(
        &self,
        webhook_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>> {
        let sql = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        );
        let rows = sqlx::query(sql)
            .bind(webhook_id)
            .bind(before)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(map_error)?;
        rows.iter()
            .map(|r| delivery_from(r).map_err(map_error))
            .collect()
    }

    async fn replay_delivery(&self, webhook_id: i64, id: i64) -> StoreResult<Option<Delivery>> {
        let sql = concat!(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status, \
               attempts, next_attempt_at, created_at) \
             SELECT webhook_id, event_id, event_type, payload, 'pending', 0, $3, $3 \
             FROM webhook_deliveries WHERE id = $2 AND webhook_id = $1 RETURNING ",
            delivery_columns!()
        );
        let row = sqlx::query(sql)
            .bind(webhook_id)
            .bind(id)
            .bind(Utc::now())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_error)?;
        row.as_ref()
            .map(delivery_from)
            .transpose()
            .map_err(map_error)
    }
}
