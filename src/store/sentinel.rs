//! Redis Sentinel (feature `sentinel`): a connection that asks the sentinels where the primary
//! is, keeps a multiplexed connection to it, and asks again when that connection breaks or the
//! node answers READONLY (it was demoted). Scripts are never sent to a replica: the sentinels
//! name the primary, and the node is asked (ROLE) whether it is one before it is used.
//!
//! The commands and the event subscription follow one node: whichever of them asks the
//! sentinels adopts their answer for both, so when the sentinels name another node the
//! command connection is dropped and the subscription made again there (every snapshot then
//! asks Redis). Two connections that asked at different times could otherwise sit on
//! different nodes during a failover (the old primary still serving until the sentinels reach
//! it), and transitions made on one would never reach a subscriber on the other while its
//! replies kept the long bound.

use crate::client::subscription::Nodes;
use crate::error::ConfigError;
use crate::store::conn::{Request, Route};
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisFuture, RedisResult};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How to reach the primary that Redis Sentinel names, for
/// [`Client::connect_sentinel_with`](crate::Client::connect_sentinel_with): the username and
/// password of the data nodes (`requirepass`, or an ACL user), and TLS (feature `tls`). They
/// are used for the command connection and the event subscription alike, on whichever node
/// the sentinels name. The sentinels' own password goes in their URLs
/// (`redis://:password@host:26379`; `rediss://` for sentinels that speak TLS, which then get
/// the same certificates).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use redis_breaker::{Client, ClientConfig, SentinelOptions};
///
/// let primary = SentinelOptions::new().username("breaker").password(std::env::var("REDIS_PASSWORD")?);
/// let sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"];
/// let client = Client::connect_sentinel_with(&sentinels, "mymaster", ClientConfig::default(), primary).await?;
/// # Ok(()) }
/// ```
///
/// The password is never printed (`Debug` shows `<redacted>`), nor is it in any error.
#[derive(Clone, Default)]
#[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
pub struct SentinelOptions {
    username: Option<String>,
    password: Option<String>,
    #[cfg(feature = "tls")]
    tls: Option<crate::TlsOptions>,
}

impl std::fmt::Debug for SentinelOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct("SentinelOptions");
        s.field("username", &self.username).field("password", &self.password.as_ref().map(|_| "<redacted>"));
        #[cfg(feature = "tls")]
        s.field("tls", &self.tls);
        s.finish()
    }
}

impl SentinelOptions {
    /// No credentials and no TLS: the primary is reached as the default user, over plain TCP.
    pub fn new() -> SentinelOptions {
        SentinelOptions::default()
    }

    /// Authenticates as this ACL user on the data nodes (with [`password`](Self::password)).
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> SentinelOptions {
        self.username = Some(username.into());
        self
    }

    /// Authenticates with this password on the data nodes: the `requirepass` password, or the
    /// password of the [`username`](Self::username) given.
    #[must_use]
    pub fn password(mut self, password: impl Into<String>) -> SentinelOptions {
        self.password = Some(password.into());
        self
    }

    /// Reaches the data nodes over TLS with these certificates (a CA of your own, a client
    /// certificate): the node the sentinels name must serve TLS on the port they announce
    /// (`tls-port`, with `tls-replication yes` so that the sentinels reach it too).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    #[must_use]
    pub fn tls(mut self, tls: crate::TlsOptions) -> SentinelOptions {
        self.tls = Some(tls);
        self
    }
}

fn url_error(e: &redis::RedisError) -> ConfigError {
    // The URL itself is never echoed: it may hold a password.
    ConfigError::Field { field: "url", reason: format!("is not a usable redis URL ({:?})", e.kind()) }
}

/// The client of the sentinels at `urls` for `service`, reaching its primary as `options` say.
pub(crate) fn sentinel_client(
    urls: &[&str],
    service: &str,
    options: &SentinelOptions,
) -> Result<SentinelClient, ConfigError> {
    let mut addrs = Vec::with_capacity(urls.len());
    let mut own_credentials = None;
    for url in urls {
        let info = url.into_connection_info().map_err(|e| url_error(&e))?;
        let settings = info.redis_settings();
        if own_credentials.is_none() && (settings.username().is_some() || settings.password().is_some()) {
            own_credentials = Some((settings.username().map(str::to_string), settings.password().map(str::to_string)));
        }
        addrs.push(info.addr().clone());
    }
    #[cfg(feature = "tls")]
    let sentinels_over_tls = addrs.iter().all(|a| matches!(a, redis::ConnectionAddr::TcpTls { .. }));
    let mut builder =
        SentinelClientBuilder::new(addrs, service, SentinelServerType::Master).map_err(|e| url_error(&e))?;
    if let Some((username, password)) = own_credentials {
        if let Some(username) = username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    if let Some(username) = &options.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &options.password {
        builder = builder.set_client_to_redis_password(password);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = &options.tls {
        tls.check().map_err(|reason| ConfigError::Field { field: "tls", reason })?;
        builder = builder
            .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
            .set_client_to_redis_certificates(tls.clone().certificates());
        if sentinels_over_tls {
            builder = builder.set_client_to_sentinel_certificates(tls.clone().certificates());
        }
    }
    builder.build().map_err(|e| match e.kind() {
        redis::ErrorKind::InvalidClientConfig => {
            ConfigError::Field { field: "tls", reason: format!("is not usable with these sentinels: {e}") }
        }
        _ => url_error(&e),
    })
}

/// The node the commands and the events use: the primary the sentinels last named.
struct Node {
    /// Its address (`host:port`), to tell whether the sentinels named another node.
    addr: String,
    client: redis::Client,
    /// False once its connection failed: the next command asks the sentinels again.
    trusted: bool,
}

#[derive(Default)]
struct Current {
    node: Option<Node>,
    conn: Option<MultiplexedConnection>,
}

struct Shared {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<Current>,
    /// +1 each time the sentinels name another node: the event subscription follows it.
    moved: watch::Sender<u64>,
    op_timeout: Duration,
}

/// The connection to the primary the sentinels name. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SentinelConn(Arc<Shared>);

impl SentinelConn {
    pub(crate) fn new(sentinels: SentinelClient, op_timeout: Duration) -> SentinelConn {
        SentinelConn(Arc::new(Shared {
            sentinels: tokio::sync::Mutex::new(sentinels),
            current: Mutex::new(Current::default()),
            moved: watch::channel(0).0,
            op_timeout,
        }))
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Current> {
        self.0.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks the sentinels for the primary (checked with ROLE), within `op_timeout`, and adopts
    /// it for the commands and the events: when it is another node than the one in use, the
    /// command connection is dropped and the event subscription moves. Answers its client and
    /// the generation of the node.
    async fn ask(&self) -> RedisResult<(redis::Client, u64)> {
        let ask = async { self.0.sentinels.lock().await.async_get_client().await };
        let client = match tokio::time::timeout(self.0.op_timeout, ask).await {
            Ok(found) => found?,
            Err(_) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "the sentinels did not name a primary within op_timeout",
                )));
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        let mut current = self.current();
        match &mut current.node {
            Some(node) if node.addr == addr => node.trusted = true,
            _ => {
                if let Some(old) = &current.node {
                    tracing::warn!(from = %old.addr, to = %addr, "the sentinels name another primary; commands and events move to it");
                }
                current.node = Some(Node { addr, client: client.clone(), trusted: true });
                current.conn = None;
                self.0.moved.send_modify(|generation| *generation += 1);
            }
        }
        Ok((client, *self.0.moved.borrow()))
    }

    /// Forgets the connection: the next operation asks the sentinels again.
    pub(crate) fn forget(&self) {
        let mut current = self.current();
        current.conn = None;
        if let Some(node) = &mut current.node {
            node.trusted = false;
        }
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let trusted = {
            let current = self.current();
            if let Some(conn) = &current.conn {
                return Ok(conn.clone());
            }
            current.node.as_ref().filter(|n| n.trusted).map(|n| (n.client.clone(), n.addr.clone()))
        };
        let (client, addr) = match trusted {
            Some(node) => node,
            None => {
                let (client, _) = self.ask().await?;
                let addr = client.get_connection_info().addr().to_string();
                (client, addr)
            }
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.0.op_timeout))
            .set_response_timeout(Some(self.0.op_timeout));
        let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let mut current = self.current();
        // Kept only while that node is still the one in use (the events may have moved meanwhile).
        if current.node.as_ref().is_some_and(|n| n.addr == addr) {
            current.conn = Some(conn.clone());
        }
        Ok(conn)
    }

    /// After an error: a broken connection or a demoted node is forgotten.
    fn after<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            let demoted = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                || e.to_string().contains("READONLY");
            if demoted || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                self.forget();
            }
        }
        result
    }
}

/// Each request goes to the primary's connection (asking the sentinels when there is none);
/// a failure that says the node is gone or demoted forgets it.
impl Route for SentinelConn {
    fn send<'a, R: Request + 'a>(&'a mut self, request: R) -> RedisFuture<'a, R::Reply> {
        Box::pin(async move {
            let result = match self.connection().await {
                Ok(mut conn) => request.send(&mut conn).await,
                Err(e) => Err(e),
            };
            self.after(result)
        })
    }
}

/// Where the event subscription sits: on the node the commands use. Each attempt asks the
/// sentinels (which moves the commands too when they name another node); a subscription made
/// on a node the commands have left meanwhile is made again, and a live one is dropped (every
/// snapshot marked stale) when the commands move to another node.
pub(crate) struct PrimaryNode {
    conn: SentinelConn,
    /// +1 each time the sentinels name another node.
    moved: watch::Receiver<u64>,
}

impl PrimaryNode {
    /// Follows the node `conn` uses.
    pub(crate) fn new(conn: SentinelConn) -> PrimaryNode {
        let moved = conn.0.moved.subscribe();
        PrimaryNode { conn, moved }
    }
}

impl Nodes for PrimaryNode {
    async fn pick(&mut self) -> RedisResult<Option<(redis::Client, u64)>> {
        self.conn.ask().await.map(Some)
    }

    fn in_use(&mut self, generation: u64) -> bool {
        *self.moved.borrow_and_update() == generation
    }

    async fn moved(&mut self, generation: u64) {
        while self.moved.changed().await.is_ok() && *self.moved.borrow_and_update() == generation {}
    }
}
