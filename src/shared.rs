//! [`Shared`]: what every breaker of one client borrows from it (settings, stores, clock base,
//! id, the subscription flag, the event fan-out). It knows no breaker: the registry of breakers
//! lives in the client's handle (`registry.rs`).

use crate::client_config::ClientConfig;
use crate::events::Event;
use crate::store::{InProcessStore, RedisStore};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) redis: Option<RedisStore>,
    pub(crate) in_process: InProcessStore,
    pub(crate) base: Instant,
    /// This client's id: events caused by its script calls carry it.
    pub(crate) id: String,
    /// True while the subscription to `<prefix>:events` is live.
    pub(crate) subscribed: AtomicBool,
    /// False for a cluster, where one SCAN sees one node.
    pub(crate) can_scan: bool,
    /// Every event this client sees, of any breaker under the prefix.
    pub(crate) all_events: broadcast::Sender<Event>,
}

impl Shared {
    /// An in-memory client decides every call from its machine (whose clock may be fake), so its
    /// snapshots are never fresh.
    pub(crate) fn cache_ttl(&self) -> Duration {
        if self.redis.is_some() { self.config.cache_ttl } else { Duration::ZERO }
    }
}
