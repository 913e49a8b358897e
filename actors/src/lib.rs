//! The domain of dispatchd and the actors that drive it. No HTTP, no SQL.
//!
//! **[`domain`]: the pure core.** Records, rules and policies as plain
//! types and functions, unit-tested without actors, clocks or I/O.
//! - [`domain::model`]: the records (users, restaurants, orders, events), in
//!   the client-facing shapes of CONTRACT.md.
//! - [`domain::input`]: client input parsed into values that are valid by
//!   construction, with every failing field reported.
//! - [`domain::lifecycle`]: the order state machine and who may take each action.
//! - [`domain::quote`]: placing an order: open, in range, on the menu, priced.
//! - [`domain::pricing`]: integer-cent pricing with the service fee.
//! - [`domain::eta`]: when the food is ready and the order delivered.
//! - [`domain::geo`]: great-circle distance; [`domain::geo_index`]: the
//!   R-tree of drivers.
//! - [`domain::dispatch`]: the cost of a pairing, a round's minimum-cost
//!   assignment and its solver.
//!
//! **[`engine`]: the actors** (ractor), supervised, each reached only
//! through a handle that owns its messages; the module's own page draws the
//! actor tree.
//!
//! **The boundaries** (API Boundary in the architecture notes):
//! - [`store`]: the `Store` port the actors persist through; `dispatchd`
//!   implements it on Postgres and SQLite.
//! - [`wire`]: the WebSocket protocol, every message and the codec; nothing
//!   else parses or builds socket JSON.
//! - [`metrics`]: every metric name, described once.
//!
//! Architecture invariants: `domain` imports nothing outside `domain`; only
//! an order actor writes its order; no actor but the order actor awaits the
//! store inside a handler.

pub mod domain;
pub mod engine;
pub mod metrics;
pub mod store;
pub mod wire;
