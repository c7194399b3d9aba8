//! The background tasks of a client: the flush of batched counts and the watch on Redis's up/down
//! verdict (the event subscription is in `subscription.rs`), and the backoff they share. Each
//! holds a weak handle and ends with the last `Client` or `Breaker` handle.

use crate::breaker::Breaker;
use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::error::StoreError;
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
    /// Starts at `min`.
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
