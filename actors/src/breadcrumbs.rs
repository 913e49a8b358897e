//! Breadcrumbs: positions of drivers carrying an order, written to
//! `driver_locations` in batches, off the hot path.
//!
//! Driver actors offer samples to a bounded queue and never wait: when the
//! writer (or the store) falls behind and the queue is full, the sample is
//! dropped and counted. Location fan-out never waits for the database.

use crate::metrics as m;
use crate::store::{Breadcrumb, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct BreadcrumbSink {
    queue: mpsc::Sender<Breadcrumb>,
}

impl BreadcrumbSink {
    /// Queues a sample if there is room; drops and counts it otherwise.
    pub fn offer(&self, crumb: Breadcrumb) {
        if self.queue.try_send(crumb).is_err() {
            metrics::counter!(m::BREADCRUMBS_DROPPED_TOTAL).increment(1);
        }
    }
}

pub struct BreadcrumbOptions {
    /// Samples that may wait; more are dropped.
    pub capacity: usize,
    /// Rows per INSERT.
    pub batch: usize,
    /// A partial batch is written after this long.
    pub flush_every: Duration,
}

impl Default for BreadcrumbOptions {
    fn default() -> Self {
        BreadcrumbOptions {
            capacity: 10_000,
            batch: 500,
            flush_every: Duration::from_millis(500),
        }
    }
}

/// Starts the writer task; it ends when every sink is dropped.
pub fn start(store: Arc<dyn Store>, options: BreadcrumbOptions) -> BreadcrumbSink {
    let (queue, mut samples) = mpsc::channel::<Breadcrumb>(options.capacity.max(1));
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(options.batch);
        let mut tick = tokio::time::interval(options.flush_every);
        loop {
            // Full batches go at once; a partial one waits for the tick, so
            // a trickle of samples still makes few writes.
            let room = options.batch.saturating_sub(batch.len()).max(1);
            tokio::select! {
                received = samples.recv_many(&mut batch, room) => {
                    if received == 0 {
                        write(store.as_ref(), &mut batch).await;
                        return;
                    }
                    if batch.len() >= options.batch {
                        write(store.as_ref(), &mut batch).await;
                    }
                }
                _ = tick.tick() => write(store.as_ref(), &mut batch).await,
            }
        }
    });
    BreadcrumbSink { queue }
}

async fn write(store: &dyn Store, batch: &mut Vec<Breadcrumb>) {
    if batch.is_empty() {
        return;
    }
    match store.insert_breadcrumbs(batch).await {
        Ok(n) => metrics::counter!(m::BREADCRUMBS_WRITTEN_TOTAL).increment(n),
        Err(error) => {
            metrics::counter!(m::BREADCRUMBS_DROPPED_TOTAL).increment(batch.len() as u64);
            tracing::warn!(%error, samples = batch.len(), "Breadcrumbs dropped: store write failed");
        }
    }
    batch.clear();
}
