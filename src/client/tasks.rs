//! The background tasks of a client: the flush of batched counts, the event subscription, and the
//! watch on Redis's up/down verdict. Each holds a weak handle and ends with the last `Client` or
//! `Breaker` handle.

use crate::breaker::Breaker;
use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::error::StoreError;
use crate::events::Wire;
use futures_util::StreamExt;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Tells every breaker's subscribers that Redis went down or came back; when it is back, every
/// snapshot asks Redis on its next call (Redis is authoritative again).
fn on_store_change(handle: &Handle<Inner>, up: bool) {
    let shared = &handle.shared;
    crate::meters::store_up(&shared.config.prefix, up);
    for inner in handle.registered() {
        if up {
            inner.snapshot.mark_stale();
        }
        inner.store_event(up, shared.config.degraded);
    }
}

/// Events may have been missed (the subscription dropped or was just made): every snapshot asks
/// Redis on its next call.
fn mark_all_stale(handle: &Handle<Inner>) {
    for inner in handle.registered() {
        inner.snapshot.mark_stale();
    }
}

/// Script calls one flush round keeps in flight at once.
const FLUSH_CONCURRENCY: usize = 64;

/// Flushes the given breakers concurrently (at most `FLUSH_CONCURRENCY` script calls in
/// flight); returns the first error, every breaker still tried. Unsent counts are kept.
pub(crate) async fn flush_all(handle: &Arc<Handle<Inner>>, breakers: Vec<Arc<Inner>>) -> Result<(), StoreError> {
    let results = futures_util::stream::iter(breakers)
        .map(|inner| flush_one(handle.clone(), inner))
        .buffer_unordered(FLUSH_CONCURRENCY);
    first_error(results).await
}

/// Flushes one breaker, then again while a batch whose fate was unknown waits to be sent again
/// (each flush carries one), until Redis fails to answer.
async fn flush_one(handle: Arc<Handle<Inner>>, inner: Arc<Inner>) -> Result<(), StoreError> {
    Breaker::new(inner.clone(), handle.clone()).flush_owned().await?;
    for _ in 0..crate::breaker::pending::LANES {
        if !inner.pending.in_doubt() {
            break;
        }
        Breaker::new(inner.clone(), handle.clone()).flush_owned().await?;
    }
    Ok(())
}

/// Under a quorum: withdraws this process's reports from every breaker it said `failing` to
/// (`Client::shutdown`), concurrently as a flush round; returns the first error, every breaker
/// still tried.
pub(crate) async fn withdraw_reports(handle: &Handle<Inner>) -> Result<(), StoreError> {
    let results = futures_util::stream::iter(handle.registered())
        .map(|inner| async move { inner.withdraw_report().await })
        .buffer_unordered(FLUSH_CONCURRENCY);
    first_error(results).await
}

/// The first error of `results`, after every one of them ended.
async fn first_error(
    mut results: impl futures_util::Stream<Item = Result<(), StoreError>> + Unpin,
) -> Result<(), StoreError> {
    let mut first = Ok(());
    while let Some(result) = results.next().await {
        if let (Err(e), true) = (result, first.is_ok()) {
            first = Err(e);
        }
    }
    first
}

/// Every `flush_interval`: sends the counts that are due (see [`Inner::flush_due`]), then drops
/// from the registry the breakers nobody holds that decide nothing any more.
pub(crate) async fn flush_loop(handle: Weak<Handle<Inner>>, every: Duration, mut stop: watch::Receiver<()>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(handle) = handle.upgrade() else { return };
        if handle.shared.store.is_down() {
            // A flush that times out may or may not apply: keep the counts for when Redis is back.
            continue;
        }
        let now = Instant::now();
        let due: Vec<_> =
            handle.registered().into_iter().filter(|inner| inner.flush_due(now) || inner.pending.in_doubt()).collect();
        let _ = flush_all(&handle, due).await;
        for gone in handle.evict(|inner| inner.idle(now)) {
            gone.shared.in_process.forget(&gone.name);
        }
        drop(handle);
    }
}

/// Where the event subscription is made.
pub(crate) enum EventNodes {
    /// These nodes, tried in turn (one Redis, or the nodes of a cluster without sharded pub/sub).
    /// (Sentinel has a loop of its own, `sentinel::subscribe_loop`: its subscription follows
    /// the node its commands use.)
    Fixed(Vec<redis::Client>),
}

impl EventNodes {
    /// The node of attempt `n`; `None` when there is none at all.
    async fn pick(&self, n: usize) -> redis::RedisResult<Option<redis::Client>> {
        match self {
            EventNodes::Fixed(nodes) => Ok(nodes.get(n % nodes.len().max(1)).cloned()),
        }
    }
}

/// Keeps one subscription to `<prefix>:events` and applies each event to its breaker's
/// snapshot. Pub/sub is at most once, so whenever the subscription is made or lost every
/// snapshot is marked stale; it resubscribes with backoff until the client is dropped. A PING
/// every `keepalive` notices a connection that is open but dead (a blackholed path): no answer
/// within `op_timeout` counts as a drop.
pub(crate) async fn subscribe_loop(
    handle: Weak<Handle<Inner>>,
    nodes: EventNodes,
    channel: String,
    op_timeout: Duration,
    keepalive: Duration,
    mut stop: watch::Receiver<()>,
) {
    let answer_within = op_timeout;
    let mut next_node = 0;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let connect = async |redis: &redis::Client| {
        let mut pubsub = redis.get_async_pubsub().await?;
        pubsub.subscribe(&channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    loop {
        let redis = match nodes.pick(next_node).await {
            Ok(Some(redis)) => redis,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(channel, error = %e, "no node to subscribe on yet");
                if !backoff.wait(&mut stop).await {
                    return;
                }
                continue;
            }
        };
        next_node += 1;
        let attempt = tokio::select! {
            a = tokio::time::timeout(op_timeout.max(Duration::from_secs(1)), connect(&redis)) => a,
            _ = stop.changed() => return,
        };
        let Ok(Ok(pubsub)) = attempt else {
            if !backoff.wait(&mut stop).await {
                return;
            }
            continue;
        };
        backoff.reset();
        if !subscription_changed(&handle, true) {
            return;
        }
        tracing::debug!(channel, "subscribed to events");
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
            on_message(&h, &channel, msg.get_payload_bytes(), at);
        }
        if !subscription_changed(&handle, false) {
            return;
        }
        tracing::warn!(channel, "the event subscription dropped; resubscribing");
    }
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

/// Follows the store's up/down verdict. When Redis goes down: tells subscribers, then probes it
/// with backoff (no call waits on it meanwhile). When it answers: every snapshot asks Redis on
/// its next call, subscribers are told, and the counts gathered meanwhile are flushed.
pub(crate) async fn store_loop(
    handle: Weak<Handle<Inner>>,
    mut up: watch::Receiver<bool>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            r = up.wait_for(|up| !*up) => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        match handle.upgrade() {
            Some(h) => on_store_change(&h, false),
            None => return,
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            if !backoff.wait(&mut stop).await {
                return;
            }
            let Some(h) = handle.upgrade() else { return };
            if h.shared.store.ping().await {
                break;
            }
        }
        let Some(h) = handle.upgrade() else { return };
        tracing::info!("redis answers again; breakers are decided by redis");
        on_store_change(&h, true);
        let pending = h.registered().into_iter().filter(|inner| inner.has_unsent()).collect();
        let _ = flush_all(&h, pending).await;
    }
}

/// `backoff` spread over [0.5, 1.5) of itself: a fleet that lost Redis together does not come
/// back in lockstep.
fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + rand::random::<f64>())
}

/// The wait between attempts to reach Redis: jittered, doubling from `min` to `max`.
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { next: min, min, max }
    }

    /// Waits before the next attempt; `false` when the client stopped meanwhile.
    pub(crate) async fn wait(&mut self, stop: &mut watch::Receiver<()>) -> bool {
        let waited = tokio::select! {
            _ = tokio::time::sleep(jittered(self.next)) => true,
            _ = stop.changed() => false,
        };
        self.next = (self.next * 2).min(self.max);
        waited
    }

    /// After a success: the next wait starts from `min` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Records that the event subscription was made (`live`) or lost. Either way events may have
/// been missed, so every snapshot asks Redis on its next call. `false` when the client is gone.
pub(crate) fn subscription_changed(handle: &Weak<Handle<Inner>>, live: bool) -> bool {
    let Some(h) = handle.upgrade() else { return false };
    h.shared.set_subscribed(live);
    mark_all_stale(&h);
    true
}
