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

/// Where a breaker's state lives for the call at hand; every choice between Redis, the
/// in-process machine and the degraded mode starts from this one answer.
pub(crate) enum Store<'a> {
    /// Redis answers: it decides.
    Redis(&'a RedisStore),
    /// Redis is treated as down: calls follow the degraded mode and none waits on Redis, but
    /// flushes and operators' calls still try it (and report the outage).
    Down(&'a RedisStore),
    /// An in-memory client: the in-process machine is the store.
    InMemory,
}

impl Shared {
    /// Where calls are decided right now.
    pub(crate) fn store(&self) -> Store<'_> {
        match self.redis.as_ref() {
            None => Store::InMemory,
            Some(redis) if redis.is_down() => Store::Down(redis),
            Some(redis) => Store::Redis(redis),
        }
    }
}
