//! The `EventStore` port: the outbox and the webhook tables, as the event
//! publishers and the webhook API see them. `crate::store` implements it on
//! the same pools as the `Store` (in `store/events_sql.rs`).

use actors::store::StoreResult;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Which consumer of the outbox: each marks its own column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The JetStream stream.
    Nats,
    /// The webhook fan-out (a delivery row per matching endpoint).
    Webhooks,
}

impl Sink {
    pub fn as_str(self) -> &'static str {
        match self {
            Sink::Nats => "nats",
            Sink::Webhooks => "webhooks",
        }
    }
}

/// One committed event waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub event_id: String,
    pub order_id: i64,
    pub restaurant_id: i64,
    pub event_type: String,
    pub payload: String,
    pub created_at: DateTime<Utc>,
    /// The subject after the prefix, for events that are not an order's.
    pub subject: Option<String>,
}

/// An event that is not an order's, appended to the outbox on its own.
#[derive(Debug, Clone)]
pub struct NewOutboxEvent {
    pub event_id: String,
    pub event_type: &'static str,
    pub subject: String,
    pub payload: String,
}

/// How far behind a sink is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub rows: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// What one trim of the outbox removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trimmed {
    /// Rows every sink had taken.
    pub done: u64,
    /// Rows dropped before a sink took them (too old or too many), per sink.
    pub dropped_nats: u64,
    pub dropped_webhooks: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// Empty: every type.
    pub event_types: Vec<String>,
    pub restaurant_id: Option<i64>,
    /// `active` or `disabled`.
    pub status: &'static str,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub secret: String,
}

impl Webhook {
    pub fn enabled(&self) -> bool {
        self.status == "active"
    }

    /// Whether an event of `event_type` for `restaurant_id` goes to this endpoint.
    pub fn wants(&self, event_type: &str, restaurant_id: i64) -> bool {
        self.enabled()
            && self.restaurant_id.is_none_or(|r| r == restaurant_id)
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub event_types: Vec<String>,
    pub restaurant_id: Option<i64>,
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: i64,
    pub webhook_id: i64,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub payload: String,
}

/// The result of one delivery attempt, as the store records it.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: i32,
    },
    /// Try again at `retry_at`.
    Failed {
        status: Option<i32>,
        error: String,
        retry_at: DateTime<Utc>,
    },
    /// The last attempt failed: the delivery is `failed` and the endpoint disabled.
    GaveUp {
        status: Option<i32>,
        error: String,
    },
}

#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The oldest rows `sink` has not taken, in commit order per order.
    async fn outbox_pending(&self, sink: Sink, limit: i64) -> StoreResult<Vec<OutboxRow>>;
    /// Marks rows as published to NATS.
    async fn outbox_published(&self, ids: &[i64]) -> StoreResult<()>;
    /// In one transaction: queues a delivery per `(webhook id, row)` pair
    /// and marks `rows` as fanned out.
    async fn outbox_fan_out(
        &self,
        rows: &[OutboxRow],
        deliveries: &[(i64, usize)],
    ) -> StoreResult<()>;
    async fn outbox_backlog(&self, sink: Sink) -> StoreResult<Backlog>;
    /// Deletes rows every sink took (with `nats` off, the webhooks alone),
    /// and drops rows older than `cutoff` or past the newest `max_rows`.
    async fn outbox_trim(
        &self,
        nats: bool,
        cutoff: DateTime<Utc>,
        max_rows: i64,
    ) -> StoreResult<Trimmed>;
    /// Appends events that are not an order's (no order transaction to ride in).
    async fn outbox_append(&self, events: &[NewOutboxEvent]) -> StoreResult<()>;
    /// A receiver of outbox commits (bumped after each).
    fn outbox_signal(&self) -> tokio::sync::watch::Receiver<u64>;

    async fn create_webhook(&self, webhook: &NewWebhook) -> StoreResult<Webhook>;
    async fn webhooks(&self) -> StoreResult<Vec<Webhook>>;
    async fn webhook(&self, id: i64) -> StoreResult<Option<Webhook>>;
    async fn delete_webhook(&self, id: i64) -> StoreResult<bool>;
    /// Enables (clearing the reason) or disables an endpoint.
    async fn set_webhook_enabled(
        &self,
        id: i64,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<Option<Webhook>>;
    /// The endpoint's oldest pending delivery.
    async fn next_delivery(&self, webhook_id: i64) -> StoreResult<Option<Delivery>>;
    async fn pending_deliveries(&self, webhook_id: i64) -> StoreResult<i64>;
    /// Records an attempt (and on `GaveUp` disables the endpoint, in one transaction).
    async fn record_attempt(&self, delivery: &Delivery, attempt: &Attempt) -> StoreResult<()>;
    /// The newest deliveries first, below `before` if given.
    async fn deliveries(
        &self,
        webhook_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<Delivery>>;
    /// Queues the event of delivery `id` again, as a new pending delivery with the same event id.
    async fn replay_delivery(&self, webhook_id: i64, id: i64) -> StoreResult<Option<Delivery>>;
}
