//! Startup and shutdown: bind, open the store, load demo data, respawn the
//! live orders, serve, and on SIGTERM / Ctrl-C stop accepting, let in-flight
//! requests and their store writes finish, stop the actors, flush the
//! writes they queued (moved ETAs, breadcrumbs), exit.

use crate::auth::Tokens;
use crate::http::{self, AppState};
use crate::settings::Settings;
use crate::store::{self, StoreOptions};
use crate::{demo, telemetry};
use actors::engine::Engine;
use actors::engine::breadcrumbs::{self, BreadcrumbOptions};
use actors::store::Store;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub demo: bool,
    pub listen: Option<String>,
    pub database_url: Option<String>,
}

pub fn store_options(settings: &Settings, database_url: Option<&str>) -> StoreOptions {
    StoreOptions {
        url: settings.database_url(database_url),
        max_connections: settings.database.max_connections,
        acquire_timeout: Duration::from_millis(settings.database.acquire_timeout_ms),
        statement_timeout: Duration::from_millis(settings.database.statement_timeout_ms),
    }
}

/// Runs the engine until a shutdown signal.
pub async fn serve(settings: Settings, options: ServeOptions) -> anyhow::Result<()> {
    settings.check_secrets(options.demo)?;
    settings.check_cluster_store(&settings.database_url(options.database_url.as_deref()))?;
    let listen = options
        .listen
        .clone()
        .unwrap_or_else(|| settings.server.listen.clone());
    let listener = TcpListener::bind(&listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    // The contract's first line: on stdout for scripts, and as the first log line.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!("listening on http://{addr}");

    let metrics = telemetry::init_metrics()?;
    // Cluster mode: the membership exists before the store, which fences
    // every order write with it; it joins once the rest is up.
    let cluster = settings.cluster.enabled().then(|| {
        crate::cluster::Cluster::new(crate::cluster::ClusterOptions::from_settings(
            &settings.cluster,
        ))
    });
    let fencing = cluster
        .clone()
        .map(|c| Arc::new(c) as Arc<dyn store::OrderFencing>);
    let store::Stores {
        store,
        events: event_store,
        zones: zone_store,
        region_owners,
    } = store::open_all(
        &store_options(&settings, options.database_url.as_deref()),
        fencing,
    )
    .await?;
    if options.demo {
        if demo::load(store.as_ref()).await? {
            tracing::info!(restaurants = demo::restaurant_count(), "Demo data loaded");
        } else {
            tracing::info!("Store is not empty; demo data not loaded");
        }
    }

    let (crumbs, crumbs_flush) = breadcrumbs::start(
        store.clone(),
        BreadcrumbOptions {
            capacity: settings.breadcrumbs.queue,
            batch: settings.breadcrumbs.batch,
            flush_every: Duration::from_millis(settings.breadcrumbs.flush_ms),
            every: Duration::from_millis(settings.breadcrumbs.every_ms),
        },
    );
    let engine = Engine::start(store.clone(), crumbs, settings.engine()).await?;
    // Cluster mode: this node runs only the orders of the regions it
    // holds, none yet; they are loaded as it claims them.
    if let Some(cluster) = &cluster {
        engine.orders().partition_by(Arc::new(cluster.clone()));
    }
    let recovery_started = std::time::Instant::now();
    let recovered = engine.orders().recover().await?;
    tracing::info!(
        orders = recovered,
        millis = recovery_started.elapsed().as_millis() as u64,
        "Live orders recovered"
    );

    let secret = if settings.auth.jwt_secret.is_empty() {
        tracing::warn!(
            "auth.jwt_secret is not set: using a random key; tokens will not survive a restart"
        );
        uuid::Uuid::new_v4().to_string() + &uuid::Uuid::new_v4().to_string()
    } else {
        settings.auth.jwt_secret.clone()
    };
    let tokens = Tokens::new(secret.as_bytes(), settings.auth.token_ttl_secs);
    let shutdown = CancellationToken::new();
    // Events out: the outbox's sinks. They only read what committed, so
    // they may start after recovery without missing anything.
    // The process's one NATS connection, for the events stream and the cluster.
    let nats = match settings.nats_url() {
        Some(url) => Some(crate::nats::connect(url).await?),
        None => None,
    };
    crate::events::start(
        event_store.clone(),
        &settings.events,
        nats.clone(),
        shutdown.clone(),
    )
    .await?;
    let event_store_for_zones = event_store.clone();
    let webhooks = crate::events::webhooks::Webhooks::start(
        event_store,
        settings.webhooks.clone(),
        &settings.events,
        shutdown.clone(),
    )
    .await?;
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    let state = AppState::new(
        store.clone(),
        engine.clone(),
        tokens,
        settings.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .with_webhooks(webhooks)
    .with_zones(
        crate::zones::Zones::load(zone_store)
            .await?
            .with_driver_events(event_store_for_zones, shutdown.clone()),
    );

    // Cluster mode: join, claim regions, renew; hand them over at shutdown.
    let (state, cluster_task) = match (&nats, cluster, region_owners) {
        (Some(client), Some(cluster), Some(owners)) => {
            // Before any order actor starts: every feed publishes to it.
            engine
                .orders()
                .publish_to(Arc::new(crate::cluster::watch::NatsOrderBus::start(
                    client.clone(),
                    cluster.bucket(),
                    settings.cluster.max_watched_orders,
                    Duration::from_millis(settings.cluster.watch_timeout_ms),
                )));
            // Tablets on any node hear their restaurant's orders.
            engine.restaurant_feeds().publish_to(Arc::new(
                crate::cluster::restaurants::NatsRestaurantBus::start(
                    client.clone(),
                    cluster.bucket(),
                    cluster.node_id(),
                    engine.restaurant_feeds().clone(),
                ),
            ));
            // Before any driver connects: every driver actor mirrors itself
            // to the owners around it, and answers to offers relayed here
            // go back to their node.
            let link = crate::cluster::drivers::DriverLink::start(
                client.clone(),
                &cluster,
                engine.drivers().clone(),
                engine.dispatch().clone(),
                store.clone(),
                engine.orders().clone(),
                crate::cluster::drivers::LinkSettings {
                    margin_km: if settings.cluster.geo_margin_km > 0.0 {
                        settings.cluster.geo_margin_km
                    } else {
                        settings.dispatch.max_radius_km
                    },
                    offer_timeout: std::time::Duration::from_secs(
                        settings.dispatch.offer_timeout_secs,
                    ),
                },
            );
            engine.drivers().link(Arc::new(link.clone()));
            engine.dispatch().relay_through(Arc::new(link.clone()));
            cluster.link_drivers(link);
            crate::cluster::follow_regions(
                &cluster,
                engine.orders().clone(),
                store.clone(),
                shutdown.clone(),
            );
            let task = cluster.start(client.clone(), store.clone(), owners, shutdown.clone());
            (state.with_cluster(cluster), Some(task))
        }
        _ => (state, None),
    };
    let sessions = state.live_sessions.clone();
    spawn_housekeeping(store, state.clone(), shutdown.clone());
    tokio::spawn(wait_for_signal(shutdown.clone()));

    // Said on stdout too: this is what a newcomer running the demo reads.
    println!(
        "operator console: http://{addr}/  (sign in as admin@demo.local / demo-pass with --demo)"
    );
    if options.demo {
        tracing::info!(
            "Demo accounts: admin@demo.local, customer1..20@demo.local, driver1..50@demo.local, restaurant1..30@demo.local (password {})",
            demo::PASSWORD
        );
    }
    tracing::info!(console = %format!("http://{addr}/"), api = %format!("http://{addr}/api"), "Ready");

    let limits = http::serve::Limits {
        max_connections: settings.server.max_connections,
        header_read_timeout: Duration::from_secs(settings.server.header_read_timeout_secs),
        max_header_bytes: settings.server.max_header_bytes,
    };
    let server = tokio::spawn(http::serve::serve(
        listener,
        http::router(state),
        limits,
        shutdown.clone(),
    ));
    let gave_up = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = engine.gave_up() => {
            // The engine stopped itself; stop serving too, and say so in the
            // exit status for the process's own supervisor.
            shutdown.cancel();
            true
        }
    };
    tracing::info!(
        grace_secs = grace.as_secs(),
        "Shutting down: finishing in-flight requests"
    );
    // One budget for the whole stop: requests, then the queued writes.
    let deadline = tokio::time::Instant::now() + grace;
    match tokio::time::timeout_at(deadline, server).await {
        Ok(Ok(())) => tracing::info!("In-flight requests finished"),
        Ok(Err(error)) => tracing::error!(%error, "Server task failed"),
        Err(_) => tracing::warn!("Grace period over; dropping the remaining connections"),
    }
    // The leases were handed over on the same signal; wait for the deletes.
    if let Some(task) = cluster_task
        && tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
    {
        tracing::warn!("Cluster leases not all handed over in time; they will lapse");
    }
    // Sockets were told to close with 1001 by the same signal; give their
    // writers a moment to get the frame out.
    sessions.close();
    if tokio::time::timeout(Duration::from_secs(3), sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("Some WebSocket sessions did not close in time");
    }
    engine.stop();
    // What the actors left queued for the store (moved ETAs, breadcrumbs)
    // is written before exit, within what is left of the grace period.
    // At least a second, so a grace spent on slow requests does not lose
    // writes that take milliseconds.
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    let (etas, trails) = tokio::join!(engine.flush_writes(left), crumbs_flush.flush(left));
    if etas && trails {
        tracing::info!("Queued store writes flushed");
    } else {
        tracing::warn!(
            etas,
            breadcrumbs = trails,
            "Grace period over; some queued store writes were not flushed"
        );
    }
    if gave_up {
        anyhow::bail!("a core actor kept failing; the engine stopped (see the log above)");
    }
    tracing::info!("Stopped");
    Ok(())
}

/// Periodic chores: drain histogram buffers for the exporter, forget rate
/// limit keys of the past, cancel orders left PLACED too long, and drop
/// idempotency records past their retention.
fn spawn_housekeeping(store: Arc<dyn Store>, state: AppState, shutdown: CancellationToken) {
    let retention =
        chrono::Duration::hours(state.settings.orders.idempotency_retention_hours as i64);
    let expiry = Duration::from_secs(state.settings.orders.placed_expiry_secs);
    tokio::spawn(async move {
        let mut upkeep = tokio::time::interval(Duration::from_secs(5));
        let mut purge = tokio::time::interval(Duration::from_secs(3600));
        let mut sweep = tokio::time::interval(
            (expiry / 4).clamp(Duration::from_millis(500), Duration::from_secs(30)),
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = upkeep.tick() => {
                    state.metrics.run_upkeep();
                    state.login_limits.trim();
                    state.location_limiter.retain_recent();
                    state.order_limiter.retain_recent();
                    crate::telemetry::record_process_memory();
                }
                _ = sweep.tick() => expire_placed_orders(&state, expiry).await,
                _ = purge.tick() => {
                    match store.purge_idempotency_keys(chrono::Utc::now() - retention).await {
                        Ok(n) => metrics::counter!(actors::metrics::IDEMPOTENCY_KEYS_PURGED_TOTAL).increment(n),
                        Err(error) => tracing::warn!(%error, "Idempotency purge failed"),
                    }
                }
            }
        }
    });
}

/// Orders no restaurant confirmed within `orders.placed_expiry_secs` are
/// cancelled by the engine itself (an admin caller with user id 0, so the
/// event says who), at their version: a confirm that lands first wins.
async fn expire_placed_orders(state: &AppState, expiry: Duration) {
    const PER_SWEEP: i64 = 500;
    let Ok(expiry) = chrono::Duration::from_std(expiry) else {
        return;
    };
    let stale = match state
        .store
        .stale_placed_orders(chrono::Utc::now() - expiry, PER_SWEEP)
        .await
    {
        Ok(stale) => stale,
        Err(error) => {
            tracing::warn!(%error, "Could not look for expired orders");
            return;
        }
    };
    let engine = actors::domain::model::Caller {
        user_id: 0,
        role: actors::domain::model::Role::Admin,
        restaurant_id: None,
        driver_id: None,
    };
    for (order_id, version) in stale {
        let command = actors::engine::order::TransitionCommand {
            caller: engine,
            action: actors::domain::lifecycle::Action::Cancel,
            expected_version: Some(version),
            reason: Some("expired: not confirmed in time".into()),
        };
        match state.engine.orders().transition(order_id, command).await {
            Ok(_) => {
                metrics::counter!(actors::metrics::ORDERS_EXPIRED_TOTAL).increment(1);
                tracing::info!(order_id, "Order expired unconfirmed");
            }
            Err(error) => tracing::debug!(order_id, %error, "Order not expired"),
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
    tracing::info!("Shutdown signal received");
    shutdown.cancel();
}
