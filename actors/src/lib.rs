//! The domain of dispatchd and the actors that drive it. No HTTP, no SQL.
//!
//! - [`model`]: the records (users, restaurants, orders, events), in the
//!   client-facing shapes of CONTRACT.md.
//! - [`input`]: client input parsed into values that are valid by
//!   construction, with every failing field reported.
//! - [`lifecycle`]: the order state machine and who may take each action.
//! - [`pricing`]: integer-cent pricing with the service fee.
//! - [`geo`]: great-circle distance; [`eta`]: estimated delivery time.
//! - [`store`]: the `Store` port that the order actors persist through.
//! - [`order`]: one `OrderActor` per live order, their supervisor, and the
//!   `Orders` directory the gateway talks to; [`order_feed`]: each live
//!   order's watchers, shared with the actor of the driver carrying it so
//!   that positions reach them in one hop.
//! - [`metrics`]: every metric name, described once.

pub mod domain;
pub mod engine;
pub mod metrics;
pub mod store;
pub mod wire;
