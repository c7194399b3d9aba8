//! Where breaker state lives: Redis (the shared store) or this process (the in-process machine).
//! This file holds the seam, [`Store`]: the one object the rest of the crate asks (run this
//! operation and say who decided it, read this breaker, may calls be decided by shared state
//! now, where are calls decided); nothing outside `store/` asks which store is in use.
//! `redis.rs` holds the Redis store (`checks.rs` what it checks of a server and a user before a
//! connection's first script call), `in_process.rs` the in-process one, `scripts.rs` the Lua
//! scripts and how they reach Redis, `conn.rs` the connection the Redis store holds (and the
//! one forwarding connection), `one_conn.rs` the one connection of a client made from a URL
//! (commands and events on one RESP3 connection), and one file per way of reaching Redis beside a plain URL:
//! `cluster.rs` (and its events, `shard_events.rs`), `sentinel.rs`, `tls.rs`.

mod checks;
#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub(crate) mod conn;
pub(crate) mod in_process;
pub(crate) mod one_conn;
pub(crate) mod redis;
pub(crate) mod scripts;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
#[cfg(feature = "cluster")]
pub(crate) mod shard_events;
#[cfg(feature = "tls")]
pub(crate) mod tls;

pub(crate) use conn::{Reconnect, SharedConn};
pub(crate) use in_process::InProcessStore;
pub(crate) use redis::{RedisStore, StoreSettings};

use crate::breaker::health::StoreStatus;
use crate::config::client::Degraded;
use crate::error::StoreError;
use crate::name::Keys;
use crate::protocol::{Op, Params, Reply, Transition};
use crate::status::{HistoryEntry, Raw};
use std::sync::Arc;
use tokio::sync::watch;

/// Where a client's breakers keep their state: the one object that the call path, the
/// operators' calls and the background tasks ask what they need (run this, read that, may
/// counts be sent now), instead of asking which store is in use. One type over a closed set of
/// stores: its methods are matched statically, so a call that reaches the store costs no
/// dynamic dispatch and no boxed future of its own, and a call decided from a fresh snapshot
/// never reaches it.
pub(crate) struct Store(Backend);

/// The stores there are; only this file tells them apart.
enum Backend {
    /// Redis, however it is reached (a URL, Sentinel, a cluster, the user's connection): shared
    /// by every process that names a breaker. It may be treated as down.
    Redis {
        /// Boxed: it is large, and the other store is one pointer.
        redis: Box<RedisStore>,
        /// False for a cluster, where one SCAN sees one node.
        can_scan: bool,
    },
    /// An in-memory client: the in-process machines are the store.
    InProcess(Arc<InProcessStore>),
}

/// What an operation the store ran answered, and who decided it.
pub(crate) enum Decided {
    /// Redis: the reply is the fleet's state, and Redis announced its transitions.
    Shared(Reply),
    /// This process's machine (an in-memory client), with the transitions it made: only this
    /// process can announce them.
    Here(Reply, Vec<Transition>),
}

impl Decided {
    /// The reply, whoever decided.
    pub(crate) fn into_reply(self) -> Reply {
        match self {
            Decided::Shared(reply) | Decided::Here(reply, _) => reply,
        }
    }
}

impl Store {
    /// Redis; `can_scan` false for a cluster (no SCAN of one node lists every breaker).
    pub(crate) fn redis(redis: RedisStore, can_scan: bool) -> Store {
        Store(Backend::Redis { redis: Box::new(redis), can_scan })
    }

    /// The in-process machines, for an in-memory client.
    pub(crate) fn in_process(machines: Arc<InProcessStore>) -> Store {
        Store(Backend::InProcess(machines))
    }

    /// Whether the shared state decides calls right now: Redis answers. False while Redis is
    /// treated as down (the degraded mode decides, and no call waits on Redis) and for an
    /// in-memory client (its machine decides every call; no snapshot is ever fresh).
    pub(crate) fn decides_calls(&self) -> bool {
        match &self.0 {
            Backend::Redis { redis, .. } => !redis.is_down(),
            Backend::InProcess(_) => false,
        }
    }

    /// Whether the state lives beyond this process, so that counts, reports and snapshots have
    /// somewhere to go and something to follow. False for an in-memory client: its machine took
    /// every count as it came, and is the only truth.
    pub(crate) fn is_shared(&self) -> bool {
        matches!(self.0, Backend::Redis { .. })
    }

    /// Whether the shared store is treated as down: counts wait for it, the degraded mode
    /// decides, and a background probe checks it.
    pub(crate) fn is_down(&self) -> bool {
        match &self.0 {
            Backend::Redis { redis, .. } => redis.is_down(),
            Backend::InProcess(_) => false,
        }
    }

    /// What decides a call the store cannot: the client's `configured` degraded mode, or the
    /// in-process machine for an in-memory client.
    pub(crate) fn fallback(&self, configured: Degraded) -> Degraded {
        match self.0 {
            Backend::Redis { .. } => configured,
            Backend::InProcess(_) => Degraded::Local,
        }
    }

    /// Where calls are decided right now; no Redis command.
    pub(crate) fn status(&self) -> StoreStatus {
        match &self.0 {
            Backend::Redis { redis, .. } if redis.is_down() => redis.down_status(),
            Backend::Redis { .. } => StoreStatus::Redis,
            Backend::InProcess(_) => StoreStatus::InMemory,
        }
    }

    /// Where calls are decided, told by a `refresh` just made (`Breaker::health`): Redis when
    /// it answered, down when it failed as an outage or Redis is treated as down; another
    /// error is the caller's.
    pub(crate) fn status_after(&self, refresh: Result<(), StoreError>) -> Result<StoreStatus, StoreError> {
        if !self.is_shared() {
            return Ok(StoreStatus::InMemory);
        }
        match refresh {
            Ok(()) => Ok(StoreStatus::Redis),
            Err(StoreError::Auth(_)) => Ok(StoreStatus::AuthFailed),
            Err(e) if e.is_outage() || self.is_down() => Ok(StoreStatus::RedisDown),
            Err(e) => Err(e),
        }
    }

    /// How script calls are sent: `"functions"`, `"evalsha"`, or `"none"` (in-memory).
    pub(crate) fn script_mode(&self) -> &'static str {
        match &self.0 {
            Backend::Redis { redis, .. } => redis.script_mode(),
            Backend::InProcess(_) => "none",
        }
    }

    /// Follows the shared store's up/down verdict; `None` when there is none to follow.
    pub(crate) fn watch_up(&self) -> Option<watch::Receiver<bool>> {
        match &self.0 {
            Backend::Redis { redis, .. } => Some(redis.watch_up()),
            Backend::InProcess(_) => None,
        }
    }

    /// Whether the store answers a PING within the deadline (the probe while it is down).
    pub(crate) async fn ping(&self) -> bool {
        match &self.0 {
            Backend::Redis { redis, .. } => redis.ping().await,
            Backend::InProcess(_) => true,
        }
    }

    /// Waits until the script calls in flight have ended (see [`RedisStore::settle`]).
    pub(crate) async fn settle(&self) {
        if let Backend::Redis { redis, .. } = &self.0 {
            redis.settle().await;
        }
    }

    /// Runs `op` on the breaker of `keys` with its `params` and the random number `rand`: on
    /// Redis, also while it is treated as down (the error reports the outage), with the
    /// `op_timeout` deadline and never retried here; or on the in-process machine.
    pub(crate) async fn run(&self, keys: &Keys, params: &Params, op: &Op, rand: f64) -> Result<Decided, StoreError> {
        match &self.0 {
            Backend::Redis { redis, .. } => redis.run(keys, params, op, None, rand).await.map(Decided::Shared),
            Backend::InProcess(machines) => {
                let (reply, transitions) = machines.run(&keys.name, params, op, rand);
                Ok(Decided::Here(reply, transitions))
            }
        }
    }

    /// Everything the store holds about the breaker of `keys` (state, probes, metrics, TTLs),
    /// for operators.
    pub(crate) async fn read(&self, keys: &Keys) -> Result<Raw, StoreError> {
        match &self.0 {
            Backend::Redis { redis, .. } => redis.status(keys).await,
            Backend::InProcess(machines) => Ok(machines.status(&keys.name)),
        }
    }

    /// The last `count` transitions of the breaker of `keys`, newest first; none in memory.
    pub(crate) async fn history(&self, keys: &Keys, count: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        match &self.0 {
            Backend::Redis { redis, .. } => redis.history(keys, count).await,
            Backend::InProcess(_) => Ok(Vec::new()),
        }
    }

    /// The names of the breakers that have keys under `prefix` (those made, in memory).
    pub(crate) async fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        match &self.0 {
            Backend::Redis { can_scan: false, .. } => Err(StoreError::Unsupported(
                "listing breakers needs a SCAN of every master; on a cluster run `redis-cli --cluster call HOST:PORT --scan` instead",
            )),
            Backend::Redis { redis, .. } => redis.names(prefix).await,
            Backend::InProcess(machines) => Ok(machines.names()),
        }
    }
}

/// `"redis"` or `"in-memory"` (never a URL: it may hold a password).
impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_shared() { "redis" } else { "in-memory" };
        std::fmt::Debug::fmt(kind, f)
    }
}
