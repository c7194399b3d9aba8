//! Test support: a real Redis for every test (the `redis-breaker-test-support` crate), and
//! helpers that drive breakers and wait for them. `tests/metrics.rs` includes it too.
// Each feature's build of `tests/it` and the metrics binary use a part of it.
#![allow(dead_code)]

pub use redis_breaker_test_support::*;
use std::time::Duration;

/// A client of `redis` with the given snapshot lifetime (subscribed or not) whose counts are
/// all flushed every `flush_interval`: the bounds a test sets are the ones that apply.
pub async fn client(redis: &TestRedis, cache_ttl: Duration) -> redis_breaker::Client {
    client_flushing_every(redis, cache_ttl, redis_breaker::ClientConfig::DEFAULT_FLUSH_INTERVAL).await
}

/// A client whose background flush runs every `flush_interval` (a long one keeps it out of a
/// test that counts commands on a slow machine).
pub async fn client_flushing_every(
    redis: &TestRedis,
    cache_ttl: Duration,
    flush_interval: Duration,
) -> redis_breaker::Client {
    let config = redis_breaker::ClientConfig::builder()
        .cache_ttl(cache_ttl)
        .subscribed_cache_ttl(cache_ttl)
        .flush_interval(flush_interval)
        .metrics_interval(flush_interval)
        .op_timeout(Duration::from_millis(500))
        .build()
        .expect("client config");
    redis_breaker::Client::connect_with(&redis.url, config).await.expect("client")
}

/// Fails a call through `breaker`.
pub async fn fail(breaker: &redis_breaker::Breaker) -> Result<(), redis_breaker::Error<&'static str>> {
    breaker.execute(|| async { Err::<(), _>("downstream failed") }).await
}

/// Succeeds a call through `breaker`.
pub async fn succeed(breaker: &redis_breaker::Breaker) -> Result<(), redis_breaker::Error<&'static str>> {
    breaker.execute(|| async { Ok::<(), &'static str>(()) }).await
}

/// Flushes `client` until Redis takes it (within 5s, for a Redis just back), then answers the
/// breaker's metrics as (calls, successes, failures), with the whole hash for a message.
pub async fn counts_after_flush(
    client: &redis_breaker::Client,
    redis: &TestRedis,
    name: &str,
) -> ((u64, u64, u64), std::collections::HashMap<String, u64>) {
    let start = std::time::Instant::now();
    while let Err(e) = client.flush().await {
        assert!(start.elapsed() < Duration::from_secs(5), "no flush reached redis: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = metrics_hash(redis, name).await;
    let got = |f: &str| m.get(f).copied().unwrap_or(0);
    ((got("calls"), got("successes"), got("failures")), m)
}

/// Polls `done` every 10ms until it holds, failing with `what` after `within`; answers how long
/// it took.
pub async fn eventually_within(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let start = std::time::Instant::now();
    while !done().await {
        assert!(start.elapsed() < within, "{what}: still not true after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// [`eventually_within`] 10s.
pub async fn eventually(what: &str, done: impl AsyncFnMut() -> bool) -> Duration {
    eventually_within(what, Duration::from_secs(10), done).await
}

/// Waits (10s at most) until `client`'s event subscription is confirmed.
pub async fn subscribed(client: &redis_breaker::Client) {
    eventually("the client's event subscription", async || client.events_subscribed()).await;
}

/// Waits (10s at most) until the event subscription of `breaker`'s channel is confirmed (on a
/// cluster, each breaker's shard channel has its own).
pub async fn breaker_subscribed(breaker: &redis_breaker::Breaker) {
    eventually("the breaker's event subscription", async || breaker.health().await.is_ok_and(|h| h.events_subscribed))
        .await;
}

/// A plain connection to the server on loopback port `port` (a cluster node, a sentinel).
pub async fn conn_on(port: u16) -> redis::aio::MultiplexedConnection {
    admin_connection(&format!("redis://127.0.0.1:{port}")).await
}

/// Calls `breaker` (successes, one every 10ms) until it rejects one, failing after `within`
/// with `what` (the breaker another client opened): answers how many calls it admitted, and
/// after how long it rejected one.
pub async fn until_rejected(breaker: &redis_breaker::Breaker, within: Duration, what: &str) -> (u32, Duration) {
    let start = std::time::Instant::now();
    let mut admitted = 0;
    while start.elapsed() < within {
        match succeed(breaker).await {
            Ok(()) => admitted += 1,
            Err(redis_breaker::Error::Rejected(_)) => return (admitted, start.elapsed()),
            Err(e) => panic!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the client admitted {admitted} calls over {within:?} into {what}")
}

/// Two processes share the breaker `name`: a failure through `a` trips it (threshold 1), the
/// transition reaches `b`'s breaker as an event, and `b` rejects from then on. `what` names the
/// case in a failure. Answers `a`'s breaker.
pub async fn a_trip_reaches_the_other(
    a: &redis_breaker::Client,
    b: &redis_breaker::Client,
    name: &str,
    what: &str,
) -> redis_breaker::Breaker {
    use redis_breaker::{Config, Error, State};
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(60)).build().expect("config");
    let (ba, bb) = (a.breaker(name, trips.clone()).expect("a breaker"), b.breaker(name, trips).expect("a breaker"));
    succeed(&bb).await.expect(what);
    breaker_subscribed(&bb).await;
    let mut events = bb.subscribe();
    assert!(matches!(fail(&ba).await, Err(Error::Inner(_))), "{what}");
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.expect("an event").expect("an event");
    assert_eq!(e.to, State::Open, "{what}");
    assert!(matches!(succeed(&bb).await, Err(Error::Rejected(_))), "{what}");
    ba
}
