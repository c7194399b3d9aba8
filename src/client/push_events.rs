//! The events channel subscribed on the client's one connection ([`OneConn`]): SUBSCRIBE on the
//! RESP3 connection the commands use, the messages heard as push messages, the keepalive a
//! PING on that connection (so one keepalive checks both). The subscription drops (every
//! snapshot marked stale, subscribed again with backoff) when that connection ends or is
//! replaced, when it does not answer the PING, or when Redis unsubscribes the channel. A server
//! that refuses RESP3 ends this topology with [`Ended::Unsupported`]: the classic subscription
//! on a connection of its own takes over.

use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::client::subscription::{Attempt, Ended, EventTask, Lost, Topology, on_message};
use crate::name::events_channel;
use crate::store::one_conn::{Link, OneConn};
use redis::aio::MultiplexedConnection;
use redis::{PushInfo, PushKind, Value};
use std::sync::Weak;
use std::time::{Duration, Instant};
use tokio::sync::{OwnedMutexGuard, watch};

/// The channel of the prefix, on the client's one connection.
pub(crate) struct PushChannel {
    conn: OneConn,
    channel: String,
    op_timeout: Duration,
}

impl PushChannel {
    /// Subscribes the channel of `task`'s prefix on `conn`.
    pub(crate) fn new(conn: OneConn, task: &EventTask) -> PushChannel {
        PushChannel { conn, channel: events_channel(task.prefix()), op_timeout: task.op_timeout() }
    }
}

/// A live subscription on the connection of `generation`.
pub(crate) struct PushSession {
    conn: MultiplexedConnection,
    generation: u64,
    /// That connection's push messages, held while the session lives.
    pushes: OwnedMutexGuard<tokio::sync::mpsc::UnboundedReceiver<PushInfo>>,
    generations: watch::Receiver<u64>,
}

/// What the subscription hears.
pub(crate) enum PushHeard {
    /// A push message, or `None` when the connection ended.
    Push(Option<PushInfo>),
    /// The connection was forgotten (broken, READONLY) and another will be made.
    Replaced,
}

/// Resolves once the connection in use is no longer the one of `generation`.
async fn replaced(generations: &mut watch::Receiver<u64>, generation: u64) {
    loop {
        if *generations.borrow_and_update() != generation {
            return;
        }
        if generations.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

impl Topology for PushChannel {
    type Session = PushSession;
    type Heard = PushHeard;

    fn label(&self) -> &str {
        &self.channel
    }

    async fn subscribe(&mut self, _handle: &Weak<Handle<Inner>>) -> Attempt<PushSession> {
        let (mut conn, generation, pushes) = match self.conn.link().await {
            Ok(Link::Resp3 { conn, generation, pushes }) => (conn, generation, pushes),
            Ok(Link::Resp2) => return Attempt::End(Ended::Unsupported),
            Err(e) => {
                tracing::debug!(channel = self.channel, error = %e, "could not connect to subscribe yet");
                return Attempt::Failed;
            }
        };
        let pushes = pushes.lock_owned().await;
        match conn.subscribe(&self.channel).await {
            Ok(()) => {}
            Err(e) => {
                if e.is_unrecoverable_error() || e.is_connection_dropped() {
                    self.conn.forget(generation);
                }
                tracing::debug!(channel = self.channel, error = %e, "could not subscribe yet");
                return Attempt::Failed;
            }
        }
        let generations = self.conn.generations();
        if *generations.borrow() != generation {
            return Attempt::Again;
        }
        Attempt::Made(PushSession { conn, generation, pushes, generations })
    }

    async fn hear(&mut self, session: &mut PushSession) -> PushHeard {
        tokio::select! {
            push = session.pushes.recv() => PushHeard::Push(push),
            () = replaced(&mut session.generations, session.generation) => PushHeard::Replaced,
        }
    }

    async fn act(
        &mut self,
        session: &mut PushSession,
        heard: PushHeard,
        handle: &Weak<Handle<Inner>>,
    ) -> Result<(), Lost> {
        let push = match heard {
            PushHeard::Push(Some(push)) => push,
            PushHeard::Push(None) => {
                self.conn.forget(session.generation);
                return Err(Lost::Dropped("the connection ended"));
            }
            PushHeard::Replaced => return Err(Lost::Dropped("the connection was replaced")),
        };
        match (push.kind, push.data.as_slice()) {
            (PushKind::Message, [_, Value::BulkString(payload)]) => {
                let at = Instant::now();
                let Some(h) = handle.upgrade() else { return Err(Lost::ClientGone) };
                on_message(&h, &self.channel, payload, at);
                Ok(())
            }
            (PushKind::Disconnection, _) => {
                self.conn.forget(session.generation);
                Err(Lost::Dropped("the connection ended"))
            }
            // Not asked for by this task (it never unsubscribes): the channel is no longer held.
            (PushKind::Unsubscribe, _) => Err(Lost::Dropped("redis unsubscribed the channel")),
            _ => Ok(()),
        }
    }

    async fn keepalive(&mut self, session: &mut PushSession, _handle: &Weak<Handle<Inner>>) -> Result<(), Lost> {
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.op_timeout, ping.query_async::<Value>(&mut session.conn)).await {
            Ok(Ok(_)) => Ok(()),
            _ => {
                // Not trusted for the commands either: the next operation connects again.
                self.conn.forget(session.generation);
                Err(Lost::Dropped("it did not answer a PING"))
            }
        }
    }
}

/// The subscription of a client made from a URL: on its one connection, or, when the server
/// refuses RESP3, on a connection of its own.
pub(crate) async fn subscribe_pushed(mut task: EventTask, conn: OneConn) {
    let resp2 = conn.resp2_client();
    if task.keep(PushChannel::new(conn, &task)).await == Ended::Unsupported {
        let classic =
            crate::client::subscription::Channel::new(crate::client::subscription::FixedNodes::new(vec![resp2]), &task);
        task.keep(classic).await;
    }
}
