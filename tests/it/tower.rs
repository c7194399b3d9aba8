//! The tower Layer and Service around a real tower service, on a real Redis.

use crate::support::*;
use redis_breaker::tower::{BoxError, BreakerLayer, HttpStatusClassifier, TimedOut};
use redis_breaker::{Config, Outcome, Rejected, State};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Answers each request with the status it names, counting the calls that reach it.
#[derive(Clone, Default)]
struct Statuses {
    calls: Arc<AtomicU32>,
}

impl Service<u16> for Statuses {
    type Response = http::Response<()>;
    type Error = std::io::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<http::Response<()>, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, status: u16) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            if status == 0 {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            http::Response::builder().status(status.max(200)).body(()).map_err(std::io::Error::other)
        })
    }
}

fn poll_ready<S: Service<u16>>(svc: &mut S) -> bool {
    let waker = std::task::Waker::noop();
    matches!(svc.poll_ready(&mut Context::from_waker(waker)), Poll::Ready(Ok(())))
}

#[tokio::test]
async fn an_open_breaker_is_ready_and_fails_calls_at_once_with_rejected() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let breaker =
        client.breaker(&unique("tower-open"), Config::builder().failure_threshold(2).build().unwrap()).unwrap();
    let inner = Statuses::default();
    let mut svc = BreakerLayer::with_classifier(breaker.clone(), HttpStatusClassifier).layer(inner.clone());

    for _ in 0..20 {
        assert!(poll_ready(&mut svc));
        assert_eq!(svc.call(404).await.unwrap().status(), 404);
    }
    assert_eq!(breaker.state(), State::Closed, "404s are ignored");
    for status in [503, 429] {
        assert_eq!(svc.call(status).await.unwrap().status(), status, "a 5xx is still returned to the caller");
    }
    assert_eq!(breaker.state(), State::Open, "a 503 and a 429 are failures");

    let before = inner.calls.load(Ordering::Relaxed);
    assert!(poll_ready(&mut svc), "an open breaker keeps the service ready");
    let err: BoxError = svc.call(200).await.unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("the error is a Rejected");
    assert_eq!(rejected.state, State::Open);
    assert!(rejected.retry_after().is_some());
    assert_eq!(inner.calls.load(Ordering::Relaxed), before, "the inner service was not called");

    assert_eq!(svc.get_ref().calls.load(Ordering::Relaxed), before);
    svc.get_mut().calls.store(0, Ordering::Relaxed);
    assert_eq!(svc.into_inner().calls.load(Ordering::Relaxed), 0);
}

/// A call a recovery ramp holds back fails like a rejection: a `Rejected` (closed, with the
/// fraction admitted), and the inner service is not called.
#[tokio::test]
async fn a_call_held_back_by_a_recovery_ramp_is_a_rejected_and_does_not_reach_the_service() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(30)).await;
    let config = Config::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .base_recovery(Duration::from_millis(20))
        .max_recovery(Duration::from_millis(20))
        .recovery_ramp(Duration::from_secs(600))
        .ramp_start(0.001)
        .build()
        .unwrap();
    let breaker = client.breaker(&unique("tower-ramp"), config).unwrap();
    let inner = Statuses::default();
    let mut svc = BreakerLayer::with_classifier(breaker.clone(), HttpStatusClassifier).layer(inner.clone());
    assert_eq!(svc.call(503).await.unwrap().status(), 503);
    assert_eq!(breaker.state(), State::Open);
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(svc.call(200).await.unwrap().status(), 200, "the probe closes the breaker");
    assert!(breaker.snapshot().ramp.is_some());
    let before = inner.calls.load(Ordering::Relaxed);
    let mut held = 0;
    for _ in 0..50 {
        match svc.call(200).await {
            Ok(r) => assert_eq!(r.status(), 200),
            Err(err) => {
                let rejected = err.downcast_ref::<Rejected>().expect("the error is a Rejected");
                assert_eq!(rejected.state, State::Closed);
                assert!(rejected.retry_after().is_some_and(|d| d <= Duration::from_secs(1)), "{rejected}");
                assert!(rejected.admitted().is_some_and(|a| a < 0.01), "{rejected}");
                held += 1;
            }
        }
    }
    assert!(held >= 45, "at 0.1% admitted nearly every call is held back: {held}");
    assert_eq!(inner.calls.load(Ordering::Relaxed) - before, 50 - held, "held-back calls never reach the service");
}

#[tokio::test]
async fn a_slow_service_times_out_as_a_failure_and_closures_classify() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let config = Config::builder().failure_threshold(1).call_timeout(Duration::from_millis(30)).build().unwrap();
    let breaker = client.breaker(&unique("tower-timeout"), config).unwrap();
    let mut svc = BreakerLayer::new(breaker.clone()).layer(Statuses::default());
    let err = svc.call(0).await.unwrap_err();
    assert_eq!(err.downcast_ref::<TimedOut>(), Some(&TimedOut::new(Duration::from_millis(30))));
    assert_eq!(breaker.state(), State::Open);

    let breaker =
        client.breaker(&unique("tower-closure"), Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    let only_418_fails = |r: &Result<http::Response<()>, std::io::Error>| match r {
        Ok(resp) if resp.status() == 418 => Outcome::Failure,
        _ => Outcome::Success,
    };
    let mut svc = BreakerLayer::with_classifier(breaker.clone(), only_418_fails).layer(Statuses::default());
    svc.call(500).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    svc.call(418).await.unwrap();
    assert_eq!(breaker.state(), State::Open);
}
