//! The event subscription, written once: [`EventTask::keep`] connects and subscribes, says the
//! subscription is live, checks it with a PING every `keepalive`, applies what it hears, and
//! when it drops marks every snapshot stale and subscribes again with backoff. What differs by
//! topology is a [`Topology`]: here [`Channel`], the one channel of the prefix on a pub/sub
//! connection of its own, on nodes given by [`Nodes`] ([`FixedNodes`] for a URL whose server
//! refuses RESP3; Sentinel's node in `store/sentinel.rs`); in `push_events.rs` that channel on
//! the command connection of a client made from a URL (RESP3 push messages); the cluster's
//! sharded channels in `store/shard_events.rs`.

use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::client::tasks::Backoff;
use crate::events::Wire;
use crate::name::events_channel;
use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How one attempt to subscribe ended.
pub(crate) enum Attempt<S> {
    /// Subscribed: the live subscription.
    Made(S),
    /// Not now (unreachable, refused): try again after the backoff.
    Failed,
    /// Made where it no longer belongs (the node in use moved meanwhile): try again at once.
    Again,
    /// The client is gone, or the subscription cannot be made at all: the loop ends.
    End(Ended),
}

/// Why [`EventTask::keep`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The client stopped (its last handle is gone), or cannot subscribe with this topology
    /// for good (a configuration error, logged).
    Stopped,
    /// The servers do not have what this topology needs (SSUBSCRIBE before Redis 7.0, RESP3
    /// for a subscription on the command connection).
    Unsupported,
}

/// Why a live subscription ended.
pub(crate) enum Lost {
    /// It dropped, for this reason: subscribe again.
    Dropped(&'static str),
    /// The client is gone: the loop ends.
    ClientGone,
}

/// What differs between the ways events reach a client.
pub(crate) trait Topology: Send {
    /// A live subscription.
    type Session: Send;
    /// One thing a live subscription heard.
    type Heard: Send;

    /// Names the subscription in logs (its channel).
    fn label(&self) -> &str;

    /// One attempt to subscribe; [`EventTask::keep`] bounds it by `op_timeout` (at least a
    /// second).
    fn subscribe(&mut self, handle: &Weak<Handle<Inner>>) -> impl Future<Output = Attempt<Self::Session>> + Send;

    /// Waits for what the subscription hears next. Dropped when the keepalive is due, so it
    /// must lose nothing when dropped.
    fn hear(&mut self, session: &mut Self::Session) -> impl Future<Output = Self::Heard> + Send;

    /// Acts on what was heard.
    fn act(
        &mut self,
        session: &mut Self::Session,
        heard: Self::Heard,
        handle: &Weak<Handle<Inner>>,
    ) -> impl Future<Output = Result<(), Lost>> + Send;

    /// Checks that the subscription is alive (each `keepalive`), within `op_timeout`.
    fn keepalive(
        &mut self,
        session: &mut Self::Session,
        handle: &Weak<Handle<Inner>>,
    ) -> impl Future<Output = Result<(), Lost>> + Send;

    /// After the subscription dropped, before every snapshot is marked stale.
    fn dropped(&mut self, _handle: &Weak<Handle<Inner>>) {}
}

/// What the event subscription task of a client is given: a weak handle (it ends with the
/// client), the client's prefix, `op_timeout` and `events_keepalive`, and its stop signal.
pub(crate) struct EventTask {
    handle: Weak<Handle<Inner>>,
    prefix: String,
    op_timeout: Duration,
    keepalive: Duration,
    stop: watch::Receiver<()>,
}

impl EventTask {
    /// The subscription task of the client of `handle`.
    pub(crate) fn of(handle: &Arc<Handle<Inner>>) -> EventTask {
        let config = &handle.shared.config;
        EventTask {
            handle: Arc::downgrade(handle),
            prefix: config.prefix.clone(),
            op_timeout: config.op_timeout,
            keepalive: config.events_keepalive,
            stop: handle.stopped(),
        }
    }

    /// The client's `op_timeout`.
    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// The client's prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Keeps `topology`'s subscription and applies what it hears until the client stops.
    /// Pub/sub is at most once, so whenever the subscription is made or lost every snapshot is
    /// marked stale; it subscribes again with backoff. The PING every `keepalive` notices a
    /// connection that is open but dead (a blackholed path): no answer within `op_timeout`
    /// counts as a drop.
    pub(crate) async fn keep<T: Topology>(&mut self, mut topology: T) -> Ended {
        let (handle, stop) = (&self.handle, &mut self.stop);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        loop {
            let bound = self.op_timeout.max(Duration::from_secs(1));
            let attempt = tokio::select! {
                a = tokio::time::timeout(bound, topology.subscribe(handle)) => a,
                _ = stop.changed() => return Ended::Stopped,
            };
            let mut session = match attempt {
                Ok(Attempt::Made(session)) => session,
                Ok(Attempt::Again) => continue,
                Ok(Attempt::End(ended)) => return ended,
                Ok(Attempt::Failed) | Err(_) => {
                    if !backoff.wait(stop).await {
                        return Ended::Stopped;
                    }
                    continue;
                }
            };
            backoff.reset();
            if !subscription_changed(handle, true) {
                return Ended::Stopped;
            }
            tracing::debug!(channel = topology.label(), "subscribed to events");
            let mut ping = tokio::time::interval(self.keepalive);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping.tick().await;
            let why = loop {
                // Messages that arrive during a keepalive wait for `hear`, in order.
                let heard = tokio::select! {
                    heard = topology.hear(&mut session) => Some(heard),
                    _ = ping.tick() => None,
                    _ = stop.changed() => return Ended::Stopped,
                };
                let kept = match heard {
                    Some(heard) => topology.act(&mut session, heard, handle).await,
                    None => topology.keepalive(&mut session, handle).await,
                };
                match kept {
                    Ok(()) => {}
                    Err(Lost::Dropped(why)) => break why,
                    Err(Lost::ClientGone) => return Ended::Stopped,
                }
            };
            topology.dropped(handle);
            if !subscription_changed(handle, false) {
                return Ended::Stopped;
            }
            tracing::warn!(channel = topology.label(), reason = why, "the event subscription dropped; resubscribing");
        }
    }
}

/// Records that the event subscription was made (`live`) or lost. Either way events may have
/// been missed, so every snapshot asks Redis on its next call. `false` when the client is gone.
pub(crate) fn subscription_changed(handle: &Weak<Handle<Inner>>, live: bool) -> bool {
    let Some(h) = handle.upgrade() else { return false };
    h.shared.set_subscribed(live);
    for inner in h.registered() {
        inner.snapshot.mark_stale();
    }
    true
}

/// Applies one message of the event channel `channel`, received at `at`, to its breaker's
/// snapshot and hands it to the client's subscribers.
pub(crate) fn on_message(h: &Handle<Inner>, channel: &str, payload: &[u8], at: Instant) {
    match Wire::parse(payload) {
        Some(wire) => {
            if let Some(inner) = h.named(&wire.name) {
                inner.on_event(&wire, at);
            }
            if let Some(event) = wire.event(&h.shared.id) {
                let _ = h.shared.all_events.send(event);
            }
        }
        None => tracing::debug!(channel, "ignored an event that is not ours"),
    }
}

/// Where the one events channel of the prefix is subscribed.
pub(crate) trait Nodes: Send {
    /// The node for the next attempt, with a mark that tells later whether it is still the node
    /// in use; `Ok(None)` when there is none at all.
    fn pick(&mut self) -> impl Future<Output = redis::RedisResult<Option<(redis::Client, u64)>>> + Send;

    /// Whether the node of `mark` is still the node in use.
    fn in_use(&mut self, _mark: u64) -> bool {
        true
    }

    /// Resolves once the node in use is no longer the node of `mark` (never, for fixed nodes).
    fn moved(&mut self, _mark: u64) -> impl Future<Output = ()> + Send {
        std::future::pending::<()>()
    }
}

/// Fixed nodes, tried in turn: one Redis, or the nodes of a cluster without sharded pub/sub.
pub(crate) struct FixedNodes {
    nodes: Vec<redis::Client>,
    next: usize,
}

impl FixedNodes {
    /// Tries `nodes` in turn, from the first.
    pub(crate) fn new(nodes: Vec<redis::Client>) -> FixedNodes {
        FixedNodes { nodes, next: 0 }
    }
}

impl Nodes for FixedNodes {
    async fn pick(&mut self) -> redis::RedisResult<Option<(redis::Client, u64)>> {
        let node = self.nodes.get(self.next % self.nodes.len().max(1)).cloned();
        self.next += 1;
        Ok(node.map(|node| (node, 0)))
    }
}

/// The one channel of the prefix (`<prefix>:events`), subscribed on a node of `N`.
pub(crate) struct Channel<N> {
    nodes: N,
    channel: String,
    op_timeout: Duration,
}

impl<N: Nodes> Channel<N> {
    /// Subscribes the channel of `task`'s prefix on a node of `nodes`; a PING unanswered within
    /// its `op_timeout` is a drop.
    pub(crate) fn new(nodes: N, task: &EventTask) -> Channel<N> {
        Channel { nodes, channel: events_channel(task.prefix()), op_timeout: task.op_timeout() }
    }
}

/// A live subscription to one channel, on the node of `mark`.
pub(crate) struct ChannelSession {
    sink: PubSubSink,
    messages: PubSubStream,
    mark: u64,
}

/// What a subscription to one channel hears.
pub(crate) enum ChannelHeard {
    /// A message, or `None` when the connection ended.
    Message(Option<redis::Msg>),
    /// The node in use moved away from the subscription's.
    Moved,
}

impl<N: Nodes> Topology for Channel<N> {
    type Session = ChannelSession;
    type Heard = ChannelHeard;

    fn label(&self) -> &str {
        &self.channel
    }

    async fn subscribe(&mut self, _handle: &Weak<Handle<Inner>>) -> Attempt<ChannelSession> {
        let node = match self.nodes.pick().await {
            Ok(Some(node)) => node,
            Ok(None) => return Attempt::End(Ended::Stopped),
            Err(e) => {
                tracing::debug!(channel = self.channel, error = %e, "no node to subscribe on yet");
                return Attempt::Failed;
            }
        };
        let (client, mark) = node;
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&self.channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match connect.await {
            Ok(pubsub) if self.nodes.in_use(mark) => {
                let (sink, messages) = pubsub.split();
                Attempt::Made(ChannelSession { sink, messages, mark })
            }
            Ok(_) => Attempt::Again,
            Err(e) => {
                tracing::debug!(channel = self.channel, error = %e, "could not subscribe yet");
                Attempt::Failed
            }
        }
    }

    async fn hear(&mut self, session: &mut ChannelSession) -> ChannelHeard {
        tokio::select! {
            m = session.messages.next() => ChannelHeard::Message(m),
            () = self.nodes.moved(session.mark) => ChannelHeard::Moved,
        }
    }

    async fn act(
        &mut self,
        _session: &mut ChannelSession,
        heard: ChannelHeard,
        handle: &Weak<Handle<Inner>>,
    ) -> Result<(), Lost> {
        let msg = match heard {
            ChannelHeard::Message(Some(msg)) => msg,
            ChannelHeard::Message(None) => return Err(Lost::Dropped("the connection ended")),
            ChannelHeard::Moved => return Err(Lost::Dropped("the commands moved to another node")),
        };
        let at = Instant::now();
        let Some(h) = handle.upgrade() else { return Err(Lost::ClientGone) };
        on_message(&h, &self.channel, msg.get_payload_bytes(), at);
        Ok(())
    }

    async fn keepalive(&mut self, session: &mut ChannelSession, _handle: &Weak<Handle<Inner>>) -> Result<(), Lost> {
        match tokio::time::timeout(self.op_timeout, session.sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Lost::Dropped("it did not answer a PING")),
        }
    }
}
