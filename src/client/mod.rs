//! [`Client`]: the connection, the loaded scripts, and the breakers of one process. This file
//! holds the handle and its constructors; `shared.rs` what every breaker borrows from the
//! client, `registry.rs` the breakers by name, `tasks.rs` the background tasks (the flush, the
//! event subscription, the watch on Redis).

pub(crate) mod registry;
pub(crate) mod shared;
pub(crate) mod tasks;

use crate::breaker::Breaker;
use crate::breaker::health::StoreStatus;
use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::client::shared::Shared;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::config::client::ClientConfig;
use crate::error::{ConfigError, StoreError};
use crate::events::Subscription;
use crate::name::{Keys, events_channel, validate_name};
#[cfg(any(feature = "cluster", feature = "sentinel"))]
use crate::store::conn::Forward;
use crate::store::{InProcessStore, Reconnect, RedisStore, SharedConn, Store, StoreSettings};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

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
    handle: Arc<Handle<Inner>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is never shown: it may hold a password.
        let shared = &self.handle.shared;
        f.debug_struct("Client")
            .field("prefix", &shared.config.prefix)
            .field("store", &shared.store)
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
        Client::connect_over(client, config)
    }

    /// As [`connect_with`](Client::connect_with), over TLS with the given certificates (feature
    /// `tls`): a CA of your own instead of the system's roots, and a client certificate when
    /// the server asks for one. The URL must be `rediss://`. Plain `rediss://` URLs with the
    /// system's roots need only [`connect`](Client::connect).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redis_breaker::{Client, ClientConfig, TlsOptions};
    ///
    /// let tls = TlsOptions::new()
    ///     .ca_pem(std::fs::read("ca.crt")?)
    ///     .client_pem(std::fs::read("client.crt")?, std::fs::read("client.key")?);
    /// let client = Client::connect_tls("rediss://redis.internal:6380", ClientConfig::default(), tls).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when it cannot be parsed or is not `rediss://`, or naming
    /// `tls` when a certificate or key is not usable PEM. A handshake that fails later (a wrong
    /// CA, a refused client certificate) is a [`StoreError`] that names TLS, at the first
    /// operation; calls are decided by the degraded mode meanwhile.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub async fn connect_tls(url: &str, config: ClientConfig, tls: crate::TlsOptions) -> Result<Client, ConfigError> {
        if !url.starts_with("rediss://") {
            return Err(ConfigError::Field {
                field: "url",
                reason: "must be a rediss:// URL for a TLS connection".into(),
            });
        }
        tls.check().map_err(|reason| ConfigError::Field { field: "tls", reason })?;
        let client = redis::Client::build_with_tls(url, tls.certificates()).map_err(|e| match e.kind() {
            redis::ErrorKind::InvalidClientConfig => {
                ConfigError::Field { field: "tls", reason: format!("is not usable: {e}") }
            }
            _ => url_error(e),
        })?;
        Client::connect_over(client, config)
    }

    fn connect_over(client: redis::Client, config: ClientConfig) -> Result<Client, ConfigError> {
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
        Ok(Client::over(manager, config, false, Some(reconnect)).with_events(tasks::EventNodes::Fixed(vec![client])))
    }

    /// Makes a client for the primary that Redis Sentinel names (feature `sentinel`): `sentinels`
    /// are the URLs of some sentinels, `service` the name they monitor (`sentinel monitor
    /// <service> ...`). The primary is asked of the sentinels when first needed and again
    /// whenever its connection breaks or it answers READONLY (a failover demoted it), so the
    /// client follows a failover; a node is used only once it says (ROLE) it is a primary.
    /// The event subscription always sits on the node the commands use: when the sentinels
    /// name another node, to either of them, both move, and every snapshot asks Redis again.
    /// The primary is reached as the default user over plain TCP; for a password, an ACL user
    /// or TLS, see [`connect_sentinel_with`](Client::connect_sentinel_with). Connecting is
    /// lazy, as for [`connect`](Client::connect).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redis_breaker::{Client, ClientConfig};
    ///
    /// let sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"];
    /// let client = Client::connect_sentinel(&sentinels, "mymaster", ClientConfig::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when a sentinel URL cannot be parsed or the list is empty.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel(
        sentinels: &[&str],
        service: &str,
        config: ClientConfig,
    ) -> Result<Client, ConfigError> {
        Client::connect_sentinel_with(sentinels, service, config, crate::SentinelOptions::new()).await
    }

    /// As [`connect_sentinel`](Client::connect_sentinel), reaching the primary (and every node
    /// the sentinels name after a failover) with a username and password, and over TLS (feature
    /// `tls`), as [`SentinelOptions`](crate::SentinelOptions) say; the command connection and
    /// the event subscription both use them. Credentials Redis refuses (NOAUTH, WRONGPASS) are
    /// [`StoreError::Auth`] at the first operation, and `store_status()` says
    /// [`AuthFailed`](crate::StoreStatus::AuthFailed): calls are decided by the degraded mode.
    /// The sentinels' own password goes in their URLs.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use redis_breaker::{Client, ClientConfig, SentinelOptions};
    ///
    /// let primary = SentinelOptions::new().username("breaker").password("secret");
    /// let client = Client::connect_sentinel_with(&["redis://10.0.0.1:26379"], "mymaster", ClientConfig::default(), primary).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when a sentinel URL cannot be parsed or the list is empty,
    /// or naming `tls` when a certificate or key is not usable PEM.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub async fn connect_sentinel_with(
        sentinels: &[&str],
        service: &str,
        config: ClientConfig,
        primary: crate::SentinelOptions,
    ) -> Result<Client, ConfigError> {
        if sentinels.is_empty() {
            return Err(ConfigError::Field { field: "url", reason: "list of sentinels is empty".into() });
        }
        let sentinel = crate::store::sentinel::sentinel_client(sentinels, service, &primary)?;
        let conn = crate::store::sentinel::SentinelConn::new(sentinel, config.op_timeout);
        let forget = conn.clone();
        let reconnect: Reconnect = Box::new(move || {
            forget.forget();
            Some(Box::new(Forward(forget.clone())) as Box<dyn SharedConn>)
        });
        let client = Client::over(Forward(conn.clone()), config, false, Some(reconnect));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // The subscription follows the node the commands use.
            let handle = &client.handle;
            let channel = events_channel(&handle.shared.config.prefix);
            let (op_timeout, keepalive) = (handle.shared.config.op_timeout, handle.shared.config.events_keepalive);
            let events = crate::store::sentinel::subscribe_loop(
                Arc::downgrade(handle),
                conn,
                channel,
                op_timeout,
                keepalive,
                handle.stopped(),
            );
            rt.spawn(events);
        }
        Ok(client)
    }

    /// Makes a client for a Redis Cluster (feature `cluster`), from the URLs of some of its
    /// nodes. Connecting is lazy, as for [`connect`](Client::connect). On Redis >= 7.0 events
    /// are sharded: each breaker's transitions go with SPUBLISH to its own channel
    /// `<prefix>:{<name>}:events`, within its shard, and the client subscribes to the channels
    /// of the breakers it holds (so [`subscribe_all`](Client::subscribe_all) sees those only).
    /// Before 7.0 they go to `<prefix>:events`, read from one node at a time.
    /// [`breakers`](Client::breakers) is not available on a cluster client.
    ///
    /// # Errors
    /// [`ConfigError`] naming `url` when a URL cannot be parsed or the list is empty.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub async fn connect_cluster(urls: &[&str], config: ClientConfig) -> Result<Client, ConfigError> {
        if urls.is_empty() {
            return Err(ConfigError::Field { field: "url", reason: "list of cluster nodes is empty".into() });
        }
        let cluster = redis::cluster::ClusterClient::builder(urls.iter().copied())
            .connection_timeout(config.op_timeout)
            .response_timeout(config.op_timeout)
            // No retry inside the cluster client: a script call that timed out or whose
            // connection dropped may have run, and the client's own retry would send its batch
            // again as a first attempt, counted twice (seen under a stopped owner in the torture
            // harness). A call that ends on an error is in doubt and sent again under its batch
            // id; a redirection (MOVED, ASK) is an outage of that call, sent again by the same
            // path once the client has learned the new owner.
            .retries(0)
            .build()
            .map_err(url_error)?;
        let nodes = urls.iter().map(|u| redis::Client::open(*u)).collect::<Result<Vec<_>, _>>().map_err(url_error)?;
        let client = Client::over(Forward(crate::store::cluster::LazyCluster::new(cluster)), config, true, None);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let handle = &client.handle;
            let (op_timeout, keepalive) = (handle.shared.config.op_timeout, handle.shared.config.events_keepalive);
            let urls = urls.iter().map(|u| u.to_string()).collect();
            let task = crate::store::cluster::shard_subscribe_loop(
                Arc::downgrade(handle),
                urls,
                nodes,
                op_timeout,
                keepalive,
                handle.stopped(),
            );
            rt.spawn(task);
        }
        Ok(client)
    }

    /// Starts the subscription to `<prefix>:events` on the first of `nodes` that answers.
    fn with_events(self, nodes: tasks::EventNodes) -> Client {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let handle = &self.handle;
            let channel = events_channel(&handle.shared.config.prefix);
            let stop = handle.stopped();
            let (op_timeout, keepalive) = (handle.shared.config.op_timeout, handle.shared.config.events_keepalive);
            rt.spawn(tasks::subscribe_loop(Arc::downgrade(handle), nodes, channel, op_timeout, keepalive, stop));
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
        Client::over(conn, config, false, None)
    }

    /// A client over `conn`; `cluster` when it is a Redis Cluster (no SCAN of one node lists
    /// every breaker; events are published per breaker, within its shard).
    fn over<C>(conn: C, config: ClientConfig, cluster: bool, reconnect: Option<Reconnect>) -> Client
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        let channel = events_channel(&config.prefix);
        let ids = ids(&config);
        let settings = StoreSettings {
            op_timeout: config.op_timeout,
            channel,
            origin: ids.0.clone(),
            reporter: ids.1.clone(),
            sharded: cluster,
            threshold: config.store_failure_threshold,
            functions: config.functions,
        };
        let redis = RedisStore::new(Box::new(conn), reconnect, settings);
        let in_process = Arc::new(InProcessStore::new(Arc::new(SystemClock), ids.1.clone()));
        Client::build(config, Store::redis(redis, !cluster), in_process, ids)
    }

    /// A single-process client with no Redis: the same semantics, decided in memory. For unit
    /// tests of code that uses breakers, and for development without Redis.
    pub fn in_memory() -> Client {
        Client::in_memory_with_clock(SystemClock)
    }

    /// As [`in_memory`](Client::in_memory), on the given clock (e.g. a [`FakeClock`](crate::FakeClock)).
    pub fn in_memory_with_clock(clock: impl Clock) -> Client {
        let config = ClientConfig::default();
        let ids = ids(&config);
        let in_process = Arc::new(InProcessStore::new(Arc::new(clock), ids.1.clone()));
        Client::build(config, Store::in_process(in_process.clone()), in_process, ids)
    }

    /// A client over `store`, with `in_process` for the degraded mode; starts the flush and the
    /// watch on the store when there is a store to watch (and a runtime).
    fn build(
        config: ClientConfig,
        store: Store,
        in_process: Arc<InProcessStore>,
        (id, reporter): (String, String),
    ) -> Client {
        let flush_interval = config.flush_interval;
        let shared = Arc::new(Shared {
            in_process,
            config,
            store,
            base: Instant::now(),
            id,
            reporter,
            subscribed_since: Default::default(),
            shard_channels: Default::default(),
            breaker_made: tokio::sync::Notify::new(),
            all_events: broadcast::channel(1024).0,
        });
        let handle = Arc::new(Handle::new(shared));
        if let Some(up) = handle.shared.store.watch_up()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            crate::meters::store_up(&handle.shared.config.prefix, true);
            rt.spawn(tasks::flush_loop(Arc::downgrade(&handle), flush_interval, handle.stopped()));
            rt.spawn(tasks::store_loop(Arc::downgrade(&handle), up, handle.stopped()));
        }
        Client { handle }
    }

    /// This client's id (from [`ClientConfig`], else random): the events its script calls
    /// cause carry it, and [`Event::caused_here`](crate::Event) compares with it.
    pub fn id(&self) -> &str {
        &self.handle.shared.id
    }

    /// This client's identity for a quorum: under it this process reports its own breaker open
    /// and counts among the active processes. Processes with one identity count once, so a
    /// process that restarts is still one reporter. By default the host name; see
    /// [`ClientConfigBuilder::reporter_id`](crate::ClientConfigBuilder::reporter_id) and
    /// `$REDIS_BREAKER_REPORTER_ID` for the order in which it is chosen.
    pub fn reporter_id(&self) -> &str {
        &self.handle.shared.reporter
    }

    /// Whether the subscription to `<prefix>:events` is live.
    pub fn events_subscribed(&self) -> bool {
        self.handle.shared.is_subscribed()
    }

    /// Where this client decides calls right now; no Redis command.
    pub fn store_status(&self) -> StoreStatus {
        self.handle.shared.store.status()
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
        let keys = Keys::new(&shared.config.prefix, name);
        let mut made = false;
        let inner = self
            .handle
            .get_or_insert(
                name,
                |existing| existing.config == config,
                || {
                    made = true;
                    Inner::new(name, keys, config.clone(), shared.clone())
                },
            )
            .map_err(|_| ConfigError::Name {
                name: name.to_string(),
                reason: "this client already has a breaker of that name with a different config".into(),
            })?;
        if made {
            shared.breaker_made.notify_one();
        }
        Ok(Breaker::new(inner, self.handle.clone()))
    }

    /// Transitions of every breaker under this client's prefix, from any process (including
    /// breakers this client has not made). For one breaker, see
    /// [`Breaker::subscribe`](crate::Breaker::subscribe).
    pub fn subscribe_all(&self) -> Subscription {
        Subscription { rx: self.handle.shared.all_events.subscribe() }
    }

    /// Names of the breakers that have state or metrics under this client's prefix (a SCAN of
    /// Redis; a healthy breaker that never left closed has only its metrics; for an in-memory
    /// client, those it has made).
    ///
    /// Each name is as the key holds it: a key written by something else may hold one that
    /// cannot be a breaker (it breaks the [naming rule](crate::name::validate_name); a key that
    /// is not UTF-8 is read lossily, so its name breaks the rule too). It is listed all the
    /// same, for the caller to skip and report; [`breaker`](Client::breaker) refuses it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn breakers(&self) -> Result<Vec<String>, StoreError> {
        let shared = &self.handle.shared;
        shared.store.names(&shared.config.prefix).await
    }

    /// Sends every breaker's batched counts now (breakers with none send nothing).
    ///
    /// # Errors
    /// The first [`StoreError`]; every breaker is still tried, and unsent counts are kept.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let pending = self.handle.registered().into_iter().filter(|inner| inner.has_unsent()).collect();
        let result = tasks::flush_all(&self.handle, pending).await;
        // Counts another task took (a background flush, another call's record) travel in its
        // script call: wait for the calls in flight, and send what a failed one put back.
        self.handle.shared.store.settle().await;
        let put_back: Vec<_> = self.handle.registered().into_iter().filter(|inner| inner.has_unsent()).collect();
        if result.is_ok() && !put_back.is_empty() {
            return tasks::flush_all(&self.handle, put_back).await;
        }
        result
    }

    /// The names of the breakers this client holds in memory, sorted. A breaker leaves when no
    /// [`Breaker`] handle refers to it, nothing is pending and its snapshot has expired, so
    /// names from unbounded input (tenant ids) do not grow the process; asking for the name
    /// again makes it again.
    pub fn local_breakers(&self) -> Vec<String> {
        self.handle.names()
    }

    /// Flushes what is pending and, under a quorum, withdraws this process's reports (its own
    /// breaker open) from every breaker it reported to, before it returns: call it before a
    /// process exits, so a process that leaves no longer counts toward a quorum. (A process
    /// that makes calls afterwards reports again when its own breaker opens again.)
    ///
    /// # Errors
    /// As [`flush`](Client::flush); a report that could not be withdrawn (Redis down) still
    /// stops counting a window after it was last said.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let flushed = self.flush().await;
        let withdrawn = tasks::withdraw_reports(&self.handle).await;
        flushed.and(withdrawn)
    }
}

/// The client id (the configured one, else 16 random hex digits) and the quorum identity.
fn ids(config: &ClientConfig) -> (String, String) {
    let id = config.client_id.clone().unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let reporter = config.resolve_reporter_id(&id);
    (id, reporter)
}
