//! How the Redis store holds its connection: one that can be cloned per operation
//! ([`SharedConn`]), made again when it must be replaced ([`Reconnect`]), and the one
//! forwarding connection ([`Forward`]) behind every connection this crate wraps — the
//! per-operation handle, the lazy cluster connection, the Sentinel one. Each of those writes
//! only how a request reaches the connection in use (its [`Route`]); the forwarding of
//! commands and pipelines is written here once.

use redis::aio::ConnectionLike;
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// A connection that can be cloned per operation: a `ConnectionManager`, a
/// `MultiplexedConnection`, a cluster connection, or the user's own.
pub(crate) trait SharedConn: Send + Sync + 'static {
    /// A clone of the connection for one operation.
    fn handle(&self) -> ConnHandle;
}

impl<C> SharedConn for C
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    fn handle(&self) -> ConnHandle {
        Forward(Box::new(self.clone()))
    }
}

/// One operation's connection: a clone of the store's connection, whatever its type.
pub(crate) type ConnHandle = Forward<Box<dyn ConnectionLike + Send>>;

/// Makes a fresh connection, for when the current one must be replaced (READONLY: the master
/// it reached was demoted).
pub(crate) type Reconnect = Box<dyn Fn() -> Option<Box<dyn SharedConn>> + Send + Sync>;

/// One request a [`Forward`] passes on: a command, or some commands of a pipeline.
pub(crate) trait Request: Send {
    /// What Redis answers to it.
    type Reply: Send;

    /// Sends it on `conn`.
    fn send<'c, C>(self, conn: &'c mut C) -> RedisFuture<'c, Self::Reply>
    where
        C: ConnectionLike + Send + ?Sized,
        Self: 'c;
}

/// One command.
struct Command<'a>(&'a Cmd);

impl Request for Command<'_> {
    type Reply = Value;

    fn send<'c, C>(self, conn: &'c mut C) -> RedisFuture<'c, Value>
    where
        C: ConnectionLike + Send + ?Sized,
        Self: 'c,
    {
        conn.req_packed_command(self.0)
    }
}

/// `count` commands of a pipeline, from `offset`.
struct Commands<'a> {
    pipeline: &'a Pipeline,
    offset: usize,
    count: usize,
}

impl Request for Commands<'_> {
    type Reply = Vec<Value>;

    fn send<'c, C>(self, conn: &'c mut C) -> RedisFuture<'c, Vec<Value>>
    where
        C: ConnectionLike + Send + ?Sized,
        Self: 'c,
    {
        conn.req_packed_commands(self.pipeline, self.offset, self.count)
    }
}

/// Where a [`Forward`] sends each request: to the connection in use, reached as this route
/// knows how (made on first use, asked of the sentinels, ...), and what the route learns from
/// how the request ended (a broken connection to forget, an error to name better).
pub(crate) trait Route: Send {
    /// Sends `request` on the connection in use.
    fn send<'a, R: Request + 'a>(&'a mut self, request: R) -> RedisFuture<'a, R::Reply>;

    /// The database the connection in use is bound to.
    fn db(&self) -> i64 {
        0
    }
}

/// A connection that forwards every request along its [`Route`].
#[derive(Clone)]
pub(crate) struct Forward<R>(pub(crate) R);

impl<R: Route> ConnectionLike for Forward<R> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.send(Command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.send(Commands { pipeline, offset, count })
    }

    fn get_db(&self) -> i64 {
        self.0.db()
    }
}

/// The per-operation handle: the request goes to the boxed connection as it is (no future of
/// its own).
impl Route for Box<dyn ConnectionLike + Send> {
    fn send<'a, R: Request + 'a>(&'a mut self, request: R) -> RedisFuture<'a, R::Reply> {
        request.send(&mut **self)
    }

    fn db(&self) -> i64 {
        self.get_db()
    }
}
