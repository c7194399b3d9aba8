//! Test support: a real Redis for every test (the `redis-breaker-test-support` crate), and
//! helpers that drive breakers.
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
