//! The JetStream sink: publishes the outbox, in order, to one stream.
//!
//! Subjects are `<prefix>.<restaurantId>.<orderId>.<eventType>`, so a
//! consumer filters one restaurant (`<prefix>.7.>`), one kind of event
//! (`<prefix>.*.*.order_delivered`), one order (`<prefix>.*.42.*`) or takes
//! everything (`<prefix>.>`). A driver entering or leaving a zone is
//! `<prefix>.drivers.<driverId>.driver_entered_zone` (or `_left_zone`). Each message carries the event id
//! (`<orderId>-<seq>`) as `Nats-Msg-Id`, so the stream drops a duplicate
//! within its duplicate window (a publish retried after a lost ack, or
//! republished after a crash before the row was marked).
//!
//! Publishes go one at a time, each awaiting its ack: a failure stops the
//! batch there, and the same row is sent again first, so one order's events
//! reach the stream in order whatever fails. While NATS is down the rows
//! wait in the outbox (see `events::run_upkeep` for its bounds).

use super::store::{EventStore, Sink};
use crate::settings::EventSettings;
use actors::metrics as m;
use async_nats::jetstream::{self, stream};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The subject of one event.
pub fn subject(prefix: &str, restaurant_id: i64, order_id: i64, event_type: &str) -> String {
    format!("{prefix}.{restaurant_id}.{order_id}.{event_type}")
}

pub async fn run(
    store: Arc<dyn EventStore>,
    client: async_nats::Client,
    settings: EventSettings,
    shutdown: CancellationToken,
) {
    let js = jetstream::new(client);
    let poll = Duration::from_millis(settings.poll_ms);
    let timeout = Duration::from_millis(settings.publish_timeout_ms);
    let mut signal = store.outbox_signal();
    let mut stream_ready = false;
    let mut backoff = Duration::from_millis(200);
    let mut failing = false;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        if !stream_ready {
            let config = stream::Config {
                name: settings.stream.clone(),
                subjects: vec![format!("{}.>", settings.subject_prefix)],
                duplicate_window: Duration::from_secs(settings.duplicate_window_secs),
                ..Default::default()
            };
            match tokio::time::timeout(timeout, js.get_or_create_stream(config)).await {
                Ok(Ok(_)) => stream_ready = true,
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    if !failing {
                        tracing::warn!(%error, stream = %settings.stream, "JetStream unavailable; events wait in the outbox");
                        failing = true;
                    }
                    if !pause(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let rows = match store.outbox_pending(Sink::Nats, settings.batch).await {
            Ok(rows) => rows,
            Err(error) => {
                tracing::warn!(%error, "Outbox read failed (NATS sink)");
                if !pause(&mut backoff, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        if rows.is_empty() {
            if !super::wait_for_events(&mut signal, poll, &shutdown).await {
                return;
            }
            continue;
        }
        let mut published = Vec::with_capacity(rows.len());
        let mut failure = None;
        for row in &rows {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, row.event_id.as_str());
            let subject = match &row.subject {
                Some(tail) => format!("{}.{tail}", settings.subject_prefix),
                None => subject(
                    &settings.subject_prefix,
                    row.restaurant_id,
                    row.order_id,
                    &row.event_type,
                ),
            };
            let sent = tokio::time::timeout(timeout, async {
                js.publish_with_headers(subject, headers, row.payload.clone().into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            })
            .await;
            match sent {
                Ok(Ok(ack)) => {
                    if ack.duplicate {
                        metrics::counter!(m::NATS_DUPLICATES_TOTAL).increment(1);
                    }
                    published.push(row.id);
                }
                Ok(Err(error)) => {
                    failure = Some(error);
                    break;
                }
                Err(_) => {
                    failure = Some("not acknowledged in time".to_string());
                    break;
                }
            }
        }
        if !published.is_empty() {
            metrics::counter!(m::EVENTS_PUBLISHED_TOTAL, "sink" => "nats")
                .increment(published.len() as u64);
            // If this fails the rows go out again; the stream drops the copies.
            if let Err(error) = store.outbox_published(&published).await {
                tracing::warn!(%error, "Could not mark events published; they will be sent again");
            }
        }
        match failure {
            None => {
                if failing {
                    tracing::info!("JetStream publishing again; the outbox drains");
                    failing = false;
                }
                backoff = Duration::from_millis(200);
            }
            Some(error) => {
                metrics::counter!(m::NATS_PUBLISH_FAILURES_TOTAL).increment(1);
                if !failing {
                    tracing::warn!(%error, "JetStream publish failed; events wait in the outbox");
                    failing = true;
                }
                // The stream may be gone too (a new server): check it again.
                stream_ready = false;
                if !pause(&mut backoff, &shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps `backoff` (doubling it up to 10 s); false on shutdown.
async fn pause(backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(Duration::from_secs(10));
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(wait) => true,
    }
}
