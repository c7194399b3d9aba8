//! One connection per client: the commands and the event subscription share one multiplexed
//! connection that speaks RESP3 (`HELLO 3`, Redis >= 6, Valkey), on which the events arrive as
//! push messages, checked by one keepalive. Made on first use and made again after it broke,
//! it is named by a generation, so that the subscription notices when the connection it
//! subscribed on was replaced (its channel is then no longer held, and every snapshot is marked
//! stale). A server that refuses RESP3 (no HELLO, or a proxy that does not speak it) gets
//! RESP2 for the commands and a pub/sub connection of its own for the events, as before.

use crate::store::conn::{Request, Route};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, PushInfo, RedisFuture, RedisResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

/// The push messages of one connection, held by the subscription while it lives on it.
pub(crate) type Pushes = Arc<tokio::sync::Mutex<UnboundedReceiver<PushInfo>>>;

/// The connection in use.
struct Live {
    conn: MultiplexedConnection,
    generation: u64,
    /// Its push messages (`None` for a RESP2 connection).
    pushes: Option<Pushes>,
}

struct Slot {
    /// The server, reached with RESP3.
    resp3: redis::Client,
    /// The same server with RESP2, once it refused RESP3.
    resp2: redis::Client,
    timeouts: AsyncConnectionConfig,
    current: Mutex<Option<Live>>,
    /// Held while a connection is made, so that callers arriving meanwhile wait for it instead
    /// of making one each.
    making: tokio::sync::Mutex<()>,
    /// +1 each time a connection is made or forgotten.
    generation: watch::Sender<u64>,
    /// The server refused RESP3: RESP2 for the life of the client.
    refused: AtomicBool,
}

/// The one connection of a client made from a URL (plain or TLS). Cheap to clone.
#[derive(Clone)]
pub(crate) struct OneConn(Arc<Slot>);

/// What the event subscription finds on the connection.
pub(crate) enum Link {
    /// A RESP3 connection: subscribe on it and hear its pushes.
    Resp3 { conn: MultiplexedConnection, generation: u64, pushes: Pushes },
    /// The server refused RESP3: the events need a connection of their own.
    Resp2,
}

impl OneConn {
    /// The connection to the server of `client` (its protocol is chosen here), each attempt to
    /// connect and each answer bounded by `op_timeout`.
    pub(crate) fn new(client: &redis::Client, op_timeout: Duration) -> RedisResult<OneConn> {
        let info = client.get_connection_info().clone();
        let with = |protocol| {
            let settings = info.redis_settings().clone().set_protocol(protocol);
            redis::Client::open(info.clone().set_redis_settings(settings))
        };
        let timeouts = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(op_timeout))
            .set_response_timeout(Some(op_timeout));
        Ok(OneConn(Arc::new(Slot {
            resp3: with(ProtocolVersion::RESP3)?,
            resp2: with(ProtocolVersion::RESP2)?,
            timeouts,
            current: Mutex::new(None),
            making: tokio::sync::Mutex::new(()),
            generation: watch::channel(0).0,
            refused: AtomicBool::new(false),
        })))
    }

    fn current(&self) -> std::sync::MutexGuard<'_, Option<Live>> {
        self.0.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection in use with its generation and pushes, made now if there is none.
    async fn live(&self) -> RedisResult<(MultiplexedConnection, u64, Option<Pushes>)> {
        let in_use = |conn: &Self| conn.current().as_ref().map(|l| (l.conn.clone(), l.generation, l.pushes.clone()));
        if let Some(live) = in_use(self) {
            return Ok(live);
        }
        let _making = self.0.making.lock().await;
        if let Some(live) = in_use(self) {
            return Ok(live);
        }
        let (conn, pushes) = self.make().await?;
        let mut generation = 0;
        self.0.generation.send_modify(|g| {
            *g += 1;
            generation = *g;
        });
        *self.current() = Some(Live { conn: conn.clone(), generation, pushes: pushes.clone() });
        Ok((conn, generation, pushes))
    }

    /// Connects with RESP3, or with RESP2 once the server refused RESP3.
    async fn make(&self) -> RedisResult<(MultiplexedConnection, Option<Pushes>)> {
        if !self.0.refused.load(Ordering::Acquire) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let config = self.0.timeouts.clone().set_push_sender(tx);
            match self.0.resp3.get_multiplexed_async_connection_with_config(&config).await {
                Ok(conn) => return Ok((conn, Some(Arc::new(tokio::sync::Mutex::new(rx))))),
                Err(e) if refuses_resp3(&e) => {
                    tracing::warn!(error = %e, "the server refused RESP3 (HELLO 3): events use a connection of their own");
                    self.0.refused.store(true, Ordering::Release);
                }
                Err(e) => return Err(e),
            }
        }
        let conn = self.0.resp2.get_multiplexed_async_connection_with_config(&self.0.timeouts).await?;
        Ok((conn, None))
    }

    /// Forgets the connection of `generation` (broken, or no longer trusted): the next
    /// operation makes another, and a subscription on it drops.
    pub(crate) fn forget(&self, generation: u64) {
        let mut current = self.current();
        if current.as_ref().is_some_and(|l| l.generation == generation) {
            *current = None;
            self.0.generation.send_modify(|g| *g += 1);
        }
    }

    /// Forgets whatever connection is in use (READONLY: the node was demoted).
    pub(crate) fn forget_current(&self) {
        let generation = self.current().as_ref().map(|l| l.generation);
        if let Some(generation) = generation {
            self.forget(generation);
        }
    }

    /// The connection for the event subscription, made now if there is none.
    pub(crate) async fn link(&self) -> RedisResult<Link> {
        match self.live().await? {
            (conn, generation, Some(pushes)) => Ok(Link::Resp3 { conn, generation, pushes }),
            (_, _, None) => Ok(Link::Resp2),
        }
    }

    /// Follows the generation of the connection in use.
    pub(crate) fn generations(&self) -> watch::Receiver<u64> {
        self.0.generation.subscribe()
    }

    /// The RESP2 client of the server, for a subscription of its own.
    pub(crate) fn resp2_client(&self) -> redis::Client {
        self.0.resp2.clone()
    }
}

/// Whether connecting failed because the server does not speak RESP3 (HELLO unknown, or
/// answered with an error that is not about the credentials), rather than being unreachable.
fn refuses_resp3(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    match e.kind() {
        ErrorKind::RESP3NotSupported => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            let said = e.to_string().to_ascii_lowercase();
            said.contains("hello") || said.contains("noproto") || said.contains("protocol")
        }
        _ => e.code() == Some("NOPROTO"),
    }
}

/// Each request goes to the connection in use (made on first use); an error after which the
/// connection cannot be used again forgets it.
impl Route for OneConn {
    fn send<'a, R: Request + 'a>(&'a mut self, request: R) -> RedisFuture<'a, R::Reply> {
        Box::pin(async move {
            let (mut conn, generation, _) = self.live().await?;
            let result = request.send(&mut conn).await;
            if let Err(e) = &result
                && (e.is_unrecoverable_error() || e.is_connection_dropped())
            {
                self.forget(generation);
            }
            result
        })
    }

    fn db(&self) -> i64 {
        self.0.resp2.get_connection_info().redis_settings().db()
    }
}
