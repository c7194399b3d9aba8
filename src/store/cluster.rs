//! Redis Cluster (feature `cluster`). One breaker's keys share a hash tag, so every script
//! runs on the one master that owns the breaker's slot; its events go with SPUBLISH to its own
//! shard channel (Redis >= 7.0), else PUBLISH reaches every node.

use crate::store::conn::{Request, Route};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisFuture, RedisResult};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A cluster connection made on first use, so a client created while the cluster cannot be
/// reached still serves calls (by the degraded mode) and joins the cluster when it answers.
#[derive(Clone)]
pub(crate) struct LazyCluster {
    client: ClusterClient,
    conn: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    /// Connects through `client` when first used.
    pub(crate) fn new(client: ClusterClient) -> LazyCluster {
        LazyCluster { client, conn: Arc::new(OnceCell::new()) }
    }

    /// The cluster connection, made now if it is not yet.
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

/// Each request goes to the cluster connection, made on first use; a redirection it gives up
/// on is an outage ([`owner_not_reached`]).
impl Route for LazyCluster {
    fn send<'a, R: Request + 'a>(&'a mut self, request: R) -> RedisFuture<'a, R::Reply> {
        Box::pin(async move { request.send(&mut self.connection().await?).await.map_err(owner_not_reached) })
    }
}

/// A MOVED or ASK that the cluster connection gives up as a command's error, turned into what
/// it is: the slot's owner was not reached, an outage. The connection follows a redirection with
/// its one retry (`retries(1)`, see `Client::connect_cluster`); when its connection to the
/// owner had dropped (a restarted node, a killed client) the first attempt failed, the retry
/// went to another master (the connection picks any node when the owner's is down), and that
/// master's MOVED ends the command. Nothing ran there, but the first attempt may have run: as
/// an outage, the batch of counts the command carried is in doubt and sent again under its id,
/// which Redis counts once. Taken for Redis refusing the breaker's script (before), the batch
/// was dropped, and the metrics lost its counts (the torture harness's "4 counts" on the
/// cluster: fewer failures in the metrics than the workers decided).
fn owner_not_reached(e: RedisError) -> RedisError {
    use redis::{ErrorKind, ServerErrorKind};
    if !matches!(e.kind(), ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)) {
        return e;
    }
    let said = e.to_string();
    (
        ErrorKind::ClusterConnectionNotFound,
        "the slot's owner was not reached (the cluster client's retry was redirected)",
        said,
    )
        .into()
}

/// Sharded events (Redis >= 7.0): each breaker's transitions are published with SPUBLISH on its
/// own channel `<prefix>:{<name>}:events`, in its slot, so they travel within the breaker's
/// shard instead of over the whole cluster bus. This task keeps one RESP3 cluster connection
/// that SSUBSCRIBEs the channel of every breaker the client holds (new ones at the next
/// keepalive, those that left are unsubscribed), applies the messages, and PINGs every node
/// each `keepalive`. A breaker's snapshot gets the long bound only once its own channel is
/// confirmed; a channel Redis unsubscribes on its own (its slot moved to another master) is
/// unconfirmed at once, its breaker's snapshot marked stale, and subscribed again. Any dropped node connection or unanswered PING marks every snapshot stale and
/// makes the whole subscription again. A server without SSUBSCRIBE (< 7.0) gets the classic
/// subscription to `<prefix>:events` instead (the scripts fall back to PUBLISH there).
pub(crate) async fn shard_subscribe_loop(
    handle: std::sync::Weak<crate::client::registry::Handle<crate::breaker::inner::Inner>>,
    urls: Vec<String>,
    nodes: Vec<redis::Client>,
    op_timeout: std::time::Duration,
    keepalive: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    use crate::client::tasks::{Backoff, on_message, subscription_changed};
    use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
    use redis::{PushKind, Value};
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    let Some(prefix) = handle.upgrade().map(|h| h.shared.config.prefix.clone()) else { return };
    let channel_of = |name: &str| format!("{prefix}:{{{name}}}:events");
    let name_of = |channel: &[u8]| -> Option<String> {
        let channel = std::str::from_utf8(channel).ok()?;
        let name = channel.strip_prefix(prefix.as_str())?.strip_prefix(":{")?.strip_suffix("}:events")?;
        Some(name.to_string())
    };
    // Until a breaker exists, SSUBSCRIBE support is checked with a channel of the prefix's own.
    let probe_channel = format!("{prefix}:{{}}:events-probe");
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let (tx, mut pushes) = tokio::sync::mpsc::unbounded_channel::<redis::PushInfo>();
        let client = match ClusterClient::builder(urls.iter().map(String::as_str))
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(op_timeout)
            .response_timeout(op_timeout)
            .retries(1)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the sharded event subscription");
                return;
            }
        };
        let connect = async {
            let conn = client.get_async_connection().await?;
            let Some(h) = handle.upgrade() else { return Ok(None) };
            // Sharded mode first: confirmations may arrive before SSUBSCRIBE returns.
            h.shared.set_shard_mode(true);
            let wanted: HashSet<String> = h.names().into_iter().collect();
            let mut channels: Vec<String> = wanted.iter().map(|n| channel_of(n)).collect();
            channels.push(probe_channel.clone());
            drop(h);
            each_channel(&conn, channels, true).await?;
            Ok::<_, redis::RedisError>(Some((conn, wanted)))
        };
        let attempt = tokio::select! {
            a = tokio::time::timeout(op_timeout.max(Duration::from_secs(1)), connect) => a,
            _ = stop.changed() => return,
        };
        let (mut conn, mut wanted) = match attempt {
            Ok(Ok(Some(made))) => made,
            Ok(Ok(None)) => return,
            Ok(Err(e))
                if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
                    && e.to_string().to_ascii_lowercase().contains("unknown command") =>
            {
                tracing::info!("the cluster has no sharded pub/sub (Redis < 7.0): events use one channel");
                if let Some(h) = handle.upgrade() {
                    h.shared.set_shard_mode(false);
                }
                let channel = crate::name::events_channel(&prefix);
                let nodes = crate::client::tasks::EventNodes::Fixed(nodes);
                return crate::client::tasks::subscribe_loop(handle, nodes, channel, op_timeout, keepalive, stop).await;
            }
            _ => {
                if !backoff.wait(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        backoff.reset();
        if !subscription_changed(&handle, true) {
            return;
        }
        tracing::debug!(breakers = wanted.len(), "subscribed to the breakers' shard channels");
        let mut ping = tokio::time::interval(keepalive);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        let Some(shared) = handle.upgrade().map(|h| h.shared.clone()) else { return };
        let made = &shared.breaker_made;
        let why: &str = loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { break "the connection ended" };
                    let Some(h) = handle.upgrade() else { return };
                    match (push.kind, push.data.as_slice()) {
                        (PushKind::SMessage, [_, Value::BulkString(payload)]) => {
                            on_message(&h, "shard channel", payload, Instant::now());
                        }
                        (PushKind::SSubscribe, [Value::BulkString(channel), ..]) => {
                            if let Some(name) = name_of(channel) {
                                h.shared.confirm_shard_channel(Some(&name));
                            }
                        }
                        // An unsubscription this task did not ask for (those it asks for leave
                        // `wanted` first): Redis moved the channel's slot to another master and
                        // dropped its subscribers. Events of the breaker no longer reach this
                        // client, so it loses the long bound at once and asks Redis on its next
                        // call, and the channel is subscribed again (on the slot's new owner: the
                        // cluster connection follows the MOVED answer).
                        (PushKind::SUnsubscribe, [Value::BulkString(channel), ..]) => {
                            let Some(name) = name_of(channel).filter(|name| wanted.contains(name)) else { continue };
                            h.shared.forget_shard_channel(&name);
                            if let Some(inner) = h.named(&name) {
                                inner.snapshot.mark_stale();
                            }
                            drop(h);
                            tracing::info!(breaker = %name, "redis unsubscribed a breaker's shard channel (its slot moved); subscribing again");
                            let again = tokio::time::timeout(op_timeout, each_channel(&conn, vec![channel_of(&name)], true));
                            if !matches!(again.await, Ok(Ok(()))) {
                                break "SSUBSCRIBE after a slot moved failed";
                            }
                        }
                        (PushKind::Disconnection, _) => break "a node's connection dropped",
                        _ => {}
                    }
                }
                _ = ping.tick() => {
                    // Every node answers on the connection that carries its subscriptions.
                    let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllNodes, None));
                    let pinged = tokio::time::timeout(op_timeout, conn.route_command(redis::cmd("PING"), all)).await;
                    if !matches!(pinged, Ok(Ok(_))) {
                        break "a node did not answer the keepalive PING";
                    }
                    if let Err(why) = follow_registry(&handle, &mut conn, &mut wanted, &channel_of, op_timeout).await {
                        break why;
                    }
                }
                _ = made.notified() => {
                    if let Err(why) = follow_registry(&handle, &mut conn, &mut wanted, &channel_of, op_timeout).await {
                        break why;
                    }
                }
                _ = stop.changed() => return,
            }
        };
        let Some(h) = handle.upgrade() else { return };
        h.shared.confirm_shard_channel(None);
        drop(h);
        if !subscription_changed(&handle, false) {
            return;
        }
        tracing::warn!(reason = why, "the sharded event subscription dropped; subscribing again");
    }
}

/// Subscribes the channels of the breakers made since the last call and unsubscribes those of
/// the breakers that left the registry; `wanted` holds the names asked for.
async fn follow_registry(
    handle: &std::sync::Weak<crate::client::registry::Handle<crate::breaker::inner::Inner>>,
    conn: &mut ClusterConnection,
    wanted: &mut std::collections::HashSet<String>,
    channel_of: &impl Fn(&str) -> String,
    op_timeout: std::time::Duration,
) -> Result<(), &'static str> {
    let Some(h) = handle.upgrade() else { return Ok(()) };
    let registered: std::collections::HashSet<String> = h.names().into_iter().collect();
    let shared = h.shared.clone();
    drop(h);
    let new: Vec<String> = registered.difference(wanted).cloned().collect();
    if !new.is_empty() {
        let channels: Vec<String> = new.iter().map(|n| channel_of(n)).collect();
        if !matches!(tokio::time::timeout(op_timeout, each_channel(conn, channels, true)).await, Ok(Ok(()))) {
            return Err("SSUBSCRIBE failed");
        }
        wanted.extend(new);
    }
    let gone: Vec<String> = wanted.difference(&registered).cloned().collect();
    if !gone.is_empty() {
        let channels: Vec<String> = gone.iter().map(|n| channel_of(n)).collect();
        if !matches!(tokio::time::timeout(op_timeout, each_channel(conn, channels, false)).await, Ok(Ok(()))) {
            return Err("SUNSUBSCRIBE failed");
        }
        for name in &gone {
            shared.forget_shard_channel(name);
            wanted.remove(name);
        }
    }
    Ok(())
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
