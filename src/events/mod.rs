//! Events out: what leaves the process about orders.
//!
//! Every order event is written to the `event_outbox` table in the same
//! transaction as the change it records (`store/sql.rs`, `insert_event`),
//! so an event exists exactly when its change committed, across crashes.
//! From there two sinks take it, each at its own pace, each marking its own
//! column, so a dead NATS never holds up webhooks and the other way round:
//!
//! - [`jetstream`]: publishes to a JetStream stream (when
//!   `events.nats_url` is set), in outbox order, with the event id as
//!   `Nats-Msg-Id`;
//! - [`webhooks`]: queues a delivery per matching endpoint, which one task
//!   per endpoint sends, signed ([`signing`]), retried, logged.
//!
//! [`run_upkeep`] keeps the outbox bounded: rows both sinks took are
//! deleted; rows a sink has not taken after `events.max_age_secs`, or past
//! `events.max_rows`, are dropped, counted and logged.

pub mod jetstream;
pub mod signing;
pub mod store;
pub mod webhooks;

use crate::settings::EventSettings;
use actors::metrics as m;
use std::sync::Arc;
use std::time::Duration;
use store::{EventStore, Sink};
use tokio_util::sync::CancellationToken;

/// Starts the outbox's upkeep and, with `events.nats_url` set, its JetStream
/// publisher on `client`, the process's one NATS connection.
/// (The webhook sink starts with [`webhooks::Webhooks::start`].)
pub async fn start(
    store: Arc<dyn EventStore>,
    settings: &EventSettings,
    client: Option<async_nats::Client>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let nats = !settings.nats_url.trim().is_empty();
    if nats {
        let client = client.ok_or_else(|| {
            anyhow::anyhow!("events.nats_url is set but no NATS connection was made")
        })?;
        tokio::spawn(jetstream::run(
            store.clone(),
            client,
            settings.clone(),
            shutdown.clone(),
        ));
        tracing::info!(stream = %settings.stream, subjects = %format!("{}.>", settings.subject_prefix), "Publishing events to JetStream");
    }
    tokio::spawn(run_upkeep(store, settings.clone(), nats, shutdown));
    Ok(())
}

/// Every few seconds: trims the outbox and reports each sink's backlog.
async fn run_upkeep(
    store: Arc<dyn EventStore>,
    settings: EventSettings,
    nats: bool,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut warned = [false, false];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cutoff = chrono::Utc::now() - chrono::Duration::seconds(settings.max_age_secs as i64);
        match store.outbox_trim(nats, cutoff, settings.max_rows).await {
            Ok(trimmed) => {
                for (sink, dropped) in [
                    (Sink::Nats, trimmed.dropped_nats),
                    (Sink::Webhooks, trimmed.dropped_webhooks),
                ] {
                    if dropped > 0 {
                        metrics::counter!(m::OUTBOX_DROPPED_TOTAL, "sink" => sink.as_str())
                            .increment(dropped);
                        tracing::error!(
                            sink = sink.as_str(),
                            dropped,
                            max_age_secs = settings.max_age_secs,
                            max_rows = settings.max_rows,
                            "Outbox full: events the sink never took were dropped"
                        );
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "Outbox trim failed"),
        }
        let sinks: &[Sink] = if nats {
            &[Sink::Nats, Sink::Webhooks]
        } else {
            &[Sink::Webhooks]
        };
        for (i, sink) in sinks.iter().enumerate() {
            let Ok(backlog) = store.outbox_backlog(*sink).await else {
                continue;
            };
            let age = backlog
                .oldest
                .map(|t| (chrono::Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            metrics::gauge!(m::OUTBOX_BACKLOG_EVENTS, "sink" => sink.as_str())
                .set(backlog.rows as f64);
            metrics::gauge!(m::OUTBOX_OLDEST_AGE_SECONDS, "sink" => sink.as_str()).set(age);
            let over = backlog.rows > settings.warn_rows;
            if over && !warned[i] {
                tracing::warn!(
                    sink = sink.as_str(),
                    backlog = backlog.rows,
                    oldest_secs = age,
                    "Outbox growing: events wait for a sink"
                );
            } else if !over && warned[i] {
                tracing::info!(
                    sink = sink.as_str(),
                    backlog = backlog.rows,
                    "Outbox backlog back to normal"
                );
            }
            warned[i] = over;
        }
    }
}

/// Waits for a commit to the outbox, the fallback poll, or shutdown.
/// Answers false on shutdown.
pub(crate) async fn wait_for_events(
    signal: &mut tokio::sync::watch::Receiver<u64>,
    poll: Duration,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = signal.changed() => true,
        _ = tokio::time::sleep(poll) => true,
    }
}
