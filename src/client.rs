//! [`Client`]: the connection, the loaded scripts, and the breakers of one process.

use crate::breaker::{Breaker, Inner, StoreStatus};
use crate::clock::{Clock, SystemClock};
use crate::config::{ClientConfig, Config};
use crate::error::{ConfigError, StoreError};
use crate::events::{Event, Subscription, Wire};
use crate::name::{Keys, events_channel, name_from_state_key, validate_name};
use crate::store::{LocalStore, Reconnect, RedisStore, SharedConn};
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;
use tokio::sync::watch;

pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) redis: Option<RedisStore>,
    pub(crate) local: LocalStore,
    pub(crate) base: Instant,
    /// This client's id: events caused by its script calls carry it.
    pub(crate) id: String,
    breakers: Mutex<HashMap<String, Arc<Inner>>>,
    /// True while the subscription to `<prefix>:events` is live.
    pub(crate) subscribed: AtomicBool,
    /// False for a cluster, where one SCAN sees one node.
    can_scan: bool,
    /// Every event this client sees, of any breaker under the prefix.
    pub(crate) all_events: broadcast::Sender<Event>,
}

impl Shared {
    /// An in-memory client decides every call from its machine (whose clock may be fake), so its
    /// snapshots are never fresh.
    pub(crate) fn cache_ttl(&self) -> Duration {
        if self.redis.is_some() { self.config.cache_ttl } else { Duration::ZERO }
    }

    fn registered(&self) -> Vec<Arc<Inner>> {
        self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }

    fn breaker_named(&self, name: &str) -> Option<Arc<Inner>> {
        self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name).cloned()
    }

    /// Tells every breaker's subscribers that Redis went down or came back; when it is back,
    /// every snapshot asks Redis on its next call (Redis is authoritative again).
    fn on_store_change(&self, up: bool) {
        crate::meters::store_up(&self.config.prefix, up);
        for inner in self.registered() {
            if up {
                inner.snapshot.mark_stale();
            }
            inner.store_event(up, self.config.degraded);
        }
    }

    /// Events may have been missed (the subscription dropped or was just made): every snapshot
    /// asks Redis on its next call.
    fn mark_all_stale(&self) {
        for inner in self.registered() {
            inner.snapshot.mark_stale();
        }
    }
}

/// What every [`Client`] and [`Breaker`] handle holds: when the last is dropped, the background
/// tasks stop and the registry (whose breakers point back at `Shared`) is cleared.
pub(crate) struct Handle {
    pub(crate) shared: Arc<Shared>,
    /// Dropped with the handle: tells the background tasks to stop.
    _stop: watch::Sender<()>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }
}

/// One process's access to shared breakers: the Redis connection, the scripts, the local
/// snapshots and the background flush of batched counts. Cheap to clone; make one per process.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_breaker::{Client, Config};
///
/// let client = Client::connect("redis://127.0.0.1:6379").await?;
/// let payments = client.breaker("payments", Config::default())?;
/// let answer = payments.execute(|| async { Ok::<_, std::io::Error>(42) }).await;
/// client.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is never shown: it may hold a password.
        let shared = &self.handle.shared;
        f.debug_struct("Client")
            .field("prefix", &shared.config.prefix)
            .field("store", &if shared.redis.is_some() { "redis" } else { "in-memory" })
            .finish_non_exhaustive()
    }
}

fn url_error(e: redis::RedisError) -> ConfigError {
    // The URL itself is never echoed: it may hold a password.
    ConfigError::Field { field: "url", reason: format!("is not a usable redis URL ({:?})", e.kind()) }
}

impl Client {
    /// Makes a client for the Redis at `url` with the default [`ClientConfig`]. Connecting is
    /// lazy: this succeeds while Redis is down, and calls are then decided by the degraded mode.
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when it cannot be parsed.
    pub async fn connect(url: &str) -> Result<Client, ConfigError> {
        Client::connect_with(url, ClientConfig::default()).await
    }

    /// As [`connect`](Client::connect), with client-wide settings.
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when it cannot be parsed.
    pub async fn connect_with(url: &str, config: ClientConfig) -> Result<Client, ConfigError> {
        let client = redis::Client::open(url).map_err(url_error)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200))
            .set_connection_timeout(Some(config.op_timeout))
            .set_response_timeout(Some(config.op_timeout));
        let manager =
            ConnectionManager::new_lazy_with_config(client.clone(), manager_config.clone()).map_err(url_error)?;
        let fresh = client.clone();
        let reconnect: Reconnect = Box::new(move || {
            let manager = ConnectionManager::new_lazy_with_config(fresh.clone(), manager_config.clone()).ok()?;
            Some(Box::new(manager) as Box<dyn SharedConn>)
        });
        Ok(Client::over(manager, config, true, Some(reconnect)).with_events(vec![client]))
    }

    /// Makes a client for a Redis Cluster (feature `cluster`), from the URLs of some of its
    /// nodes. Connecting is lazy, as for [`connect`](Client::connect). Events are read from one
    /// node at a time (PUBLISH reaches every node), moving to the next when it fails.
    /// [`breakers`](Client::breakers) is not available on a cluster client.
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when a URL cannot be parsed or the list is empty.
    #[cfg(feature = "cluster")]
    pub async fn connect_cluster(urls: &[&str], config: ClientConfig) -> Result<Client, ConfigError> {
        if urls.is_empty() {
            return Err(ConfigError::Field { field: "url", reason: "list of cluster nodes is empty".into() });
        }
        let cluster = redis::cluster::ClusterClient::builder(urls.iter().copied())
            .connection_timeout(config.op_timeout)
            .response_timeout(config.op_timeout)
            .retries(1)
            .build()
            .map_err(url_error)?;
        let nodes = urls.iter().map(|u| redis::Client::open(*u)).collect::<Result<Vec<_>, _>>().map_err(url_error)?;
        Ok(Client::over(crate::cluster::LazyCluster::new(cluster), config, false, None).with_events(nodes))
    }

    /// Starts the subscription to `<prefix>:events` on the first of `nodes` that answers.
    fn with_events(self, nodes: Vec<redis::Client>) -> Client {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let handle = &self.handle;
            let channel = events_channel(&handle.shared.config.prefix);
            let stop = handle._stop.subscribe();
            let (op_timeout, keepalive) = (handle.shared.config.op_timeout, handle.shared.config.events_keepalive);
            rt.spawn(subscribe_loop(Arc::downgrade(handle), nodes, channel, op_timeout, keepalive, stop));
        }
        self
    }

    /// Makes a client over a connection the caller built (TLS, Sentinel, a cluster, custom
    /// retry settings). It is cloned for each operation, so it should be a multiplexed or
    /// managed connection. Every operation still has the `op_timeout` deadline.
    ///
    /// Such a client has no event subscription (it has no URL to open one with): other
    /// processes' transitions reach it when its snapshots expire (`cache_ttl`).
    pub fn from_connection<C>(conn: C, config: ClientConfig) -> Client
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        Client::over(conn, config, true, None)
    }

    fn over<C>(conn: C, config: ClientConfig, can_scan: bool, reconnect: Option<Reconnect>) -> Client
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let channel = events_channel(&config.prefix);
        let id = client_id(&config);
        let redis = RedisStore::new(
            Box::new(conn),
            reconnect,
            config.op_timeout,
            channel,
            id.clone(),
            config.store_failure_threshold,
        );
        Client::build(config, Some(redis), Arc::new(SystemClock), can_scan, id)
    }

    /// A single-process client with no Redis: the same semantics, decided in memory. For unit
    /// tests of code that uses breakers, and for development without Redis.
    pub fn in_memory() -> Client {
        Client::in_memory_with_clock(SystemClock)
    }

    /// As [`in_memory`](Client::in_memory), on the given clock (e.g. a [`FakeClock`](crate::FakeClock)).
    pub fn in_memory_with_clock(clock: impl Clock) -> Client {
        let config = ClientConfig::default();
        let id = client_id(&config);
        Client::build(config, None, Arc::new(clock), true, id)
    }

    fn build(
        config: ClientConfig,
        redis: Option<RedisStore>,
        clock: Arc<dyn Clock>,
        can_scan: bool,
        id: String,
    ) -> Client {
        let flush_interval = config.flush_interval;
        let shared = Arc::new(Shared {
            config,
            redis,
            local: LocalStore::new(clock),
            base: Instant::now(),
            id,
            breakers: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            can_scan,
            all_events: broadcast::channel(1024).0,
        });
        let (stop, _) = watch::channel(());
        let handle = Arc::new(Handle { shared, _stop: stop });
        if let Some(redis) = &handle.shared.redis
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            crate::meters::store_up(&handle.shared.config.prefix, true);
            rt.spawn(flush_loop(Arc::downgrade(&handle), flush_interval, handle._stop.subscribe()));
            rt.spawn(store_loop(Arc::downgrade(&handle), redis.watch_up(), handle._stop.subscribe()));
        }
        Client { handle }
    }

    /// This client's id (from [`ClientConfig`], else random): the events its script calls
    /// cause carry it, and [`Event::caused_here`](crate::Event) compares with it.
    pub fn id(&self) -> &str {
        &self.handle.shared.id
    }

    /// Whether the subscription to `<prefix>:events` is live.
    pub fn events_subscribed(&self) -> bool {
        self.handle.shared.subscribed.load(Ordering::Acquire)
    }

    /// Where this client decides calls right now; no Redis command.
    pub fn store_status(&self) -> StoreStatus {
        match &self.handle.shared.redis {
            None => StoreStatus::InMemory,
            Some(redis) if redis.is_down() => StoreStatus::RedisDown,
            Some(_) => StoreStatus::Redis,
        }
    }

    /// The client-wide settings.
    pub fn config(&self) -> &ClientConfig {
        &self.handle.shared.config
    }

    /// The breaker named `name`, shared with every process that uses the same name and prefix.
    /// Asking again for the same name returns the same breaker.
    ///
    /// # Errors
    /// [`ConfigError::Name`] when the name breaks the naming rule (checked before Redis is
    /// touched) or this client already has that breaker with another config;
    /// [`ConfigError::Field`] when `config` does not fit the client's settings.
    pub fn breaker(&self, name: &str, config: Config) -> Result<Breaker, ConfigError> {
        validate_name(name)?;
        let shared = &self.handle.shared;
        shared.config.check_breaker(&config)?;
        let mut breakers = shared.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = breakers.get(name) {
            if existing.config != config {
                return Err(ConfigError::Name {
                    name: name.to_string(),
                    reason: "this client already has a breaker of that name with a different config".into(),
                });
            }
            return Ok(Breaker { inner: existing.clone(), _client: self.handle.clone() });
        }
        let inner = Inner::new(name, Keys::new(&shared.config.prefix, name), config, shared.clone());
        breakers.insert(name.to_string(), inner.clone());
        Ok(Breaker { inner, _client: self.handle.clone() })
    }

    /// Transitions of every breaker under this client's prefix, from any process (including
    /// breakers this client has not made). For one breaker, see
    /// [`Breaker::subscribe`](crate::Breaker::subscribe).
    pub fn subscribe_all(&self) -> Subscription {
        Subscription { rx: self.handle.shared.all_events.subscribe() }
    }

    /// Names of the breakers that have state under this client's prefix (a SCAN of Redis; for
    /// an in-memory client, those it has made).
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn breakers(&self) -> Result<Vec<String>, StoreError> {
        let shared = &self.handle.shared;
        let Some(redis) = &shared.redis else { return Ok(shared.local.names()) };
        if !shared.can_scan {
            return Err(StoreError::Unsupported(
                "listing breakers needs a SCAN of every master; on a cluster run `redis-cli --cluster call HOST:PORT --scan` instead",
            ));
        }
        let prefix = &shared.config.prefix;
        let escaped: String = prefix
            .chars()
            .flat_map(|c| if matches!(c, '?' | '[' | ']' | '\\') { vec!['\\', c] } else { vec![c] })
            .collect();
        let pattern = format!("{escaped}:{{*}}:state");
        let mut names = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
            let (next, keys): (u64, Vec<String>) = redis.query(&cmd, &pattern).await?;
            names.extend(keys.iter().filter_map(|k| name_from_state_key(prefix, k)).map(str::to_string));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Sends every breaker's batched counts now (breakers with none send nothing).
    ///
    /// # Errors
    /// The first [`StoreError`]; every breaker is still tried, and unsent counts are kept.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mut first = Ok(());
        for inner in self.handle.shared.registered() {
            if inner.pending.is_empty() {
                continue;
            }
            let breaker = Breaker { inner, _client: self.handle.clone() };
            if let Err(e) = breaker.flush().await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    /// Flushes what is pending; call it before a process (or a serverless invocation) exits.
    ///
    /// # Errors
    /// As [`flush`](Client::flush).
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.flush().await
    }
}

/// The configured client id, else 16 random hex digits.
fn client_id(config: &ClientConfig) -> String {
    config.client_id.clone().unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

async fn flush_loop(handle: Weak<Handle>, every: Duration, mut stop: watch::Receiver<()>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(handle) = handle.upgrade() else { return };
        if handle.shared.redis.as_ref().is_some_and(RedisStore::is_down) {
            // A flush that times out may or may not apply: keep the counts for when Redis is back.
            continue;
        }
        for inner in handle.shared.registered() {
            if !inner.pending.is_empty() {
                let _ = Breaker { inner, _client: handle.clone() }.flush().await;
            }
        }
        drop(handle);
    }
}

/// Keeps one subscription to `<prefix>:events` and applies each event to its breaker's
/// snapshot. Pub/sub is at most once, so whenever the subscription is made or lost every
/// snapshot is marked stale; it resubscribes with backoff until the client is dropped. A PING
/// every `keepalive` notices a connection that is open but dead (a blackholed path): no answer
/// within `max(op_timeout, 1s)` counts as a drop.
async fn subscribe_loop(
    handle: Weak<Handle>,
    nodes: Vec<redis::Client>,
    channel: String,
    op_timeout: Duration,
    keepalive: Duration,
    mut stop: watch::Receiver<()>,
) {
    let answer_within = op_timeout.max(Duration::from_secs(1));
    let mut next_node = 0;
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    let mut backoff = MIN_BACKOFF;
    let connect = async |redis: &redis::Client| {
        let mut pubsub = redis.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    loop {
        let Some(redis) = nodes.get(next_node % nodes.len().max(1)) else { return };
        next_node += 1;
        let attempt = tokio::select! {
            a = tokio::time::timeout(op_timeout.max(Duration::from_secs(1)), connect(redis)) => a,
            _ = stop.changed() => return,
        };
        let Ok(Ok(pubsub)) = attempt else {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = MIN_BACKOFF;
        match handle.upgrade() {
            Some(h) => {
                h.shared.subscribed.store(true, Ordering::Release);
                h.shared.mark_all_stale();
            }
            None => return,
        }
        tracing::debug!(channel, "redis-breaker: subscribed to events");
        let (mut sink, mut messages) = pubsub.split();
        let mut ping = tokio::time::interval(keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let msg = tokio::select! {
                m = messages.next() => m,
                _ = ping.tick() => {
                    // Messages that arrive meanwhile wait in the stream, in order.
                    match tokio::time::timeout(answer_within, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => continue,
                        _ => {
                            tracing::debug!(channel, "the event subscription did not answer a PING");
                            break;
                        }
                    }
                }
                _ = stop.changed() => return,
            };
            let Some(msg) = msg else { break };
            let at = Instant::now();
            let Some(h) = handle.upgrade() else { return };
            match Wire::parse(msg.get_payload_bytes()) {
                Some(wire) => {
                    if let Some(inner) = h.shared.breaker_named(&wire.name) {
                        inner.on_event(&wire, at);
                    }
                    if let Some(event) = wire.event(&h.shared.id) {
                        let _ = h.shared.all_events.send(event);
                    }
                }
                None => tracing::debug!(channel, "redis-breaker: ignored an event that is not ours"),
            }
        }
        let Some(h) = handle.upgrade() else { return };
        h.shared.subscribed.store(false, Ordering::Release);
        h.shared.mark_all_stale();
        tracing::warn!(channel, "redis-breaker: the event subscription dropped; resubscribing");
    }
}

/// Follows the store's up/down verdict. When Redis goes down: tells subscribers, then probes it
/// with backoff (no call waits on it meanwhile). When it answers: every snapshot asks Redis on
/// its next call, subscribers are told, and the counts gathered meanwhile are flushed.
async fn store_loop(handle: Weak<Handle>, mut up: watch::Receiver<bool>, mut stop: watch::Receiver<()>) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_millis(500);
    loop {
        tokio::select! {
            r = up.wait_for(|up| !*up) => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        match handle.upgrade() {
            Some(h) => h.shared.on_store_change(false),
            None => return,
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            let Some(h) = handle.upgrade() else { return };
            let Some(redis) = h.shared.redis.as_ref() else { return };
            if redis.ping().await {
                break;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        let Some(h) = handle.upgrade() else { return };
        tracing::info!("redis-breaker: redis answers again; breakers are decided by redis");
        h.shared.on_store_change(true);
        for inner in h.shared.registered() {
            if !inner.pending.is_empty() {
                let _ = Breaker { inner, _client: h.clone() }.flush().await;
            }
        }
    }
}
