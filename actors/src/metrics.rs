//! Every metric name dispatchd exports, in one place (STYLE.md, after
//! vector): `dispatch_<noun>_<unit>`, counters end in `_total`, durations are
//! histograms in seconds, labels are low-cardinality codes.

pub const HTTP_REQUESTS_TOTAL: &str = "dispatch_http_requests_total";
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "dispatch_http_request_duration_seconds";
pub const ORDERS_CREATED_TOTAL: &str = "dispatch_orders_created_total";
pub const ORDERS_REPLAYED_TOTAL: &str = "dispatch_orders_idempotent_replays_total";
pub const ORDER_TRANSITIONS_TOTAL: &str = "dispatch_order_transitions_total";
pub const ORDER_TRANSITIONS_REFUSED_TOTAL: &str = "dispatch_order_transitions_refused_total";
pub const ORDERS_ACTIVE: &str = "dispatch_orders_active";
pub const ORDER_ACTORS: &str = "dispatch_order_actors";
pub const STORE_WRITE_DURATION_SECONDS: &str = "dispatch_store_write_duration_seconds";
pub const STORE_ERRORS_TOTAL: &str = "dispatch_store_errors_total";
pub const LOGIN_FAILURES_TOTAL: &str = "dispatch_login_failures_total";
pub const RATE_LIMITED_TOTAL: &str = "dispatch_rate_limited_total";
pub const IDEMPOTENCY_KEYS_PURGED_TOTAL: &str = "dispatch_idempotency_keys_purged_total";

/// Registers the help text of every metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by route and status."
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
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused by a rate limit, by limit."
    );
    describe_counter!(
        IDEMPOTENCY_KEYS_PURGED_TOTAL,
        "Expired idempotency records removed."
    );
}
