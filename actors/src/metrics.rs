//! Every metric name dispatchd exports, in one place (STYLE.md, after
//! vector): `dispatch_<noun>_<unit>`, counters end in `_total`, durations are
//! histograms in seconds, labels are low-cardinality codes.

pub const HTTP_REQUESTS_TOTAL: &str = "dispatch_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "dispatch_http_request_duration_seconds";
pub const ORDERS_CREATED_TOTAL: &str = "dispatch_orders_created_total";
pub const ORDERS_REPLAYED_TOTAL: &str = "dispatch_orders_idempotent_replays_total";
pub const IDEMPOTENCY_IN_PROGRESS_TOTAL: &str = "dispatch_idempotency_in_progress_total";
pub const ORDER_TRANSITIONS_TOTAL: &str = "dispatch_order_transitions_total";
pub const ORDER_TRANSITIONS_REFUSED_TOTAL: &str = "dispatch_order_transitions_refused_total";
pub const ORDERS_ACTIVE: &str = "dispatch_orders_active";
pub const ORDER_ACTORS: &str = "dispatch_order_actors";
pub const STORE_WRITE_DURATION_SECONDS: &str = "dispatch_store_write_duration_seconds";
pub const STORE_ERRORS_TOTAL: &str = "dispatch_store_errors_total";
pub const LOGIN_FAILURES_TOTAL: &str = "dispatch_login_failures_total";
pub const LOGIN_LIMITER_KEYS: &str = "dispatch_login_limiter_keys";
pub const RATE_LIMITED_TOTAL: &str = "dispatch_rate_limited_total";
pub const ETA_WRITES_TOTAL: &str = "dispatch_eta_writes_total";
pub const ETA_WRITES_COALESCED_TOTAL: &str = "dispatch_eta_writes_coalesced_total";
pub const IDEMPOTENCY_KEYS_PURGED_TOTAL: &str = "dispatch_idempotency_keys_purged_total";
pub const DRIVER_EVENTS_FLAGGED_TOTAL: &str = "dispatch_driver_events_flagged_total";
pub const DRIVERS_APPROVED_TOTAL: &str = "dispatch_drivers_approved_total";
pub const ORDERS_EXPIRED_TOTAL: &str = "dispatch_orders_expired_total";
pub const HTTP_CONNECTIONS: &str = "dispatch_http_connections";
pub const HTTP_CONNECTIONS_REFUSED_TOTAL: &str = "dispatch_http_connections_refused_total";
pub const HTTP_REQUEST_TIMEOUTS_TOTAL: &str = "dispatch_http_request_timeouts_total";

// Events out (the outbox, JetStream, webhooks).
pub const OUTBOX_BACKLOG_EVENTS: &str = "dispatch_outbox_backlog_events";
pub const OUTBOX_OLDEST_AGE_SECONDS: &str = "dispatch_outbox_oldest_age_seconds";
pub const OUTBOX_DROPPED_TOTAL: &str = "dispatch_outbox_dropped_total";
pub const EVENTS_PUBLISHED_TOTAL: &str = "dispatch_events_published_total";
pub const NATS_CONNECTED: &str = "dispatch_nats_connected";
pub const NATS_PUBLISH_FAILURES_TOTAL: &str = "dispatch_nats_publish_failures_total";
pub const NATS_DUPLICATES_TOTAL: &str = "dispatch_nats_duplicates_total";
pub const WEBHOOK_ATTEMPTS_TOTAL: &str = "dispatch_webhook_attempts_total";
pub const WEBHOOK_ATTEMPT_DURATION_SECONDS: &str = "dispatch_webhook_attempt_duration_seconds";
pub const WEBHOOKS_DISABLED_TOTAL: &str = "dispatch_webhooks_disabled_total";
// Cluster mode (src/cluster).
pub const CLUSTER_REGIONS: &str = "dispatch_cluster_regions";
pub const CLUSTER_REGIONS_OWNED: &str = "dispatch_cluster_regions_owned";
pub const CLUSTER_NODES: &str = "dispatch_cluster_nodes";
pub const CLUSTER_LEASE_CLAIMS_TOTAL: &str = "dispatch_cluster_lease_claims_total";
pub const CLUSTER_LEASE_RENEWALS_TOTAL: &str = "dispatch_cluster_lease_renewals_total";
pub const CLUSTER_LEASE_LOSSES_TOTAL: &str = "dispatch_cluster_lease_losses_total";
pub const CLUSTER_LEASE_HANDOVERS_TOTAL: &str = "dispatch_cluster_lease_handovers_total";
pub const CLUSTER_FAILOVERS_TOTAL: &str = "dispatch_cluster_failovers_total";
pub const CLUSTER_BUS_MESSAGES_TOTAL: &str = "dispatch_cluster_bus_messages_total";
pub const CLUSTER_FENCED_WRITES_TOTAL: &str = "dispatch_cluster_fenced_writes_total";
pub const CLUSTER_ORDERS_LOADED_TOTAL: &str = "dispatch_cluster_orders_loaded_total";
pub const CLUSTER_FORWARDED_COMMANDS_TOTAL: &str = "dispatch_cluster_forwarded_commands_total";
pub const CLUSTER_FORWARD_DURATION_SECONDS: &str = "dispatch_cluster_forward_duration_seconds";
pub const CLUSTER_FORWARDED_COMMANDS_SERVED_TOTAL: &str =
    "dispatch_cluster_forwarded_commands_served_total";
pub const CLUSTER_ORDERS_RELEASED_TOTAL: &str = "dispatch_cluster_orders_released_total";
pub const CLUSTER_ORDER_BUS_MESSAGES_TOTAL: &str = "dispatch_cluster_order_bus_messages_total";
pub const CLUSTER_ORDER_BUS_DROPPED_TOTAL: &str = "dispatch_cluster_order_bus_dropped_total";
pub const CLUSTER_WATCHED_ORDERS: &str = "dispatch_cluster_watched_orders";
pub const CLUSTER_REMOTE_WATCHERS: &str = "dispatch_cluster_remote_watchers";
pub const CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL: &str = "dispatch_cluster_order_subscriptions_total";
pub const CLUSTER_FANOUT_LATENCY_SECONDS: &str = "dispatch_cluster_fanout_latency_seconds";
pub const CLUSTER_WATCHERS_MOVED_TOTAL: &str = "dispatch_cluster_watchers_moved_total";
pub const CLUSTER_ORDERS_READ_TOTAL: &str = "dispatch_cluster_orders_read_total";
pub const CLUSTER_RESTAURANT_BUS_MESSAGES_TOTAL: &str =
    "dispatch_cluster_restaurant_bus_messages_total";
pub const CLUSTER_ORDER_INTEREST: &str = "dispatch_cluster_order_interest";
pub const CLUSTER_INTEREST_MESSAGES_TOTAL: &str = "dispatch_cluster_interest_messages_total";
pub const CLUSTER_REMOTE_DRIVERS: &str = "dispatch_cluster_remote_drivers";
pub const CLUSTER_REMOTE_DRIVERS_REFUSED_TOTAL: &str =
    "dispatch_cluster_remote_drivers_refused_total";
pub const CLUSTER_GEO_MESSAGES_TOTAL: &str = "dispatch_cluster_geo_messages_total";
pub const CLUSTER_DRIVER_BUS_DROPPED_TOTAL: &str = "dispatch_cluster_driver_bus_dropped_total";
pub const NATS_SLOW_CONSUMER_TOTAL: &str = "dispatch_nats_slow_consumer_total";
pub const CLUSTER_DRIVER_COMMANDS_TOTAL: &str = "dispatch_cluster_driver_commands_total";
pub const CLUSTER_RELAYED_OFFERS: &str = "dispatch_cluster_relayed_offers";
pub const CLUSTER_LINKED_DRIVERS: &str = "dispatch_cluster_linked_drivers";
pub const ARRIVAL_EVENTS_TOTAL: &str = "dispatch_arrival_events_total";
pub const ARRIVAL_REPEATS_SKIPPED_TOTAL: &str = "dispatch_arrival_repeats_skipped_total";
pub const ZONE_CROSSINGS_TOTAL: &str = "dispatch_zone_crossings_total";
pub const ZONE_CROSSINGS_DROPPED_TOTAL: &str = "dispatch_zone_crossings_dropped_total";

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by route and status."
    );
    describe_counter!(
        DRIVER_EVENTS_FLAGGED_TOTAL,
        "Pick-ups and deliveries by a driver farther than drivers.proximity_km from the place, or with no fix."
    );
    describe_counter!(
        DRIVERS_APPROVED_TOTAL,
        "Self-registered drivers an admin approved."
    );
    describe_counter!(
        ORDERS_EXPIRED_TOTAL,
        "Orders the engine cancelled because no restaurant confirmed them in time."
    );
    describe_gauge!(
        HTTP_CONNECTIONS,
        "Open client connections (HTTP and WebSocket)."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED_TOTAL,
        "Connections closed at accept because server.max_connections were open."
    );
    describe_counter!(
        HTTP_REQUEST_TIMEOUTS_TOTAL,
        "Requests answered 408 after server.request_timeout_secs."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "HTTP request latency, by route and status."
    );
    describe_counter!(
        ORDERS_CREATED_TOTAL,
        "Orders placed (not counting replays)."
    );
    describe_counter!(
        ORDERS_REPLAYED_TOTAL,
        "Order creations answered from an idempotency record."
    );
    describe_counter!(
        ETA_WRITES_TOTAL,
        "Background writes of moved ETAs, by result (written, stale: the order moved on, failed)."
    );
    describe_counter!(
        ETA_WRITES_COALESCED_TOTAL,
        "Moved ETAs replaced by a newer one before they were written."
    );
    describe_counter!(
        IDEMPOTENCY_IN_PROGRESS_TOTAL,
        "Order creations refused because the same key was still being processed."
    );
    describe_counter!(
        ORDER_TRANSITIONS_TOTAL,
        "Durable order transitions, by target status."
    );
    describe_counter!(
        ORDER_TRANSITIONS_REFUSED_TOTAL,
        "Order transitions refused before any write, by reason."
    );
    describe_gauge!(
        ORDERS_ACTIVE,
        "Orders by current status, counted by their live actors."
    );
    describe_gauge!(
        ORDER_ACTORS,
        "Live order actors (one per non-terminal order)."
    );
    describe_histogram!(
        STORE_WRITE_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of an order actor's transactional write."
    );
    describe_counter!(STORE_ERRORS_TOTAL, "Store calls that failed, by kind.");
    describe_counter!(
        LOGIN_FAILURES_TOTAL,
        "Logins refused for wrong credentials."
    );
    describe_gauge!(
        LOGIN_LIMITER_KEYS,
        "Keys (emails, client addresses, pairs) the login limits remember, after the last trim."
    );
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused by a rate limit, by limit."
    );
    describe_counter!(
        IDEMPOTENCY_KEYS_PURGED_TOTAL,
        "Expired idempotency records removed."
    );
}

pub const WS_CONNECTIONS: &str = "dispatch_ws_connections";
pub const WS_MESSAGES_IN_TOTAL: &str = "dispatch_ws_messages_in_total";
pub const WS_MESSAGES_OUT_TOTAL: &str = "dispatch_ws_messages_out_total";
pub const WS_COALESCED_TOTAL: &str = "dispatch_ws_location_coalesced_total";
pub const WS_DROPPED_TOTAL: &str = "dispatch_ws_messages_dropped_total";
pub const WS_SLOW_READER_CLOSES_TOTAL: &str = "dispatch_ws_slow_reader_closes_total";
pub const WS_CLOSES_TOTAL: &str = "dispatch_ws_closes_total";
pub const LOCATION_UPDATES_TOTAL: &str = "dispatch_location_updates_total";
pub const FANOUT_LATENCY_SECONDS: &str = "dispatch_fanout_latency_seconds";
pub const DRIVERS_ONLINE: &str = "dispatch_drivers_online";
pub const DRIVERS_AVAILABLE: &str = "dispatch_drivers_available";
pub const DRIVERS_WENT_STALE_TOTAL: &str = "dispatch_drivers_went_stale_total";
pub const GEO_UPDATES_COALESCED_TOTAL: &str = "dispatch_geo_updates_coalesced_total";
pub const BREADCRUMBS_WRITTEN_TOTAL: &str = "dispatch_breadcrumbs_written_total";
pub const BREADCRUMBS_DROPPED_TOTAL: &str = "dispatch_breadcrumbs_dropped_total";
pub const OFFERS_TOTAL: &str = "dispatch_offers_total";
pub const ASSIGN_SECONDS: &str = "dispatch_assign_seconds";
pub const DISPATCHABLE_ORDERS: &str = "dispatch_dispatchable_orders";
pub const DISPATCH_ROUND_SECONDS: &str = "dispatch_round_duration_seconds";
pub const HOPELESS_ORDERS_TOTAL: &str = "dispatch_hopeless_orders_total";
pub const BUNDLED_OFFERS_TOTAL: &str = "dispatch_bundled_offers_total";
pub const RADIUS_WIDENINGS_TOTAL: &str = "dispatch_radius_widenings_total";
pub const UNSERVED_JOBS: &str = "dispatch_unserved_jobs";
pub const BATCH_HELD_ORDERS: &str = "dispatch_batch_held_orders";
pub const ETA_UPDATES_TOTAL: &str = "dispatch_eta_updates_total";
pub const ACTOR_RESTARTS_TOTAL: &str = "dispatch_actor_restarts_total";
pub const CORE_ACTORS_DOWN: &str = "dispatch_core_actors_down";

/// Registers the help text of the real-time and dispatch metrics.
pub fn describe_realtime() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(WS_CONNECTIONS, "Open WebSocket sessions, by role.");
    describe_counter!(
        WS_MESSAGES_IN_TOTAL,
        "Client WebSocket messages received, by type."
    );
    describe_counter!(
        WS_MESSAGES_OUT_TOTAL,
        "Server WebSocket messages written, by type."
    );
    describe_counter!(
        WS_COALESCED_TOTAL,
        "Location frames replaced by a newer one before they were sent."
    );
    describe_counter!(
        WS_DROPPED_TOTAL,
        "Frames not sent because their session was closing, by reason."
    );
    describe_counter!(
        WS_SLOW_READER_CLOSES_TOTAL,
        "Sessions closed with 1013 because their reader fell behind."
    );
    describe_counter!(
        WS_CLOSES_TOTAL,
        "Sessions closed by the server, by close code."
    );
    describe_counter!(
        LOCATION_UPDATES_TOTAL,
        "Driver positions received, by source (ws, http)."
    );
    describe_histogram!(
        FANOUT_LATENCY_SECONDS,
        Unit::Seconds,
        "From a driver position entering the server to its frame written to a watcher's socket."
    );
    describe_gauge!(
        DRIVERS_ONLINE,
        "Drivers with a fresh position, in the geo index."
    );
    describe_gauge!(
        DRIVERS_AVAILABLE,
        "Online drivers that are not paused and below their order limit."
    );
    describe_counter!(
        DRIVERS_WENT_STALE_TOTAL,
        "Drivers taken out of the index for lack of positions."
    );
    describe_counter!(
        GEO_UPDATES_COALESCED_TOTAL,
        "Index updates replaced by a newer one of the same driver before the geo actor took them."
    );
    describe_counter!(
        BREADCRUMBS_WRITTEN_TOTAL,
        "Breadcrumb positions written to driver_locations."
    );
    describe_counter!(
        BREADCRUMBS_DROPPED_TOTAL,
        "Breadcrumb positions dropped because the writer was behind."
    );
    describe_counter!(
        OFFERS_TOTAL,
        "Offers by result (assigned, declined, expired, taken, void)."
    );
    describe_histogram!(
        ASSIGN_SECONDS,
        Unit::Seconds,
        "From CONFIRMED to a driver assigned."
    );
    describe_gauge!(
        DISPATCHABLE_ORDERS,
        "Confirmed orders waiting for a driver."
    );
    describe_histogram!(
        DISPATCH_ROUND_SECONDS,
        Unit::Seconds,
        "Duration of one dispatch round."
    );
    describe_counter!(
        HOPELESS_ORDERS_TOTAL,
        "Orders no driver could deliver within dispatch.max_click_to_door_mins any more (flagged once each)."
    );
    describe_counter!(
        BUNDLED_OFFERS_TOTAL,
        "Offers naming more than one order (one restaurant, one driver)."
    );
    describe_counter!(
        RADIUS_WIDENINGS_TOTAL,
        "Times an order's search radius was widened."
    );
    describe_gauge!(
        UNSERVED_JOBS,
        "Jobs (single orders or bundles) the last dispatch round left without a driver; at dispatch.peak_unserved_jobs or more the next round bundles with the peak gap."
    );
    describe_gauge!(
        BATCH_HELD_ORDERS,
        "Orders the last dispatch round held back by the batching window (alone at their restaurant, food far from ready), waiting for a second order to bundle with."
    );
    describe_counter!(
        ETA_UPDATES_TOTAL,
        "Estimated delivery times stored and pushed after moving past the threshold."
    );
    describe_counter!(
        ACTOR_RESTARTS_TOTAL,
        "Actors started again by their supervisor after a failure, by actor."
    );
    describe_gauge!(
        CORE_ACTORS_DOWN,
        "Core actors (geo, dispatcher, order and driver supervisors) not running right now."
    );
    describe_gauge!(
        OUTBOX_BACKLOG_EVENTS,
        "Committed events a sink (nats, webhooks) has not taken from the outbox yet."
    );
    describe_gauge!(
        OUTBOX_OLDEST_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest event a sink has not taken, by sink."
    );
    describe_counter!(
        OUTBOX_DROPPED_TOTAL,
        "Events dropped from the outbox before a sink took them (past events.max_age_secs or max_rows), by sink."
    );
    describe_counter!(
        EVENTS_PUBLISHED_TOTAL,
        "Events taken from the outbox by a sink (published to NATS, queued for webhooks)."
    );
    describe_gauge!(NATS_CONNECTED, "1 while the NATS connection is up.");
    describe_gauge!(
        CLUSTER_REGIONS,
        "Cluster mode: regions with a restaurant (the unit of ownership)."
    );
    describe_gauge!(
        CLUSTER_REGIONS_OWNED,
        "Cluster mode: regions this node holds a live lease on."
    );
    describe_gauge!(
        CLUSTER_NODES,
        "Cluster mode: live nodes this node sees (itself included)."
    );
    describe_counter!(
        CLUSTER_LEASE_CLAIMS_TOTAL,
        "Cluster mode: region leases claimed, by kind (free, failover: its last holder stopped renewing)."
    );
    describe_counter!(
        CLUSTER_LEASE_RENEWALS_TOTAL,
        "Cluster mode: lease renewals, by result (ok, failed)."
    );
    describe_counter!(
        CLUSTER_LEASE_LOSSES_TOTAL,
        "Cluster mode: leases lost, by reason (expired: not renewed before the local deadline; taken: another node holds it)."
    );
    describe_counter!(
        CLUSTER_LEASE_HANDOVERS_TOTAL,
        "Cluster mode: leases released for another node (rebalancing, graceful leave)."
    );
    describe_counter!(
        CLUSTER_FAILOVERS_TOTAL,
        "Cluster mode: regions this node took over from a node that stopped renewing."
    );
    describe_counter!(
        CLUSTER_FENCED_WRITES_TOTAL,
        "Cluster mode: order writes refused because this node does not hold the order's region, by stage (node: its own lease view; database: region_owners)."
    );
    describe_counter!(
        CLUSTER_FORWARDED_COMMANDS_TOTAL,
        "Cluster mode: commands this node forwarded to the owner of their order's region, by result (ok: the owner answered, whatever it answered; no_owner; timed_out; failed)."
    );
    describe_histogram!(
        CLUSTER_FORWARD_DURATION_SECONDS,
        Unit::Seconds,
        "Cluster mode: round trip of a forwarded command, from sending it to the owner's answer."
    );
    describe_counter!(
        CLUSTER_FORWARDED_COMMANDS_SERVED_TOTAL,
        "Cluster mode: commands another node forwarded to this one, as owner, and this one answered."
    );
    describe_counter!(
        CLUSTER_ORDERS_LOADED_TOTAL,
        "Cluster mode: live orders read from the store and started because this node claimed their region."
    );
    describe_counter!(
        CLUSTER_ORDERS_RELEASED_TOTAL,
        "Cluster mode: order actors stopped because their region went to another node."
    );
    describe_counter!(
        CLUSTER_ORDER_BUS_MESSAGES_TOTAL,
        "Cluster mode: frames on the order subjects (<bucket>.order.<id>.out), published (out) or received (in), by kind (update, location)."
    );
    describe_counter!(
        CLUSTER_ORDER_BUS_DROPPED_TOTAL,
        "Cluster mode: order frames not published (the publisher's bounded queue was full, or NATS refused), or not held for a watcher waiting for its snapshot, by kind."
    );
    describe_gauge!(
        CLUSTER_REMOTE_DRIVERS,
        "Cluster mode: drivers whose socket is on another node, in this node's geo index (their positions came over geo.<region>)."
    );
    describe_counter!(
        CLUSTER_REMOTE_DRIVERS_REFUSED_TOTAL,
        "Cluster mode: positions of drivers of other nodes not taken because this node already follows as many as it may."
    );
    describe_counter!(
        CLUSTER_GEO_MESSAGES_TOTAL,
        "Cluster mode: driver positions, availability changes and departures on geo.<region> subjects, by direction (out, in) and kind (position, availability, gone)."
    );
    describe_counter!(
        NATS_SLOW_CONSUMER_TOTAL,
        "Times a NATS subscription's bounded channel was full and messages for it were dropped (the bus brought them faster than this node took them)."
    );
    describe_counter!(
        CLUSTER_DRIVER_BUS_DROPPED_TOTAL,
        "Cluster mode: driver messages not published (the bounded queue was full, or NATS refused), by kind."
    );
    describe_counter!(
        CLUSTER_DRIVER_COMMANDS_TOTAL,
        "Cluster mode: messages on driver.<id>.cmd subjects, by kind (offer, tell, carry, release, respond) and result."
    );
    describe_gauge!(
        CLUSTER_RELAYED_OFFERS,
        "Cluster mode: offers of other nodes' dispatchers relayed to this node's drivers, remembered for their answers."
    );
    describe_gauge!(
        CLUSTER_LINKED_DRIVERS,
        "Cluster mode: this node's drivers subscribed to their driver.<id>.cmd subject (their positions reach other nodes)."
    );
    describe_gauge!(
        CLUSTER_WATCHED_ORDERS,
        "Cluster mode: orders run by other nodes that this node is subscribed to on the bus (one subscription each)."
    );
    describe_gauge!(
        CLUSTER_REMOTE_WATCHERS,
        "Cluster mode: local sessions watching orders run by other nodes."
    );
    describe_counter!(
        CLUSTER_ORDER_SUBSCRIPTIONS_TOTAL,
        "Cluster mode: bus subscriptions to an order's subject made (op=subscribe), ended (op=unsubscribe) or refused (op=refused_full, op=failed)."
    );
    describe_histogram!(
        CLUSTER_FANOUT_LATENCY_SECONDS,
        Unit::Seconds,
        "Cluster mode: from an order frame published on the owner's (or driver's) node to its fan-out into this node's outboxes, on the publisher's wall clock, by kind."
    );
    describe_counter!(
        CLUSTER_RESTAURANT_BUS_MESSAGES_TOTAL,
        "Cluster mode: restaurant feed frames on <bucket>.restaurant.<id>.out, published (out), heard from other nodes (in), or dropped (the publisher's bounded queue was full, or NATS refused)."
    );
    describe_gauge!(
        CLUSTER_ORDER_INTEREST,
        "Cluster mode: orders some node announced it watches (their positions are published on the bus; other orders' are not)."
    );
    describe_counter!(
        CLUSTER_INTEREST_MESSAGES_TOTAL,
        "Cluster mode: announcements on <bucket>.interest, sent (out) or heard (in), and orders not kept because the interest set was full (refused_full)."
    );
    describe_counter!(
        CLUSTER_WATCHERS_MOVED_TOTAL,
        "Cluster mode: sessions watching an order moved when its region changed hands, to the bus (this node stopped running it) or to its local feed (this node started running it)."
    );
    describe_counter!(
        CLUSTER_ORDERS_READ_TOTAL,
        "Cluster mode: non-terminal orders read from the store to load the regions this node claimed (only those regions' restaurants)."
    );
    describe_counter!(
        CLUSTER_BUS_MESSAGES_TOTAL,
        "Cluster mode: messages to (out) and from (in) the cluster's key-value bucket."
    );
    describe_counter!(
        NATS_PUBLISH_FAILURES_TOTAL,
        "JetStream publishes that failed or were not acknowledged in time (retried)."
    );
    describe_counter!(
        NATS_DUPLICATES_TOTAL,
        "Publishes JetStream acknowledged as duplicates of a Nats-Msg-Id it had."
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS_TOTAL,
        "Webhook delivery attempts, by result (delivered, failed, gave_up)."
    );
    describe_histogram!(
        WEBHOOK_ATTEMPT_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one webhook delivery attempt."
    );
    describe_counter!(
        ZONE_CROSSINGS_TOTAL,
        "Drivers entering or leaving a service zone, by kind (entered, left)."
    );
    describe_counter!(
        ZONE_CROSSINGS_DROPPED_TOTAL,
        "Zone crossings dropped because their writer was behind (or the store refused them)."
    );
    describe_counter!(
        ARRIVAL_EVENTS_TOTAL,
        "Arrival events recorded, by kind (driver_approaching, driver_arrived) and stop (restaurant, dropoff)."
    );
    describe_counter!(
        ARRIVAL_REPEATS_SKIPPED_TOTAL,
        "Arrival events not recorded again because the order's history already holds them (a geofence that started afresh after a restart)."
    );
    describe_counter!(
        WEBHOOKS_DISABLED_TOTAL,
        "Webhook endpoints disabled by the engine, by reason (failures, backlog)."
    );
}
