//! Breadcrumbs: positions of drivers carrying an order, written to
//! `driver_locations` in batches, off the hot path.
//!
//! Driver actors offer samples to a bounded queue and never wait: when the
//! writer (or the store) falls behind and the queue is full, the sample is
//! dropped and counted. Location fan-out never waits for the database.
//!
//! A trail needs far fewer points than the live map: each driver keeps at
//! most one sample per `every` (default 1 s), so a 10 Hz stream does not
//! become ten rows a second per order.

use crate::metrics as m;
use crate::store::{Breadcrumb, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use crate::engine::eta_writer::Flush;

#[derive(Clone)]
pub struct BreadcrumbSink {
    queue: mpsc::Sender<Breadcrumb>,
    every: Duration,
}

impl BreadcrumbSink {
    /// Whether a driver whose last sample was taken at `last` is due for
    /// another; if so, `last` becomes now.
    pub fn due(&self, last: &mut Option<Instant>) -> bool {
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            return false;
        }
        *last = Some(now);
        true
    }

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
    /// At most one sample per driver per this long (zero: every position).
    pub every: Duration,
}

impl Default for BreadcrumbOptions {
    fn default() -> Self {
        BreadcrumbOptions {
            capacity: 10_000,
            batch: 500,
            flush_every: Duration::from_millis(500),
            every: Duration::from_secs(1),
        }
    }
}

/// Starts the writer task; it ends when every sink is dropped, or when
/// [`Flush::flush`] asks it to write what is queued and stop (shutdown).
pub fn start(store: Arc<dyn Store>, options: BreadcrumbOptions) -> (BreadcrumbSink, Flush) {
    let (queue, mut samples) = mpsc::channel::<Breadcrumb>(options.capacity.max(1));
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(options.batch);
        let mut tick = tokio::time::interval(options.flush_every);
        loop {
            // Full batches go at once; a partial one waits for the tick, so
            // a trickle of samples still makes few writes.
            let room = options.batch.saturating_sub(batch.len()).max(1);
            tokio::select! {
                _ = stopping.cancelled() => {
                    // Everything queued goes, in full batches.
                    loop {
                        while batch.len() < options.batch {
                            match samples.try_recv() {
                                Ok(crumb) => batch.push(crumb),
                                Err(_) => break,
                            }
                        }
                        if batch.is_empty() {
                            return;
                        }
                        write(store.as_ref(), &mut batch).await;
                    }
                }
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
    let sink = BreadcrumbSink {
        queue,
        every: options.every,
    };
    (sink, Flush::new(stop, task))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(every: Duration) -> BreadcrumbSink {
        let (queue, _samples) = mpsc::channel(1);
        BreadcrumbSink { queue, every }
    }

    #[test]
    fn a_driver_is_sampled_at_most_once_per_interval() {
        let sink = sink(Duration::from_secs(60));
        let mut last = None;
        assert!(sink.due(&mut last), "the first position is always kept");
        assert!(!sink.due(&mut last));
        last = last.map(|at| at - Duration::from_secs(61));
        assert!(sink.due(&mut last), "kept again once the interval passed");
    }

    #[test]
    fn a_zero_interval_keeps_every_position() {
        let sink = sink(Duration::ZERO);
        let mut last = None;
        assert!((0..5).all(|_| sink.due(&mut last)));
    }
}
