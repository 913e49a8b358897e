//! Moved ETAs, written to the store off the order actors: the newest
//! estimate per order waits here and is written every `every`, and all of
//! them on a graceful stop ([`Flush`]).
//!
//! An order actor that hears of a moved estimate keeps it in memory and
//! pushes it at once; the store only needs its newest value, so a newer one
//! replaces an unwritten older one (`dispatch_eta_writes_coalesced_total`).
//! That bounds the queue by the live orders, however far the store falls
//! behind. Each write is made for the version the estimate was computed at
//! (`Store::set_estimated_delivery`): a transition committed meanwhile wrote
//! its own estimate, and a late one must not overwrite it.

use crate::domain::model::OrderId;
use crate::metrics as m;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
struct PendingEta {
    version: i64,
    at: DateTime<Utc>,
}

/// Where order actors leave moved estimates. Cheap to clone.
#[derive(Clone, Default)]
pub struct EtaWrites {
    pending: Arc<Mutex<HashMap<OrderId, PendingEta>>>,
}

impl EtaWrites {
    fn lock(&self) -> MutexGuard<'_, HashMap<OrderId, PendingEta>> {
        // One insert or one swap under the lock: nothing to leave half done.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `at` as the estimate of `order_id` at `version`, replacing
    /// one not yet written.
    pub fn offer(&self, order_id: OrderId, version: i64, at: DateTime<Utc>) {
        if self
            .lock()
            .insert(order_id, PendingEta { version, at })
            .is_some()
        {
            metrics::counter!(m::ETA_WRITES_COALESCED_TOTAL).increment(1);
        }
    }

    /// Estimates waiting to be written.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn write_pending(&self, store: &dyn Store) {
        let batch = std::mem::take(&mut *self.lock());
        for (order_id, eta) in batch {
            let result = match store
                .set_estimated_delivery(order_id, eta.version, eta.at)
                .await
            {
                Ok(true) => "written",
                // The order moved on: its newer change wrote its own estimate.
                Ok(false) => "stale",
                Err(error) => {
                    // Advisory: the next estimate, or the next change, writes
                    // it again. Counted, so an outage shows.
                    tracing::debug!(order_id, %error, "ETA not stored");
                    "failed"
                }
            };
            metrics::counter!(m::ETA_WRITES_TOTAL, "result" => result).increment(1);
        }
    }
}

/// A background writer's stop button: write everything queued, then end.
pub struct Flush {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Flush {
    pub(crate) fn new(stop: CancellationToken, task: JoinHandle<()>) -> Flush {
        Flush { stop, task }
    }

    /// Asks the writer to write what it holds and stop; false if that did
    /// not finish `within` (the rest is lost, and the caller says so).
    pub async fn flush(self, within: Duration) -> bool {
        self.stop.cancel();
        tokio::time::timeout(within, self.task).await.is_ok()
    }
}

/// Starts the writer task.
pub fn start(store: Arc<dyn Store>, every: Duration) -> (EtaWrites, Flush) {
    let writes = EtaWrites::default();
    let stop = CancellationToken::new();
    let task = {
        let writes = writes.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => writes.write_pending(store.as_ref()).await,
                }
            }
            // Stopping: the actors have stopped, so a few passes empty it.
            for _ in 0..3 {
                if writes.is_empty() {
                    break;
                }
                writes.write_pending(store.as_ref()).await;
            }
        })
    };
    (writes, Flush::new(stop, task))
}
