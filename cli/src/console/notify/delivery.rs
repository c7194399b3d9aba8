//! Delivery: the receivers' queues, each receiver's task, and the retries of a POST (backoff
//! with jitter, Retry-After).

use super::Counters;
use super::post::post;
use super::receiver::Receiver;
use hyper::StatusCode;
use hyper::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How long queued notifications may still be delivered after the shutdown signal.
pub(super) const DRAIN: Duration = Duration::from_secs(2);
/// The longest Retry-After honoured; a longer one waits this long.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// The longest backoff between two attempts.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How POSTs are made and retried.
pub(super) struct Delivery {
    pub(super) attempts: u32,
    pub(super) timeout: Duration,
    pub(super) backoff: Duration,
    pub(super) tls: Option<tokio_rustls::TlsConnector>,
}

/// A receiver's task: delivers its queue in order until the shutdown signal, then, for at most
/// [`DRAIN`] after it, what is queued once `composed` turns true (the transitions held back or
/// being composed at shutdown are on the queue by then).
pub(super) async fn deliver_all(
    r: Arc<Receiver>,
    mut rx: mpsc::Receiver<Bytes>,
    delivery: Arc<Delivery>,
    counters: Counters,
    mut shutdown: watch::Receiver<bool>,
    mut composed: watch::Receiver<bool>,
) {
    let deadline = drained(&mut shutdown);
    let work = async {
        loop {
            let body = tokio::select! {
                biased;
                body = rx.recv() => match body {
                    Some(body) => body,
                    None => return,
                },
                _ = composed.wait_for(|c| *c) => match rx.try_recv() {
                    Ok(body) => body,
                    Err(_) => return,
                },
            };
            deliver(&r, body, &delivery, &counters).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = deadline => {
            let left = rx.len() as u64;
            if left > 0 {
                tracing::warn!(receiver = %r.shown, left, "stopped with notifications still queued");
            }
        }
    }
}

/// Resolves [`DRAIN`] after the shutdown signal (or after its sender is gone).
pub(super) async fn drained(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
    tokio::time::sleep(DRAIN).await;
}

/// Delivers one document to one receiver: retried after a connection error, a timeout, a 408,
/// 429 or 5xx; given up after the last attempt or at once on another status.
pub(super) async fn deliver(r: &Receiver, body: Bytes, delivery: &Delivery, counters: &Counters) {
    for attempt in 1..=delivery.attempts {
        let tried = tokio::time::timeout(delivery.timeout, post(r, body.clone(), delivery.tls.as_ref())).await;
        let (why, retry_after) = match tried {
            Ok(Ok(a)) if a.status.is_success() => {
                counters.sent.inc();
                return;
            }
            Ok(Ok(a)) if retryable(a.status) => (format!("answered {}", a.status), a.retry_after),
            Ok(Ok(a)) => {
                counters.failed.inc();
                tracing::error!(receiver = %r.shown, status = %a.status, "a receiver refused a notification; not retried");
                return;
            }
            Ok(Err(e)) => (e, None),
            Err(_) => (format!("no answer within {}", redis_breaker::duration::format(delivery.timeout)), None),
        };
        if attempt == delivery.attempts {
            counters.failed.inc();
            tracing::error!(receiver = %r.shown, attempts = attempt, last = %why, "gave up a notification");
            return;
        }
        counters.retries.inc();
        let wait =
            backoff(delivery.backoff, attempt).max(retry_after.map_or(Duration::ZERO, |d| d.min(RETRY_AFTER_MAX)));
        tracing::info!(receiver = %r.shown, attempt, error = %why, wait_ms = wait.as_millis() as u64, "a notification will be retried");
        tokio::time::sleep(wait).await;
    }
}

pub(super) fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// The wait before attempt `after + 1`: `base` doubled per attempt, capped, with jitter (between
/// half and all of it) so that receivers coming back are not hit by every console at once.
pub(super) fn backoff(base: Duration, after: u32) -> Duration {
    let full = base.saturating_mul(1u32 << after.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    full.mul_f64(0.5 + 0.5 * unit_random())
}

/// A number in [0, 1) that differs from call to call (std's per-instance random hash keys).
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}
