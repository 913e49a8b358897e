#!/usr/bin/env bash
# Slow and dead readers at scale (issue 11): thousands of subscribers of one
# tracked order that stop reading (no pongs, no close, a 4 KiB receive
# buffer) and a process holding more that is killed with SIGKILL, while the
# driver streams 20 positions a second to a watcher that reads. Runs
# tests/api/readers.rs against the release server (keepalive: ping every
# 1 s, dead after 3 s) and prints its report line: the server's RSS from
# /proc before, with all open, at peak and after; how long until every
# dead socket was dropped; the watcher's positions and fan-out p99 before
# and during. Postgres when DISPATCHD_TEST_POSTGRES is set, else SQLite.
#
#   bash benches/load/readers.sh [stalled, default 3000] [killed, default 1000] [secs, default 15]
#   DISPATCHD_BIN=path/to/dispatchd  (default target/release/dispatchd, built if missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${DISPATCHD_BIN:-target/release/dispatchd}
if [ ! -x "$BIN" ]; then nice -n 10 cargo build --release --quiet --bin dispatchd; fi
ulimit -n 65536 2>/dev/null || true
DISPATCHD_TEST_BIN=$(realpath "$BIN") \
  DISPATCHD_READERS_STALLED=${1:-3000} DISPATCHD_READERS_KILLED=${2:-1000} DISPATCHD_READERS_SECS=${3:-15} \
  RUST_BACKTRACE=0 cargo test --quiet --test api readers::stalled -- --nocapture 2>&1 |
  grep -E "^readers:|test result|panicked|assert" || true
