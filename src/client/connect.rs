//! How a [`Client`] is made: from a URL (plain or TLS), from Redis Sentinel, from a Redis
//! Cluster, over the caller's connection, or in memory; each picks its store and starts the
//! background tasks and the event subscription that suit it.

use crate::client::push_events::subscribe_pushed;
use crate::client::registry::Handle;
use crate::client::shared::Shared;
#[cfg(feature = "sentinel")]
use crate::client::subscription::Channel;
use crate::client::subscription::EventTask;
use crate::client::{Client, tasks};
use crate::clock::{Clock, SystemClock};
use crate::config::client::ClientConfig;
use crate::error::ConfigError;
use crate::name::events_channel;
use crate::store::conn::Forward;
use crate::store::one_conn::OneConn;
use crate::store::{InProcessStore, Reconnect, RedisStore, SharedConn, Store, StoreSettings};
use redis::aio::ConnectionLike;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::broadcast;

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
    /// CA, a refused client certificate) is a [`StoreError`](crate::StoreError) that names TLS,
    /// at the first operation; calls are decided by the degraded mode meanwhile.
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

    /// A client whose commands and event subscription share one connection to the server of
    /// `client` (RESP3 push messages; RESP2 and a subscription connection of its own where the
    /// server refuses RESP3).
    fn connect_over(client: redis::Client, config: ClientConfig) -> Result<Client, ConfigError> {
        let conn = OneConn::new(&client, config.op_timeout).map_err(url_error)?;
        let forget = conn.clone();
        let reconnect: Reconnect = Box::new(move || {
            forget.forget_current();
            Some(Box::new(Forward(forget.clone())) as Box<dyn SharedConn>)
        });
        let client = Client::over(Forward(conn.clone()), config, false, Some(reconnect));
        client.spawn_events(|task| subscribe_pushed(task, conn));
        Ok(client)
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
    /// [`StoreError::Auth`](crate::StoreError::Auth) at the first operation, and
    /// `store_status()` says [`AuthFailed`](crate::StoreStatus::AuthFailed): calls are decided
    /// by the degraded mode. The sentinels' own password goes in their URLs.
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
        // The subscription follows the node the commands use.
        client.spawn_events(|mut task| async move {
            let events = Channel::new(crate::store::sentinel::PrimaryNode::new(conn), &task);
            task.keep(events).await;
        });
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
        let urls = urls.iter().map(|u| u.to_string()).collect();
        client.spawn_events(|task| crate::store::shard_events::subscribe_sharded(task, urls, nodes));
        Ok(client)
    }

    /// Starts the event subscription, `events` given the client's [`EventTask`], as a task of
    /// its own (when there is a runtime to run it on).
    fn spawn_events<F>(&self, events: impl FnOnce(EventTask) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(events(EventTask::of(&self.handle)));
        }
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
}

/// The client id (the configured one, else 16 random hex digits) and the quorum identity.
fn ids(config: &ClientConfig) -> (String, String) {
    let id = config.client_id.clone().unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    let reporter = config.resolve_reporter_id(&id);
    (id, reporter)
}
