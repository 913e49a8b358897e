//! The webhook sink: endpoints registered by admins, a delivery per event
//! per matching endpoint, and one sending task per endpoint.
//!
//! - The fan-out task takes events from the outbox in order, writes a
//!   `webhook_deliveries` row for each endpoint that wants the event (type
//!   and restaurant filters), marks the rows fanned out, in one transaction,
//!   and wakes the endpoints' tasks. It never waits on a receiver.
//! - Each endpoint's task sends its oldest pending delivery, one at a time
//!   (so an endpoint sees one order's events in order), signed per Standard
//!   Webhooks, within `webhooks.timeout_ms`. A failure (no 2xx, a timeout, a
//!   refused connection) is retried after an exponential backoff with
//!   jitter; after `webhooks.max_attempts` the delivery is `failed` and the
//!   endpoint disabled. An endpoint's slowness costs only its own task:
//!   order transitions never wait on webhooks, and neither do other endpoints.
//! - Private networks: with `webhooks.allow_private` off (the default) an
//!   endpoint on a loopback, private, link-local or unique-local address is
//!   refused at registration (an IP literal) or at connection (a name that
//!   resolves to one: the client's resolver drops such addresses), and
//!   redirects are not followed.

use super::signing;
use super::store::{Attempt, Delivery, EventStore, NewWebhook, OutboxRow, Sink, Webhook};
use crate::settings::{EventSettings, WebhookSettings};
use actors::metrics as m;
use actors::store::{StoreError, StoreResult};
use chrono::Utc;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The handle the HTTP API uses. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    settings: WebhookSettings,
    client: reqwest::Client,
    workers: Mutex<HashMap<i64, Worker>>,
    shutdown: CancellationToken,
}

struct Worker {
    wake: Arc<Notify>,
    stop: CancellationToken,
}

/// Why a registration was refused (answered 400).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Url(String),
    #[error("at most {0} webhook endpoints; delete one first")]
    TooMany(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Webhooks {
    /// Starts a task per enabled endpoint and the fan-out task.
    pub async fn start(
        store: Arc<dyn EventStore>,
        settings: WebhookSettings,
        events: &EventSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Webhooks> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: settings.allow_private,
            }))
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms.min(5000)))
            .pool_max_idle_per_host(2)
            .user_agent(concat!("dispatchd-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let webhooks = Webhooks {
            inner: Arc::new(Inner {
                store: store.clone(),
                settings,
                client,
                workers: Mutex::new(HashMap::new()),
                shutdown: shutdown.clone(),
            }),
        };
        for hook in store.webhooks().await? {
            if hook.enabled() {
                webhooks.spawn_worker(hook.id);
            }
        }
        tokio::spawn(fan_out(
            webhooks.clone(),
            events.batch,
            Duration::from_millis(events.poll_ms),
        ));
        Ok(webhooks)
    }

    pub fn store(&self) -> &dyn EventStore {
        self.inner.store.as_ref()
    }

    pub async fn create(&self, new: NewWebhookInput) -> Result<(Webhook, String), Refused> {
        check_url(&new.url, self.inner.settings.allow_private).map_err(Refused::Url)?;
        if self.inner.store.webhooks().await?.len() >= self.inner.settings.max_endpoints {
            return Err(Refused::TooMany(self.inner.settings.max_endpoints));
        }
        let secret = signing::new_secret();
        let hook = self
            .inner
            .store
            .create_webhook(&NewWebhook {
                url: new.url,
                event_types: new.event_types,
                restaurant_id: new.restaurant_id,
                secret: secret.clone(),
            })
            .await?;
        self.spawn_worker(hook.id);
        Ok((hook, secret))
    }

    pub async fn delete(&self, id: i64) -> StoreResult<bool> {
        self.stop_worker(id);
        self.inner.store.delete_webhook(id).await
    }

    pub async fn set_enabled(&self, id: i64, enabled: bool) -> StoreResult<Option<Webhook>> {
        let hook = self
            .inner
            .store
            .set_webhook_enabled(id, enabled, Some("disabled by an admin"))
            .await?;
        if hook.is_some() {
            if enabled {
                self.spawn_worker(id);
            } else {
                self.stop_worker(id);
            }
        }
        Ok(hook)
    }

    pub async fn replay(&self, id: i64, delivery_id: i64) -> StoreResult<Option<Delivery>> {
        let delivery = self.inner.store.replay_delivery(id, delivery_id).await?;
        if delivery.is_some() {
            self.wake(id);
        }
        Ok(delivery)
    }

    fn wake(&self, id: i64) {
        if let Some(worker) = self.workers().get(&id) {
            worker.wake.notify_one();
        }
    }

    fn workers(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Worker>> {
        // A panic while holding this lock leaves a plain map behind.
        self.inner
            .workers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn_worker(&self, id: i64) {
        let mut workers = self.workers();
        if workers.contains_key(&id) {
            return;
        }
        let wake = Arc::new(Notify::new());
        let stop = self.inner.shutdown.child_token();
        workers.insert(
            id,
            Worker {
                wake: wake.clone(),
                stop: stop.clone(),
            },
        );
        tokio::spawn(deliver(self.clone(), id, wake, stop));
    }

    fn stop_worker(&self, id: i64) {
        if let Some(worker) = self.workers().remove(&id) {
            worker.stop.cancel();
        }
    }
}

/// A registration as the API parsed it.
#[derive(Debug, Clone)]
pub struct NewWebhookInput {
    pub url: String,
    pub event_types: Vec<String>,
    pub restaurant_id: Option<i64>,
}

/// Takes events from the outbox and queues their deliveries.
async fn fan_out(webhooks: Webhooks, batch: i64, poll: Duration) {
    let inner = &webhooks.inner;
    let mut signal = inner.store.outbox_signal();
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        match fan_out_batch(&webhooks, batch).await {
            Ok(0) => {
                if !super::wait_for_events(&mut signal, poll, &inner.shutdown).await {
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "Webhook fan-out failed; retrying");
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// One batch of the fan-out; answers how many events it took.
async fn fan_out_batch(webhooks: &Webhooks, batch: i64) -> StoreResult<usize> {
    let store = webhooks.inner.store.as_ref();
    let rows: Vec<OutboxRow> = store.outbox_pending(Sink::Webhooks, batch).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut hooks: Vec<Webhook> = store
        .webhooks()
        .await?
        .into_iter()
        .filter(Webhook::enabled)
        .collect();
    let mut deliveries = Vec::new();
    let mut woken = Vec::new();
    let max_pending = webhooks.inner.settings.max_pending;
    for hook in &mut hooks {
        let wanted: Vec<usize> = rows
            .iter()
            .enumerate()
            .filter(|(_, row)| hook.wants(&row.event_type, row.restaurant_id))
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let pending = store.pending_deliveries(hook.id).await?;
        if pending + wanted.len() as i64 > max_pending {
            let reason = format!("over {max_pending} deliveries waiting");
            store
                .set_webhook_enabled(hook.id, false, Some(&reason))
                .await?;
            webhooks.stop_worker(hook.id);
            metrics::counter!(m::WEBHOOKS_DISABLED_TOTAL, "reason" => "backlog").increment(1);
            tracing::warn!(webhook = hook.id, url = %hook.url, pending, "Webhook disabled: too many deliveries waiting");
            continue;
        }
        deliveries.extend(wanted.into_iter().map(|i| (hook.id, i)));
        woken.push(hook.id);
    }
    store.outbox_fan_out(&rows, &deliveries).await?;
    metrics::counter!(m::EVENTS_PUBLISHED_TOTAL, "sink" => "webhooks").increment(rows.len() as u64);
    for id in woken {
        webhooks.wake(id);
    }
    Ok(rows.len())
}

/// One endpoint's task: sends its pending deliveries, oldest first.
async fn deliver(webhooks: Webhooks, id: i64, wake: Arc<Notify>, stop: CancellationToken) {
    let inner = &webhooks.inner;
    let idle = Duration::from_secs(30);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let hook = match inner.store.webhook(id).await {
            Ok(Some(hook)) if hook.enabled() => hook,
            Ok(_) => {
                // Deleted or disabled meanwhile.
                webhooks.workers().remove(&id);
                return;
            }
            Err(_) => {
                if !nap(&stop, &wake, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        let next = match inner.store.next_delivery(id).await {
            Ok(next) => next,
            Err(_) => {
                if !nap(&stop, &wake, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        let Some(delivery) = next else {
            if !nap(&stop, &wake, idle).await {
                return;
            }
            continue;
        };
        let wait = (delivery.next_attempt_at - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            if !nap(&stop, &wake, wait.min(idle)).await {
                return;
            }
            continue;
        }
        let started = Instant::now();
        let outcome = send(
            &inner.client,
            &hook,
            &delivery,
            inner.settings.allow_private,
        )
        .await;
        metrics::histogram!(m::WEBHOOK_ATTEMPT_DURATION_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let attempt_no = delivery.attempts + 1;
        let attempt = match outcome {
            Ok(status) => Attempt::Delivered { status },
            Err((status, error)) if attempt_no >= inner.settings.max_attempts => {
                Attempt::GaveUp { status, error }
            }
            Err((status, error)) => Attempt::Failed {
                status,
                error,
                retry_at: Utc::now()
                    + backoff(
                        attempt_no,
                        Duration::from_millis(inner.settings.retry_base_ms),
                        Duration::from_secs(inner.settings.retry_max_secs),
                        rand::random::<f64>(),
                    ),
            },
        };
        let result = match &attempt {
            Attempt::Delivered { .. } => "delivered",
            Attempt::Failed { .. } => "failed",
            Attempt::GaveUp { .. } => "gave_up",
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS_TOTAL, "result" => result).increment(1);
        if let Err(error) = inner.store.record_attempt(&delivery, &attempt).await {
            // Not recorded: the same delivery is tried again (at least once).
            tracing::warn!(%error, webhook = id, "Could not record a webhook attempt");
            if !nap(&stop, &wake, Duration::from_secs(1)).await {
                return;
            }
            continue;
        }
        if let Attempt::GaveUp { error, .. } = &attempt {
            metrics::counter!(m::WEBHOOKS_DISABLED_TOTAL, "reason" => "failures").increment(1);
            tracing::warn!(webhook = id, url = %hook.url, event = %delivery.event_id, attempts = attempt_no, %error, "Webhook disabled after repeated failures");
            webhooks.workers().remove(&id);
            return;
        }
    }
}

/// Waits for `wait`, a wake-up or the stop; false on stop.
async fn nap(stop: &CancellationToken, wake: &Notify, wait: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = wake.notified() => true,
        _ = tokio::time::sleep(wait) => true,
    }
}

/// Sends one delivery; the receiver's status on success, else the status
/// (if any) and what went wrong.
async fn send(
    client: &reqwest::Client,
    hook: &Webhook,
    delivery: &Delivery,
    allow_private: bool,
) -> Result<i32, (Option<i32>, String)> {
    // Checked again here: an IP literal never reaches the resolver.
    check_url(&hook.url, allow_private).map_err(|e| (None, e))?;
    let timestamp = Utc::now().timestamp();
    let signature = signing::sign(
        &hook.secret,
        &delivery.event_id,
        timestamp,
        delivery.payload.as_bytes(),
    );
    let response = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", format!("v1,{signature}"))
        .body(delivery.payload.clone())
        .send()
        .await
        .map_err(|e| (None, describe(&e)))?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16() as i32)
    } else {
        Err((
            Some(status.as_u16() as i32),
            format!("answered {}", status.as_u16()),
        ))
    }
}

fn describe(error: &reqwest::Error) -> String {
    use std::error::Error;
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // The innermost cause says why (refused, a private address, ...).
    let mut cause: &dyn Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    format!("{kind}: {cause}")
}

/// The wait before attempt `attempt + 1`: `base x 2^(attempt-1)`, at most
/// `max`, half of it fixed and half scaled by `jitter` in [0, 1).
pub fn backoff(attempt: i32, base: Duration, max: Duration, jitter: f64) -> chrono::Duration {
    let exp = base
        .saturating_mul(1u32 << (attempt - 1).clamp(0, 30) as u32)
        .min(max);
    let wait = exp / 2 + exp.mul_f64(jitter.clamp(0.0, 1.0) / 2.0);
    chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(1))
}

/// Only http(s) URLs with a host; with `allow_private` off, no IP literal
/// of a private network and no `localhost`.
pub fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("no credentials in the URL".into());
    }
    let Some(host) = url.host_str() else {
        return Err("the URL has no host".into());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let private = match host.parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => {
            let name = host.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if private && !allow_private {
        return Err(
            "the URL points at a loopback or private network (webhooks.allow_private is off)"
                .into(),
        );
    }
    Ok(url)
}

/// Loopback, private, link-local, shared, unique-local or unspecified.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = ip.segments()[0];
            ip.is_loopback()
                || ip.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The webhook client's resolver: the system's, minus private addresses
/// unless they are allowed, so a public name cannot lead into the
/// engine's own network.
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || !is_private(a.ip()))
                .collect();
            if kept.is_empty() {
                return Err(format!(
                    "{} resolves to no public address (webhooks.allow_private is off)",
                    name.as_str()
                )
                .into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let base = Duration::from_secs(5);
        let max = Duration::from_secs(3600);
        let secs = |attempt, jitter| backoff(attempt, base, max, jitter).num_milliseconds();
        assert_eq!(secs(1, 0.0), 2_500);
        assert_eq!(secs(1, 0.999_999), 4_999);
        assert_eq!(secs(2, 0.0), 5_000);
        assert_eq!(secs(3, 0.5), 15_000);
        assert_eq!(secs(20, 0.0), 1_800_000);
        assert_eq!(secs(500, 1.0), 3_600_000);
        // The default schedule (15 attempts) retries for hours: 14 waits
        // of 3 to 5.4 hours in all, about 4 on average.
        let total: i64 = (1..15).map(|a| secs(a, 0.5)).sum();
        assert!(total > 4 * 3_600_000, "{total}");
    }

    #[test]
    fn only_public_http_urls_pass_unless_private_ones_are_allowed() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("http://93.184.216.34:8080/", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "example.com",
            "https://u:p@example.com/",
        ] {
            assert!(check_url(bad, true).is_err(), "{bad}");
        }
        for private in [
            "http://127.0.0.1:9/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://localhost:8080/",
            "http://100.64.0.1/",
        ] {
            assert!(check_url(private, false).is_err(), "{private}");
            assert!(check_url(private, true).is_ok(), "{private}");
        }
    }
}
