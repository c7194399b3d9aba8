//! Sharded events of a Redis Cluster (feature `cluster`): the subscription to every breaker's
//! own shard channel, and the count of the channels every node holds for it.

use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::client::shared::Shared;
use crate::client::subscription::{Attempt, Channel, Ended, EventTask, FixedNodes, Lost, Topology, on_message};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
use redis::{RedisError, RedisResult};
use std::collections::HashSet;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Sharded events (Redis >= 7.0): each breaker's transitions are published with SPUBLISH on its
/// own channel `<prefix>:{<name>}:events`, in its slot, so they travel within the breaker's
/// shard instead of over the whole cluster bus. The subscription keeps one RESP3 cluster
/// connection that SSUBSCRIBEs the channel of every breaker the client holds (new ones at
/// once, those that left at the next keepalive are unsubscribed), applies the messages, and
/// asks every node each `keepalive` how many shard channels our connection to it holds
/// (`CLIENT INFO`; a `PING` where the user may not run it): fewer than subscribed is a drop. A breaker's snapshot gets the long bound only once its
/// own channel is confirmed; a channel Redis unsubscribes on its own (its slot moved to another
/// master) is unconfirmed at once, its breaker's snapshot marked stale, and subscribed again.
/// Any dropped node connection or unanswered PING marks every snapshot stale and makes the
/// whole subscription again. A server without SSUBSCRIBE (< 7.0) gets the classic
/// subscription to `<prefix>:events` on `nodes` instead (the scripts fall back to PUBLISH
/// there).
pub(crate) async fn subscribe_sharded(mut task: EventTask, urls: Vec<String>, nodes: Vec<redis::Client>) {
    let prefix = task.prefix().to_string();
    let sharded = ShardChannels {
        urls,
        op_timeout: task.op_timeout(),
        // Until a breaker exists, SSUBSCRIBE support is checked with a channel of the prefix's
        // own: the channel of the empty name, which no breaker has (names are not empty), inside
        // the documented grant `&<prefix>:{*}:events`.
        probe_channel: format!("{prefix}:{{}}:events"),
        prefix,
        count_held: true,
    };
    if task.keep(sharded).await == Ended::Unsupported {
        let classic = Channel::new(FixedNodes::new(nodes), &task);
        task.keep(classic).await;
    }
}

/// The shard channels of the breakers a client holds.
struct ShardChannels {
    urls: Vec<String>,
    op_timeout: Duration,
    prefix: String,
    probe_channel: String,
    /// Whether the nodes say how many shard channels our connections hold (`CLIENT INFO`'s
    /// `ssub`): false once a node refused the command (the user lacks `+client|info`) or
    /// answered without the field; the keepalive is then a `PING`.
    count_held: bool,
}

impl ShardChannels {
    /// The shard channel of the breaker `name`.
    fn channel_of(&self, name: &str) -> String {
        format!("{}:{{{name}}}:events", self.prefix)
    }

    /// The breaker whose shard channel is `channel`.
    fn name_of(&self, channel: &[u8]) -> Option<String> {
        let channel = std::str::from_utf8(channel).ok()?;
        let name = channel.strip_prefix(self.prefix.as_str())?.strip_prefix(":{")?.strip_suffix("}:events")?;
        Some(name.to_string())
    }

    /// Connects with `client` and SSUBSCRIBEs the channel of every breaker the client holds
    /// (and the probe channel): the connection and the names asked for; `None` when the client
    /// is gone.
    async fn connect(
        &mut self,
        client: &ClusterClient,
        handle: &Weak<Handle<Inner>>,
    ) -> RedisResult<Option<(ClusterConnection, HashSet<String>, Arc<Shared>)>> {
        let conn = client.get_async_connection().await?;
        let Some(h) = handle.upgrade() else { return Ok(None) };
        // Sharded mode first: confirmations may arrive before SSUBSCRIBE returns.
        h.shared.set_shard_mode(true);
        let wanted: HashSet<String> = h.names().into_iter().collect();
        let mut channels: Vec<String> = wanted.iter().map(|n| self.channel_of(n)).collect();
        channels.push(self.probe_channel.clone());
        let shared = h.shared.clone();
        drop(h);
        let asked = channels.len();
        each_channel(&conn, channels.clone(), true).await?;
        // A node the new connection had not reached is connected by the SSUBSCRIBEs of its
        // channels, each racing to make its connection; those that lose the race are dropped
        // with the channels they subscribed: confirmed, yet deaf (seen in the torture harness
        // after a node's pause). By now every node has its one connection: where the nodes say
        // fewer channels than asked, or cannot say, every channel is subscribed once more on
        // it (SSUBSCRIBE of a channel held is a no-op), and counted again.
        if self.held_channels(&conn).await?.is_none_or(|held| held < asked) {
            each_channel(&conn, channels, true).await?;
            if let Some(held) = self.held_channels(&conn).await?
                && held < asked
            {
                tracing::warn!(held, asked, "the new event subscription holds fewer shard channels than it asked for");
                return Err((redis::ErrorKind::Io, "shard channels were lost while subscribing").into());
            }
        }
        Ok(Some((conn, wanted, shared)))
    }

    /// How many shard channels the connections of `conn` hold, summed over every node
    /// (`CLIENT INFO`'s `ssub`, Redis >= 7.0.3 and Valkey): a channel confirmed on a node
    /// connection that the cluster client has since replaced is no longer held, and its events
    /// are lost without a sign. `None` when the nodes cannot tell (the user may not run
    /// `CLIENT INFO`, or the server has no `ssub`): then only liveness is checked, from then on.
    async fn held_channels(&mut self, conn: &ClusterConnection) -> RedisResult<Option<usize>> {
        if !self.count_held {
            return Ok(None);
        }
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
        let answers = conn.clone().route_command(redis::cmd("CLIENT").arg("INFO").clone(), all).await?;
        let per_node: Vec<&redis::Value> = match &answers {
            redis::Value::Map(nodes) => nodes.iter().map(|(_, answer)| answer).collect(),
            single => vec![single],
        };
        let mut held = 0;
        for answer in per_node {
            match held_of(answer) {
                Held::Count(n) => held += n,
                Held::Unknown(why) => {
                    tracing::warn!(
                        reason = why,
                        "the nodes do not say which shard channels a connection holds: a lost one is noticed only when its connection drops (grant +client|info)"
                    );
                    self.count_held = false;
                    return Ok(None);
                }
                Held::Failed(e) => return Err(e),
            }
        }
        Ok(Some(held))
    }

    /// Subscribes the channels of the breakers made since the last call and unsubscribes those
    /// of the breakers that left the registry; `session.wanted` holds the names asked for.
    async fn follow_registry(&self, session: &mut ShardSession, handle: &Weak<Handle<Inner>>) -> Result<(), Lost> {
        let Some(h) = handle.upgrade() else { return Ok(()) };
        let registered: HashSet<String> = h.names().into_iter().collect();
        drop(h);
        let new: Vec<String> = registered.difference(&session.wanted).cloned().collect();
        if !new.is_empty() {
            let channels: Vec<String> = new.iter().map(|n| self.channel_of(n)).collect();
            let done = tokio::time::timeout(self.op_timeout, each_channel(&session.conn, channels, true)).await;
            if !matches!(done, Ok(Ok(()))) {
                return Err(Lost::Dropped("SSUBSCRIBE failed"));
            }
            session.wanted.extend(new);
        }
        let gone: Vec<String> = session.wanted.difference(&registered).cloned().collect();
        if !gone.is_empty() {
            let channels: Vec<String> = gone.iter().map(|n| self.channel_of(n)).collect();
            let done = tokio::time::timeout(self.op_timeout, each_channel(&session.conn, channels, false)).await;
            if !matches!(done, Ok(Ok(()))) {
                return Err(Lost::Dropped("SUNSUBSCRIBE failed"));
            }
            for name in &gone {
                session.shared.forget_shard_channel(name);
                session.wanted.remove(name);
            }
        }
        Ok(())
    }
}

/// A live sharded subscription.
struct ShardSession {
    conn: ClusterConnection,
    pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    /// The names whose channels were asked for.
    wanted: HashSet<String>,
    shared: Arc<Shared>,
}

/// What a sharded subscription hears.
enum ShardHeard {
    /// A push from a node, or `None` when the connection ended.
    Push(Option<redis::PushInfo>),
    /// A breaker was made: its channel is subscribed at once.
    BreakerMade,
}

impl Topology for ShardChannels {
    type Session = ShardSession;
    type Heard = ShardHeard;

    fn label(&self) -> &str {
        "shard channels"
    }

    async fn subscribe(&mut self, handle: &Weak<Handle<Inner>>) -> Attempt<ShardSession> {
        // Asked again with every subscription: a permission granted since, or a node upgraded
        // since, turns the count back on.
        self.count_held = true;
        let (tx, pushes) = tokio::sync::mpsc::unbounded_channel::<redis::PushInfo>();
        let client = match ClusterClient::builder(self.urls.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(self.op_timeout)
            .response_timeout(self.op_timeout)
            .retries(1)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the sharded event subscription");
                return Attempt::End(Ended::Stopped);
            }
        };
        match self.connect(&client, handle).await {
            Ok(Some((conn, wanted, shared))) => {
                tracing::debug!(breakers = wanted.len(), "subscribing to the breakers' shard channels");
                Attempt::Made(ShardSession { conn, pushes, wanted, shared })
            }
            Ok(None) => Attempt::End(Ended::Stopped),
            Err(e)
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                    && e.to_string().to_ascii_lowercase().contains("unknown command") =>
            {
                tracing::info!("the cluster has no sharded pub/sub (Redis < 7.0): events use one channel");
                if let Some(h) = handle.upgrade() {
                    h.shared.set_shard_mode(false);
                }
                Attempt::End(Ended::Unsupported)
            }
            Err(_) => Attempt::Failed,
        }
    }

    async fn hear(&mut self, session: &mut ShardSession) -> ShardHeard {
        tokio::select! {
            push = session.pushes.recv() => ShardHeard::Push(push),
            _ = session.shared.breaker_made.notified() => ShardHeard::BreakerMade,
        }
    }

    async fn act(
        &mut self,
        session: &mut ShardSession,
        heard: ShardHeard,
        handle: &Weak<Handle<Inner>>,
    ) -> Result<(), Lost> {
        use redis::{PushKind, Value};
        let push = match heard {
            ShardHeard::Push(Some(push)) => push,
            ShardHeard::Push(None) => return Err(Lost::Dropped("the connection ended")),
            ShardHeard::BreakerMade => return self.follow_registry(session, handle).await,
        };
        let Some(h) = handle.upgrade() else { return Err(Lost::ClientGone) };
        match (push.kind, push.data.as_slice()) {
            (PushKind::SMessage, [_, Value::BulkString(payload)]) => {
                on_message(&h, "shard channel", payload, Instant::now());
            }
            // A confirmation of a channel already confirmed in this session: the cluster
            // client subscribed it again on a node connection it replaced without a sign, and
            // events published in between were lost: the breaker asks Redis on its next call.
            (PushKind::SSubscribe, [Value::BulkString(channel), ..]) => {
                if let Some(name) = self.name_of(channel)
                    && h.shared.confirm_shard_channel(Some(&name))
                    && let Some(inner) = h.named(&name)
                {
                    inner.snapshot.mark_stale();
                }
            }
            // An unsubscription this task did not ask for (those it asks for leave `wanted`
            // first): Redis moved the channel's slot to another master and dropped its
            // subscribers. Events of the breaker no longer reach this client, so it loses the
            // long bound at once and asks Redis on its next call, and the channel is subscribed
            // again (on the slot's new owner: the cluster connection follows the MOVED answer).
            (PushKind::SUnsubscribe, [Value::BulkString(channel), ..]) => {
                // The probe channel too: else the count of held channels would be short by
                // one from then on.
                let again = if channel.as_slice() == self.probe_channel.as_bytes() {
                    self.probe_channel.clone()
                } else {
                    let Some(name) = self.name_of(channel).filter(|name| session.wanted.contains(name)) else {
                        return Ok(());
                    };
                    h.shared.forget_shard_channel(&name);
                    if let Some(inner) = h.named(&name) {
                        inner.snapshot.mark_stale();
                    }
                    tracing::info!(breaker = %name, "redis unsubscribed a breaker's shard channel (its slot moved); subscribing again");
                    self.channel_of(&name)
                };
                drop(h);
                let again = tokio::time::timeout(self.op_timeout, each_channel(&session.conn, vec![again], true));
                if !matches!(again.await, Ok(Ok(()))) {
                    return Err(Lost::Dropped("SSUBSCRIBE after a slot moved failed"));
                }
            }
            (PushKind::Disconnection, _) => return Err(Lost::Dropped("a node's connection dropped")),
            _ => {}
        }
        Ok(())
    }

    async fn keepalive(&mut self, session: &mut ShardSession, handle: &Weak<Handle<Inner>>) -> Result<(), Lost> {
        // Every node answers on the connection that carries its subscriptions, and says how
        // many shard channels that connection holds: fewer than asked for means a channel was
        // lost with a connection the cluster client replaced, and the whole subscription is
        // made again (every snapshot marked stale).
        let mut held = tokio::time::timeout(self.op_timeout, self.held_channels(&session.conn)).await;
        // The breakers' channels and the probe channel.
        let asked = session.wanted.len() + 1;
        if matches!(held, Ok(Ok(Some(n))) if n < asked) {
            // Short: a slot move's unsubscription may be waiting in the queue, its channel
            // subscribed again once applied. Apply what was heard, then count again.
            while let Ok(push) = session.pushes.try_recv() {
                self.act(session, ShardHeard::Push(Some(push)), handle).await?;
            }
            held = tokio::time::timeout(self.op_timeout, self.held_channels(&session.conn)).await;
        }
        match held {
            Ok(Ok(Some(held))) if held < asked => {
                tracing::warn!(held, asked, "a node connection no longer holds every shard channel");
                return Err(Lost::Dropped("a shard channel was lost with its node connection"));
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
                let pinged =
                    tokio::time::timeout(self.op_timeout, session.conn.route_command(redis::cmd("PING"), all)).await;
                if !matches!(pinged, Ok(Ok(_))) {
                    return Err(Lost::Dropped("a node did not answer the keepalive PING"));
                }
            }
            Ok(Err(_)) | Err(_) => return Err(Lost::Dropped("a node did not answer the keepalive")),
        }
        self.follow_registry(session, handle).await
    }

    fn dropped(&mut self, handle: &Weak<Handle<Inner>>) {
        if let Some(h) = handle.upgrade() {
            h.shared.confirm_shard_channel(None);
        }
    }
}

/// SSUBSCRIBEs (or SUNSUBSCRIBEs) each channel with a command of its own (one command may only
/// name channels of one slot), 64 in flight.
async fn each_channel(conn: &ClusterConnection, channels: Vec<String>, subscribe: bool) -> RedisResult<()> {
    use futures_util::StreamExt;
    let mut done = futures_util::stream::iter(channels)
        .map(|channel| {
            let mut conn = conn.clone();
            async move { if subscribe { conn.ssubscribe(channel).await } else { conn.sunsubscribe(channel).await } }
        })
        .buffer_unordered(64);
    while let Some(result) = done.next().await {
        result?;
    }
    Ok(())
}

/// What one node said of the shard channels of our connection to it.
enum Held {
    Count(usize),
    /// It cannot say (refused `CLIENT INFO`, or answered without `ssub`).
    Unknown(&'static str),
    Failed(RedisError),
}

/// Reads `ssub=<n>` from one node's answer to `CLIENT INFO`.
fn held_of(answer: &redis::Value) -> Held {
    use redis::Value;
    let text = match answer {
        Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        Value::VerbatimString { text, .. } => text.clone(),
        Value::SimpleString(text) => text.clone(),
        Value::ServerError(e) if e.code() == "NOPERM" => return Held::Unknown("CLIENT INFO is not permitted"),
        Value::ServerError(e) => return Held::Failed(e.clone().into()),
        // The redis crate (1.8.1) hands a push of a subscription kind to the oldest request in
        // flight on its node connection: the SUNSUBSCRIBE a node sends when a slot moves away,
        // arriving while CLIENT INFO waits, is that request's answer (and CLIENT INFO's own
        // answer goes to the next request, or nowhere). The connection's replies are not to be
        // trusted: the session is made again, as after a dropped node connection.
        Value::Push { kind, .. } => {
            return Held::Failed(RedisError::from((
                redis::ErrorKind::Io,
                "a push answered CLIENT INFO",
                format!("{kind:?} (a slot moved while it was in flight)"),
            )));
        }
        _ => return Held::Unknown("CLIENT INFO answered in an unknown shape"),
    };
    let field = text.split_ascii_whitespace().find_map(|kv| kv.strip_prefix("ssub="));
    match field.map(str::parse::<usize>) {
        Some(Ok(n)) => Held::Count(n),
        _ => Held::Unknown("CLIENT INFO has no ssub field (Redis < 7.0.3)"),
    }
}

#[cfg(test)]
mod tests {
    use super::{Held, held_of};
    use redis::Value;

    #[test]
    fn the_held_count_is_read_from_every_shape_of_client_info() {
        let line = "id=7 addr=127.0.0.1:50000 laddr=127.0.0.1:7000 fd=9 name= db=0 sub=0 psub=0 ssub=12 multi=-1";
        for answer in [
            Value::BulkString(line.as_bytes().to_vec()),
            Value::VerbatimString { format: redis::VerbatimFormat::Text, text: format!("{line}\n") },
            Value::SimpleString(line.to_string()),
        ] {
            assert!(matches!(held_of(&answer), Held::Count(12)), "{answer:?}");
        }
        let old = Value::BulkString(b"id=7 addr=127.0.0.1:50000 sub=0 psub=0 multi=-1".to_vec());
        assert!(matches!(held_of(&old), Held::Unknown(_)), "no ssub: cannot tell");
        let refused =
            redis::parse_redis_value(b"-NOPERM this user has no permissions to run the 'client|info' command\r\n")
                .expect("a server error");
        assert!(matches!(held_of(&refused), Held::Unknown(_)), "NOPERM: cannot tell");
        assert!(matches!(held_of(&Value::Nil), Held::Unknown(_)));
        // A slot's SUNSUBSCRIBE push taken as the answer: not a reason to stop counting.
        let push = Value::Push { kind: redis::PushKind::SUnsubscribe, data: vec![Value::BulkString(b"ch".to_vec())] };
        assert!(matches!(held_of(&push), Held::Failed(_)), "a push is no answer: the session is made again");
    }
}
