//! A circuit breaker whose state is shared, through Redis, by every process that names it.
//!
//! When a downstream fails, one trip opens the breaker for the whole fleet; on recovery only
//! `half_open_max_probes` leased probes, fleet-wide, test it. Every transition is one atomic Lua
//! script on Redis's own clock, and a healthy call is decided from a local snapshot without a
//! Redis command.
//!
//! ```
//! use redis_breaker::{Client, Config, Error};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Client::connect("redis://127.0.0.1:6379").await? shares the breaker through Redis;
//! // the in-memory client has the same semantics inside one process.
//! let client = Client::in_memory();
//! let payments = client.breaker("payments", Config::builder().failure_threshold(2).build()?)?;
//!
//! for _ in 0..2 {
//!     let r = payments.execute(|| async { Err::<(), _>("connection refused") }).await;
//!     assert!(matches!(r, Err(Error::Inner(_))));
//! }
//! match payments.execute(|| async { Ok::<_, &str>("paid") }).await {
//!     Err(Error::Rejected(r)) => println!("open; retry after {:?}", r.retry_after()),
//!     other => panic!("expected a rejection, got {other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! - Each breaker has a state hash, a probe-lease sorted set, a rolling-window hash and a
//!   metrics hash in Redis, all under one Redis Cluster hash tag: `breaker:{payments}:state`.
//! - `lua/acquire.lua`, `lua/record.lua` and `lua/control.lua` make every decision and
//!   transition atomically, reading `TIME` from Redis; they run as functions of one library
//!   loaded once (FCALL, Redis and Valkey >= 7.0, when the ACL allows it), else with EVALSHA
//!   ([`ClientConfig::functions`]). With the library, a failure that only counts goes alone as
//!   `lua/count.lua`, which writes exactly what `record.lua` would.
//! - Each process keeps a snapshot per breaker, fresh until the state's next deadline or for
//!   `subscribed_cache_ttl` (30s) while the event subscription that announces every transition
//!   is verified alive, else `cache_ttl` (1s); a fresh closed snapshot allows calls with no
//!   lock, allocation or await. Failures are recorded before `execute` returns; successes are
//!   counted locally and sent only as fast as something needs them (a rate rule's window every
//!   `flush_interval`, metrics every `metrics_interval`).
//! - When Redis is down or slow (every operation has an `op_timeout`), calls are decided by
//!   the [`Degraded`] mode: by default an in-process breaker with the same config.
//! - With a [quorum](ConfigBuilder::quorum), one process whose own calls fail (its own network
//!   path, a starved pod) opens for itself only and reports itself; the fleet opens when
//!   `quorum` processes did within the window.
//!
//! # Features
//!
//! | feature | adds |
//! |---|---|
//! | `cluster` | `Client::connect_cluster` for Redis Cluster |
//! | `tower` | `tower::BreakerLayer` and `tower::BreakerService` |
//! | `metrics` | counters and gauges through the `metrics` facade |
//! | `sentinel` | `Client::connect_sentinel`: the primary Redis Sentinel names, across failovers |
//! | `tls` | `rediss://` URLs and `Client::connect_tls` (rustls, no OpenSSL) |
//!
//! The `redis-breaker` command-line tool and its operator console are the crate
//! `redis-breaker-cli` of the same workspace.
//!
//! # Keys
//!
//! For a breaker `payments` under the default prefix: `breaker:{payments}:state` (HASH),
//! `breaker:{payments}:probes` (ZSET of leases), `breaker:{payments}:window` (HASH, rate rules
//! only), `breaker:{payments}:metrics` (HASH), `breaker:{payments}:history` (STREAM of the last
//! transitions), and under a quorum `breaker:{payments}:reporters` and `:processes` (ZSETs);
//! transitions on the channel `breaker:events`.
//! A missing state key means closed, so deleting keys is always safe. The README documents the
//! key schema, the semantics and the configuration in full.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(test)]
mod model_tests;

mod breaker;
mod client;
mod clock;
mod config;
pub mod duration;
mod error;
mod events;
mod machine;
mod meters;
pub mod name;
mod protocol;
mod quorum;
mod ramp;
mod state;
pub mod status;
mod store;
mod ticks;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

/// The README's Rust snippets, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The Rust snippets of `docs/usage.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/usage.md")]
struct UsageDoctests;

/// The Rust snippets of `docs/deployments.md`, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/deployments.md")]
struct DeploymentsDoctests;

/// The `redis` crate this one speaks (1.x): its connection types are what
/// [`Client::from_connection`] takes, and its errors are inside [`StoreError`]. Use this
/// re-export rather than a separate dependency, so both always agree.
pub use redis;

pub use breaker::Breaker;
pub use breaker::health::{Health, Snapshot, StoreStatus};
pub use breaker::permit::Permit;
pub use client::Client;
pub use clock::{Clock, FakeClock, SystemClock};
pub use config::client::{ClientConfig, ClientConfigBuilder, Degraded};
pub use config::{Config, ConfigBuilder};
pub use error::{ConfigError, Error, Rejected, StoreError, TimedOut};
pub use events::{Event, EventKind, Subscription};
pub use protocol::Outcome;
pub use ramp::Ramp;
pub use state::{State, UnknownState};
#[cfg(feature = "sentinel")]
pub use store::sentinel::SentinelOptions;
#[cfg(feature = "tls")]
pub use store::tls::TlsOptions;
