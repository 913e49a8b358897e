//! Integration tests: the real `dispatchd` binary, a fresh database per
//! test (Postgres with DISPATCHD_TEST_POSTGRES, SQLite otherwise), real HTTP.
//! One test binary, so the suite links once.

mod helpers;

mod auth;
mod cluster;
mod cluster_drivers;
mod cluster_gaps;
mod crash;
mod dispatch;
mod durability;
mod events;
mod hardening;
mod health;
mod idempotency;
mod observability;
mod openapi;
mod orders;
mod outage;
mod readers;
mod replay;
mod restaurants;
mod sim;
mod sim_nodes;
mod supervision;
mod tracking;
mod transitions;
mod ws;
mod zones;
