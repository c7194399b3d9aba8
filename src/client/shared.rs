//! [`Shared`]: what every breaker of one client borrows from it (settings, the store, the
//! in-process breaker, clock base, id, the subscription flag, the event fan-out). It knows no breaker: the registry of breakers
//! lives in the client's handle (`registry.rs`).

use crate::config::client::ClientConfig;
use crate::events::Event;
use crate::store::{InProcessStore, Store};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// What every breaker of one client borrows from it.
pub(crate) struct Shared {
    /// The client-wide settings.
    pub(crate) config: ClientConfig,
    /// Where the breakers keep their state: ask it, never which store it is.
    pub(crate) store: Store,
    /// The in-process breaker (one machine per name, on the client's clock): what decides calls
    /// in the degraded mode `Local`, and an in-memory client's store.
    pub(crate) in_process: Arc<InProcessStore>,
    /// The instant the client was made: times are kept as nanoseconds since it.
    pub(crate) base: Instant,
    /// This client's id: events caused by its script calls carry it.
    pub(crate) id: String,
    /// This client's identity for a quorum (`ClientConfig::reporter_id`): processes with one
    /// identity report, and count as active, as one.
    pub(crate) reporter: String,
    /// While the subscription to `<prefix>:events` is live: 1 + the nanoseconds since `base`
    /// at which it was made; 0 while there is none.
    pub(crate) subscribed_since: AtomicU64,
    /// Sharded events (Redis Cluster with SSUBSCRIBE): each breaker's channel is subscribed on
    /// its own, and a breaker's long bound also needs its channel confirmed: name -> 1 + the
    /// nanoseconds since `base` at which it was.
    pub(crate) shard_channels: Mutex<Option<HashMap<String, u64>>>,
    /// Woken when a breaker is made (sharded events subscribe its channel at once).
    pub(crate) breaker_made: tokio::sync::Notify,
    /// Every event this client sees, of any breaker under the prefix.
    pub(crate) all_events: broadcast::Sender<Event>,
}

impl Shared {
    /// The short bound: how long a snapshot learnt from an event, or from a reply while the
    /// subscription is not known to be alive, may decide calls. An in-memory client decides
    /// every call from its machine (whose clock may be fake), so its snapshots are never fresh.
    pub(crate) fn cache_ttl(&self) -> Duration {
        if self.store.is_shared() { self.config.cache_ttl } else { Duration::ZERO }
    }

    /// How long a snapshot Redis just answered may decide calls: the long bound while the event
    /// subscription is verified alive (every transition then reaches the process as an event),
    /// else the short one. A dropped subscription marks every snapshot stale, so a long bound
    /// granted just before the drop does not outlive it.
    /// The subscription must have been live since before the request was `sent`: an event
    /// published between a request and a subscription made after it would be missed.
    pub(crate) fn reply_ttl(&self, sent: Instant, name: &str) -> Duration {
        let short = self.cache_ttl();
        let mut since = self.subscribed_since.load(Ordering::Acquire);
        if let Some(channels) = self.shard_channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            since = match channels.get(name) {
                Some(&confirmed) if since != 0 => since.max(confirmed),
                _ => 0,
            };
        }
        if short.is_zero() || since == 0 || since - 1 > self.nanos_since_base(sent) {
            return short;
        }
        short.max(self.config.subscribed_cache_ttl)
    }

    /// Nanoseconds from `base` to `at`.
    pub(crate) fn nanos_since_base(&self, at: Instant) -> u64 {
        crate::ticks::since(self.base, at)
    }

    /// Whether events of the breaker `name` reach this client now: the subscription is live
    /// and, with sharded events, the breaker's own channel is confirmed.
    pub(crate) fn events_reach(&self, name: &str) -> bool {
        self.is_subscribed()
            && self
                .shard_channels
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .is_none_or(|channels| channels.contains_key(name))
    }

    /// Whether the subscription to `<prefix>:events` is live.
    pub(crate) fn is_subscribed(&self) -> bool {
        self.subscribed_since.load(Ordering::Acquire) != 0
    }

    /// Records that the subscription was made (`true`, now) or lost (`false`).
    pub(crate) fn set_subscribed(&self, live: bool) {
        let since = if live { self.nanos_since_base(Instant::now()) + 1 } else { 0 };
        self.subscribed_since.store(since, Ordering::Release);
    }

    /// How long pending counts that only feed metrics may wait.
    pub(crate) fn metrics_interval(&self) -> Duration {
        self.config.metrics_interval.max(self.config.flush_interval)
    }
}

/// Sharded events (Redis Cluster): what the subscription task records of each breaker's channel.
#[cfg(feature = "cluster")]
impl Shared {
    /// Records that the shard channel of `name` was confirmed subscribed (now), or, with
    /// `None`, that every shard subscription is in doubt (sharded events only). True when the
    /// channel was already confirmed.
    pub(crate) fn confirm_shard_channel(&self, name: Option<&str>) -> bool {
        let mut channels = self.shard_channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let map = channels.get_or_insert_with(HashMap::new);
        match name {
            Some(name) => map.insert(name.to_string(), self.nanos_since_base(Instant::now()) + 1).is_some(),
            None => {
                map.clear();
                false
            }
        }
    }
    /// Turns sharded events on (every breaker's channel unconfirmed) or off (the one channel
    /// of the prefix carries every event).
    pub(crate) fn set_shard_mode(&self, on: bool) {
        *self.shard_channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = on.then(HashMap::new);
    }
    /// Forgets the shard channel of `name` (unsubscribed).
    pub(crate) fn forget_shard_channel(&self, name: &str) {
        if let Some(map) = self.shard_channels.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_mut() {
            map.remove(name);
        }
    }
}
