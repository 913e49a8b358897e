//! dispatchd: a real-time dispatch engine for food delivery.
//!
//! The domain and the actors live in the `actors` crate; this crate is the
//! process around them:
//!
//! - [`app`]: startup (bind, store, demo data, recovery) and graceful shutdown.
//! - [`settings`]: layered, typed configuration.
//! - [`http`]: the axum gateway, one router per resource, one error type.
//! - [`ws`]: the WebSocket gateway: a socket reader and writer per session.
//! - [`web`]: the pages served to people: console, tracking, tablet.
//! - [`auth`]: password hashes and JWTs.
//! - [`store`]: the `Store` port on sqlx, for Postgres and SQLite.
//! - [`events`]: events out: the outbox's sinks (JetStream, signed webhooks).
//! - [`nats`]: the process's one NATS connection.
//! - [`cluster`]: cluster mode: node heartbeats and region leases in JetStream.
//! - [`zones`]: service zones and the index the order check reads.
//! - [`demo`]: the demo city and accounts.
//! - [`telemetry`]: logs and the Prometheus recorder.
//! - [`sim`]: `dispatchd sim`, a city simulator that drives a running server.
//! - [`replay`]: `dispatchd replay`, a public meal-delivery benchmark instance
//!   replayed in simulated time through the engine's dispatch round.

pub mod app;
pub mod auth;
pub mod cluster;
pub mod demo;
pub mod events;
pub mod http;
pub mod nats;
pub mod replay;
pub mod settings;
pub mod sim;
pub mod store;
pub mod telemetry;
pub mod web;
pub mod ws;
pub mod zones;
