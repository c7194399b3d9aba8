//! The closed state's trip rules, on a real Redis.

use crate::support::*;
use redis_breaker::{Config, Error, State};
use std::time::Duration;

fn quick() -> redis_breaker::ConfigBuilder {
    Config::builder().base_recovery(Duration::from_secs(5)).max_recovery(Duration::from_secs(10))
}

#[tokio::test]
async fn trips_after_n_consecutive_failures_and_rejects_with_retry_after() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("consecutive");
    let b = client.breaker(&name, quick().failure_threshold(3).build().unwrap()).unwrap();

    for i in 0..2 {
        assert!(matches!(fail(&b).await, Err(Error::Inner(_))), "failure {i} runs the call");
        assert_eq!(b.state(), State::Closed);
    }
    assert!(matches!(fail(&b).await, Err(Error::Inner(_))));
    assert_eq!(b.state(), State::Open, "the third failure trips");
    let hash = state_hash(&redis, &name).await;
    assert_eq!(hash["state"], "open");
    assert_eq!(hash["reason"], "3 consecutive failures");
    assert_eq!(hash["epoch"], "1");

    let mut ran = false;
    match b
        .execute(|| async {
            ran = true;
            Ok::<(), &str>(())
        })
        .await
    {
        Err(Error::Rejected(r)) if r.state == State::Open && r.retry_after().is_some() => {
            let d = r.retry_after().unwrap();
            assert!(d <= Duration::from_millis(5500) && d >= Duration::from_millis(4000), "retry_after {d:?}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert!(!ran, "a rejected call is not run");
}

/// Issue 25: a rejection holds the deadline, and `retry_after()` reads the clock when asked, so
/// a rejection kept for a while tells the time left then (never a figure read at the
/// rejection), whether the snapshot decided it or Redis did (`cache_ttl` zero).
#[tokio::test]
async fn a_rejections_retry_after_is_the_time_left_when_asked() {
    let redis = redis().await;
    for cache_ttl in [Duration::from_secs(1), Duration::ZERO] {
        let client = client(&redis, cache_ttl).await;
        let b = client.breaker(&unique("time-left"), quick().failure_threshold(1).build().unwrap()).unwrap();
        fail(&b).await.unwrap_err();
        let rejected = b.acquire().await.expect_err("open");
        let first = rejected.retry_after().expect("a deadline");
        assert!(first <= Duration::from_millis(5500), "{first:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let later = rejected.retry_after().expect("a deadline");
        assert!(later + Duration::from_millis(300) <= first, "cache_ttl {cache_ttl:?}: {first:?}, then {later:?}");
        let said = rejected.to_string();
        let ms: u128 = said.split("retry after ").nth(1).and_then(|t| t.strip_suffix("ms")).unwrap().parse().unwrap();
        assert!(ms <= later.as_millis(), "the message tells the time left too: {said}");
    }
}

#[tokio::test]
async fn a_success_in_between_resets_the_consecutive_count() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("interleaved");
    let b = client.breaker(&name, quick().failure_threshold(3).build().unwrap()).unwrap();
    for _ in 0..5 {
        fail(&b).await.unwrap_err();
        fail(&b).await.unwrap_err();
        succeed(&b).await.unwrap();
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(state_field(&redis, &name, "failures").await, 0, "the success was sent at once and reset the count");
}

#[tokio::test]
async fn batched_successes_cannot_erase_a_later_failure() {
    let redis = redis().await;
    let name = unique("fseq");
    let config = quick().failure_threshold(3).build().unwrap();
    // Client A sees a healthy breaker and batches its successes; client B fails meanwhile.
    let a = client(&redis, Duration::from_secs(30)).await.breaker(&name, config.clone()).unwrap();
    let b = client(&redis, Duration::from_secs(30)).await.breaker(&name, config).unwrap();
    a.flush().await.unwrap();
    for _ in 0..10 {
        succeed(&a).await.unwrap();
    }
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(state_field(&redis, &name, "failures").await, 2);
    a.flush().await.unwrap();
    assert_eq!(state_field(&redis, &name, "failures").await, 2, "A's older successes must not reset B's failures");
    fail(&b).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "open");
    let metrics: std::collections::HashMap<String, u64> = metrics_hash(&redis, &name).await;
    assert_eq!(metrics["successes"], 10, "the batch still counts in metrics");
    assert_eq!(metrics["failures"], 3);
}

#[tokio::test]
async fn failure_rate_trips_only_once_minimum_calls_are_in_the_window() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("rate");
    let config = quick()
        .failure_threshold(0)
        .failure_rate(0.5)
        .minimum_calls(10)
        .window(Duration::from_secs(60))
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    // 9 calls, all failures: 100% but below minimum_calls.
    for _ in 0..9 {
        fail(&b).await.unwrap_err();
    }
    assert_eq!(b.state(), State::Closed, "9 calls < minimum_calls 10");
    assert!(matches!(fail(&b).await, Err(Error::Inner(_))));
    assert_eq!(b.state(), State::Open, "the tenth call reaches minimum_calls at a failure rate of 1.0");
    assert_eq!(state_hash(&redis, &name).await["reason"], "failure rate 1.00 >= 0.50 over 10 calls");
}

#[tokio::test]
async fn failure_rate_below_the_threshold_does_not_trip() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("rate-below");
    let config = quick().failure_threshold(0).failure_rate(0.5).minimum_calls(10).build().unwrap();
    let b = client.breaker(&name, config).unwrap();
    for _ in 0..20 {
        succeed(&b).await.unwrap();
        succeed(&b).await.unwrap();
        b.flush().await.unwrap();
        fail(&b).await.unwrap_err();
    }
    assert_eq!(b.state(), State::Closed, "a third of the calls failed: below 0.5");
    let window: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("breaker:{{{name}}}:window"))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let sum = |kind: &str| window.iter().filter(|(k, _)| k.ends_with(kind)).map(|(_, v)| v).sum::<u64>();
    assert_eq!((sum(":c"), sum(":f")), (60, 20), "the window holds every call, batched successes included");
}

#[tokio::test]
async fn slow_calls_trip_the_slow_call_rule() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("slow");
    let config = quick()
        .failure_threshold(0)
        .slow_call_rate(0.5)
        .slow_call_duration(Duration::from_millis(20))
        .minimum_calls(4)
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    for _ in 0..4 {
        b.execute(|| async {
            tokio::time::sleep(Duration::from_millis(25)).await;
            Ok::<(), &str>(())
        })
        .await
        .unwrap();
    }
    assert_eq!(b.state(), State::Closed, "slow successes are batched until the flush");
    b.flush().await.unwrap();
    assert_eq!(b.state(), State::Open, "the flush carried 4 slow calls out of 4");
    assert_eq!(state_hash(&redis, &name).await["reason"], "slow call rate 1.00 >= 0.50 over 4 calls");
}

#[tokio::test]
async fn a_call_past_call_timeout_is_a_failure() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("timeout");
    let config = quick().failure_threshold(1).call_timeout(Duration::from_millis(30)).build().unwrap();
    let b = client.breaker(&name, config).unwrap();
    let r = b
        .execute(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<(), &str>(())
        })
        .await;
    assert!(
        matches!(r, Err(Error::Timeout(redis_breaker::TimedOut { after, .. })) if after == Duration::from_millis(30)),
        "{r:?}"
    );
    assert_eq!(b.state(), State::Open);
    let metrics: std::collections::HashMap<String, u64> = metrics_hash(&redis, &name).await;
    assert_eq!((metrics["failures"], metrics["timeouts"]), (1, 1));
}

/// Sparse failures of a quiet service do not add up: the consecutive count starts again when no
/// failure was recorded for `failure_expiry`.
#[tokio::test]
async fn failures_older_than_failure_expiry_do_not_count_toward_a_trip() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("expiry");
    let expiry = Duration::from_millis(300);
    let b = client.breaker(&name, quick().failure_threshold(3).failure_expiry(expiry).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(state_field(&redis, &name, "failures").await, 2);
    tokio::time::sleep(expiry + Duration::from_millis(50)).await;
    fail(&b).await.unwrap_err();
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["state"].as_str(), hash["failures"].as_str()), ("closed", "1"), "the old two expired");
    // Failures close together still trip.
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "open");
}

/// Shadow mode: the breaker trips in Redis like any other, but this process runs every call,
/// counts none as rejected, and tells its subscribers once per open epoch what it would have done.
#[tokio::test]
async fn shadow_mode_trips_but_never_rejects_and_says_what_it_would_have_done() {
    let redis = redis().await;
    let name = unique("shadow");
    let config =
        quick().failure_threshold(1).base_recovery(Duration::from_secs(30)).max_recovery(Duration::from_secs(30));
    let shadow = client(&redis, Duration::from_secs(1))
        .await
        .breaker(&name, config.clone().shadow(true).build().unwrap())
        .unwrap();
    let enforcing = client(&redis, Duration::from_secs(1)).await.breaker(&name, config.build().unwrap()).unwrap();
    let mut events = shadow.subscribe();
    fail(&shadow).await.unwrap_err();
    assert_eq!(state_hash(&redis, &name).await["state"], "open", "the shadow breaker tripped the fleet");
    for _ in 0..5 {
        succeed(&shadow).await.expect("shadow mode runs the call");
    }
    assert!(succeed(&enforcing).await.unwrap_err().is_rejected(), "an enforcing process rejects");
    let mut shadow_events = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), events.recv()).await {
        if e.kind == redis_breaker::EventKind::ShadowRejected {
            assert_eq!(e.to, State::Open);
            shadow_events += 1;
        }
    }
    assert_eq!(shadow_events, 1, "one shadow event for the open epoch, not one per call");
    assert!(shadow.health().await.unwrap().shadow);
    shadow.flush().await.unwrap();
    enforcing.flush().await.unwrap();
    assert_eq!(metric(&redis, &name, "rejected").await, 1, "only the enforcing process rejected");
    assert_eq!(metric(&redis, &name, "successes").await, 5, "the shadow calls counted");
}
