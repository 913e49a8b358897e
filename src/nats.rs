//! The process's one NATS connection (async-nats). Everything that talks to
//! NATS takes its client from here, so the event stream and the cluster
//! work (DESIGN.md "Cluster") share one connection.
//!
//! The connection is made in the background and kept by the client: a
//! server that is down at start, or goes away later, delays only what waits
//! for it (the event publisher retries), never the start of the engine.

use std::time::Duration;

/// Connects to `url` (retrying in the background until it answers).
pub async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    metrics::gauge!(actors::metrics::NATS_CONNECTED).set(0.0);
    let client = async_nats::ConnectOptions::new()
        .name("dispatchd")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => {
                    metrics::gauge!(actors::metrics::NATS_CONNECTED).set(1.0);
                    tracing::info!("NATS connected");
                }
                async_nats::Event::Disconnected => {
                    metrics::gauge!(actors::metrics::NATS_CONNECTED).set(0.0);
                    tracing::warn!("NATS disconnected; reconnecting");
                }
                // A subscription's bounded channel (async-nats: 65,536
                // messages) was full: what the bus brings faster than this
                // node takes it is dropped there, and counted here.
                async_nats::Event::SlowConsumer(sid) => {
                    metrics::counter!(actors::metrics::NATS_SLOW_CONSUMER_TOTAL).increment(1);
                    tracing::debug!(sid, "NATS subscription full; messages dropped");
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("NATS URL {url:?}: {e}"))?;
    Ok(client)
}
