//! The library's integration tests, one module per area, in one binary: each module was a test
//! binary of its own, and the workspace's 21 test binaries (about 23 MB each, each linking the
//! library and its dependencies again) were what filled CI's disk. Every test starts its own
//! servers (a Redis unless `$REDIS_URL` names one, a cluster, Sentinels, a TLS server) and
//! names its breakers with `support::unique`, so the modules share a process, not state.
//!
//! Apart, each for a reason: `tests/multi_process.rs` (8 OS processes, no test harness) and
//! `tests/metrics.rs` (the `metrics` recorder is global and must be installed before the
//! process makes its first breaker).
//!
//! One area: `cargo test --all-features --test it quorum::`.

mod support;

#[cfg(feature = "cluster")]
mod cluster;
mod control_and_epochs;
mod degraded;
mod edges;
mod events;
mod failure_count;
mod faults;
mod fleet_scale;
mod half_open;
mod hostile_state;
mod keys_and_cost;
mod old_server;
mod quorum;
mod ramp;
#[cfg(feature = "sentinel")]
mod sentinel;
#[cfg(feature = "tls")]
mod tls;
#[cfg(feature = "tower")]
mod tower;
mod trip_rules;
