//! What keeps a big fleet's Redis cost proportional to failures and transitions rather than to
//! the number of (process, breaker) pairs: snapshots kept fresh by a verified event
//! subscription, counts sent only as fast as something needs them, concurrent flushes, and a
//! registry that forgets breakers nobody holds. Each bound the README states is tested here,
//! with a private Redis so command counts belong to the test alone.

use crate::support;
use crate::support::{TestRedis, eventually, metric, metrics_hash, private_redis, subscribed, succeed, unique};
use redis_breaker::{Client, ClientConfig, Config, Error, State};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Script calls a client sent (EVALSHA, plus EVAL and SCRIPT LOAD after a script flush).
fn script_calls(stats: &BTreeMap<String, u64>) -> u64 {
    ["evalsha", "eval", "script|load", "fcall", "function|load"]
        .iter()
        .map(|c| stats.get(*c).copied().unwrap_or(0))
        .sum()
}

async fn calls_so_far(redis: &TestRedis) -> u64 {
    script_calls(&redis.commandstats().await)
}

fn short(cache_ttl_ms: u64) -> redis_breaker::ClientConfigBuilder {
    ClientConfig::builder().cache_ttl(Duration::from_millis(cache_ttl_ms)).op_timeout(Duration::from_millis(500))
}

#[tokio::test]
async fn a_live_subscription_keeps_a_closed_snapshot_fresh_past_cache_ttl() {
    let redis = private_redis().await;
    let client = Client::connect_with(&redis.url, short(100).build().unwrap()).await.unwrap();
    subscribed(&client).await;
    let b = client.breaker(&unique("long-fresh"), Config::default()).unwrap();
    succeed(&b).await.unwrap();
    let before = calls_so_far(&redis).await;
    // Five times cache_ttl, calls all along: no call asks Redis, the snapshot stays fresh.
    let until = Instant::now() + Duration::from_millis(500);
    let mut calls = 0;
    while Instant::now() < until {
        succeed(&b).await.unwrap();
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(b.snapshot().fresh);
    assert_eq!(calls_so_far(&redis).await - before, 0, "{calls} healthy calls past cache_ttl sent nothing");
}

#[tokio::test]
async fn without_a_subscription_the_short_cache_ttl_applies() {
    let redis = private_redis().await;
    // A client over a caller's connection has no event subscription.
    let conn = support::admin_connection(&redis.url).await;
    let client = Client::from_connection(conn, short(100).build().unwrap());
    let b = client.breaker(&unique("short-fresh"), Config::default()).unwrap();
    succeed(&b).await.unwrap();
    assert!(b.snapshot().fresh);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!b.snapshot().fresh, "no subscription: a snapshot lives cache_ttl (100ms)");
    let before = calls_so_far(&redis).await;
    succeed(&b).await.unwrap();
    eventually("the expired snapshot was refreshed", async || calls_so_far(&redis).await > before).await;
}

/// A trip in another process reaches a process whose snapshot Redis answered 30s ago at once,
/// through its event, and is then confirmed by one script call of its own.
#[tokio::test]
async fn a_trip_reaches_a_long_cached_process_through_its_event() {
    let redis = private_redis().await;
    let (watcher, tripper) = (
        Client::connect_with(&redis.url, short(100).build().unwrap()).await.unwrap(),
        Client::connect_with(&redis.url, short(100).build().unwrap()).await.unwrap(),
    );
    subscribed(&watcher).await;
    let name = unique("long-trip");
    let config = Config::builder().failure_threshold(1).build().unwrap();
    let w = watcher.breaker(&name, config.clone()).unwrap();
    succeed(&w).await.unwrap();
    assert!(w.snapshot().fresh);
    let _ = support::fail(&tripper.breaker(&name, config).unwrap()).await;
    eventually("the watcher saw the trip", async || w.state() == State::Open).await;
    assert!(matches!(succeed(&w).await, Err(Error::Rejected(_))));
}

/// An event is a hint: a forged one that says "open for ten minutes" makes a process reject
/// for at most the short bound, after which it asks Redis (which says closed).
#[tokio::test]
async fn a_forged_open_event_rejects_for_at_most_cache_ttl() {
    let redis = private_redis().await;
    let client = Client::connect_with(&redis.url, short(200).build().unwrap()).await.unwrap();
    subscribed(&client).await;
    let name = unique("forged-long");
    let b = client.breaker(&name, Config::default()).unwrap();
    b.force_open(None).await.unwrap();
    b.reset().await.unwrap();
    let h = support::state_hash(&redis, &name).await;
    let mut events = b.subscribe();
    let forged = serde_json::json!({
        "name": name, "from": "closed", "to": "open",
        "incarnation": h["incarnation"].parse::<u64>().unwrap(),
        "epoch": h["epoch"].parse::<u64>().unwrap() + 1, "fseq": 0, "retry_after_ms": 600_000,
        "reason": "forged by hand",
    });
    let _: u64 = redis::cmd("PUBLISH")
        .arg("breaker:events")
        .arg(forged.to_string())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(seen.reason, "forged by hand");
    let applied = Instant::now();
    assert!(matches!(succeed(&b).await, Err(Error::Rejected(_))), "the event is applied at once");
    let took = eventually("the forged open was confirmed with Redis", async || succeed(&b).await.is_ok()).await;
    assert_eq!(b.state(), State::Closed);
    println!("figures: a forged 10-minute open rejected for {:?} (cache_ttl 200ms)", applied.elapsed().min(took));
}

/// What no event announces (keys deleted by hand) is seen within `subscribed_cache_ttl`.
#[tokio::test]
async fn a_hand_deleted_open_state_is_seen_within_subscribed_cache_ttl() {
    let redis = private_redis().await;
    let config = short(100).subscribed_cache_ttl(Duration::from_millis(800)).build().unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    subscribed(&client).await;
    let name = unique("hand-deleted");
    let b = client.breaker(&name, Config::default()).unwrap();
    b.force_open(None).await.unwrap();
    // A reply (not an event) decides the snapshot: the long bound.
    assert!(matches!(succeed(&b).await, Err(Error::Rejected(_))));
    let _: u64 =
        redis::cmd("DEL").arg(support::key(&name, "state")).query_async(&mut redis.conn().await).await.unwrap();
    let deleted = Instant::now();
    assert!(matches!(succeed(&b).await, Err(Error::Rejected(_))), "nothing announced the delete");
    eventually("the delete was seen", async || succeed(&b).await.is_ok()).await;
    let seen = deleted.elapsed();
    assert!(seen >= Duration::from_millis(500), "held by the long bound, not the short one: {seen:?}");
    println!("figures: a hand-deleted forced open seen after {seen:?} (subscribed_cache_ttl 800ms)");
}

#[tokio::test]
async fn healthy_successes_wait_for_metrics_interval_and_flush_sends_them() {
    let redis = private_redis().await;
    let config = short(100).flush_interval(Duration::from_millis(50)).build().unwrap();
    assert_eq!(config.metrics_interval(), ClientConfig::DEFAULT_METRICS_INTERVAL);
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("paced");
    let b = client.breaker(&name, Config::default()).unwrap();
    for _ in 0..100 {
        succeed(&b).await.unwrap();
    }
    // Many flush intervals later the successes still wait: nothing needs them before 30s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(metric(&redis, &name, "successes").await, 0, "successes of a healthy breaker wait");
    client.flush().await.unwrap();
    assert_eq!(metric(&redis, &name, "successes").await, 100, "flush() sends everything");
}

#[tokio::test]
async fn counts_are_sent_once_metrics_interval_has_passed() {
    let redis = private_redis().await;
    let config = short(100)
        .flush_interval(Duration::from_millis(50))
        .metrics_interval(Duration::from_millis(300))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("metrics-due");
    let b = client.breaker(&name, Config::default()).unwrap();
    for _ in 0..10 {
        succeed(&b).await.unwrap();
    }
    let took =
        eventually("the background flush sent the successes", async || metric(&redis, &name, "successes").await == 10)
            .await;
    println!("figures: successes reached Redis after {took:?} (metrics_interval 300ms)");
}

/// A rate rule needs its window current: those successes go every flush_interval.
#[tokio::test]
async fn successes_of_a_rate_rule_breaker_go_every_flush_interval() {
    let redis = private_redis().await;
    let config = short(100).flush_interval(Duration::from_millis(50)).build().unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("windowed");
    let rule = Config::builder().failure_rate(0.5).window(Duration::from_secs(10)).build().unwrap();
    let b = client.breaker(&name, rule).unwrap();
    for _ in 0..10 {
        succeed(&b).await.unwrap();
    }
    eventually("the window got its successes", async || metric(&redis, &name, "successes").await == 10).await;
    let window: BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(support::key(&name, "window")).query_async(&mut redis.conn().await).await.unwrap();
    let calls: u64 = window.iter().filter(|(k, _)| k.ends_with(":c")).map(|(_, v)| v.parse::<u64>().unwrap()).sum();
    assert_eq!(calls, 10, "the rolling window counted them: {window:?}");
}

#[tokio::test]
async fn one_flush_sends_the_counts_of_thousands_of_breakers() {
    let redis = private_redis().await;
    let client = Client::connect_with(&redis.url, short(1000).build().unwrap()).await.unwrap();
    let names: Vec<String> = (0..2000).map(|i| format!("{}-{i}", unique("many"))).collect();
    let breakers: Vec<_> = names.iter().map(|n| client.breaker(n, Config::default()).unwrap()).collect();
    for b in &breakers {
        succeed(b).await.unwrap();
        succeed(b).await.unwrap();
    }
    let start = Instant::now();
    client.flush().await.unwrap();
    let took = start.elapsed();
    for (i, name) in names.iter().enumerate().step_by(97) {
        assert_eq!(metrics_hash(&redis, name).await.get("successes"), Some(&2), "breaker {i}");
    }
    let mut total = 0;
    for name in &names {
        total += metric(&redis, name, "successes").await;
    }
    assert_eq!(total, 4000, "every breaker's successes, once");
    println!("figures: one flush of 2,000 breakers took {took:?}");
}

#[tokio::test]
async fn an_unheld_idle_breaker_leaves_the_registry_and_is_made_again_on_demand() {
    let redis = private_redis().await;
    let config = short(50)
        .subscribed_cache_ttl(Duration::from_millis(50))
        .flush_interval(Duration::from_millis(20))
        .metrics_interval(Duration::from_millis(20))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let prefix = unique("tenant");
    for i in 0..500 {
        // Names from unbounded input: a handle made for one call, then dropped.
        let b = client.breaker(&format!("{prefix}-{i}"), Config::default()).unwrap();
        succeed(&b).await.unwrap();
    }
    let held = client.breaker(&format!("{prefix}-held"), Config::default()).unwrap();
    succeed(&held).await.unwrap();
    let watched = client.breaker(&format!("{prefix}-watched"), Config::default()).unwrap();
    succeed(&watched).await.unwrap();
    let subscription = watched.subscribe();
    drop(watched);
    eventually("the unheld breakers left", async || client.local_breakers().len() == 2).await;
    assert_eq!(
        client.local_breakers(),
        vec![format!("{prefix}-held"), format!("{prefix}-watched")],
        "a held handle or a live subscription keeps a breaker"
    );
    // Their counts were sent before they left.
    let mut total = 0;
    for i in 0..500 {
        total += metric(&redis, &format!("{prefix}-{i}"), "successes").await;
    }
    assert_eq!(total, 500, "nothing counted was lost");
    // The same name later is simply made again, even with another config.
    let again = client.breaker(&format!("{prefix}-7"), Config::builder().failure_threshold(2).build().unwrap());
    assert!(again.is_ok(), "{again:?}");
    drop(subscription);
}

/// A silently dead subscription ends the long bound: every snapshot asks Redis again.
#[tokio::test]
async fn a_dropped_subscription_ends_the_long_bound_at_once() {
    let redis = private_redis().await;
    let client = Client::connect_with(&redis.url, short(100).build().unwrap()).await.unwrap();
    subscribed(&client).await;
    let b = client.breaker(&unique("drop-long"), Config::default()).unwrap();
    succeed(&b).await.unwrap();
    assert!(b.snapshot().fresh);
    // Kill the pub/sub connection from the server's side.
    let _: u64 =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query_async(&mut redis.conn().await).await.unwrap();
    eventually("the snapshot stopped being trusted", async || !b.snapshot().fresh).await;
    subscribed(&client).await;
}

/// A restart that loses the state drops the connection and the subscription with it: the
/// process asks the restarted Redis at once instead of trusting its snapshot for the long bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_loses_the_state_is_seen_when_the_subscription_returns() {
    let mut redis = private_redis().await;
    let client = Client::connect_with(&redis.url, short(100).build().unwrap()).await.unwrap();
    subscribed(&client).await;
    let b = client.breaker(&unique("restart-long"), Config::default()).unwrap();
    b.force_open(None).await.unwrap();
    assert!(matches!(succeed(&b).await, Err(Error::Rejected(_))));
    assert!(b.snapshot().fresh, "forced open for good: the long bound");
    redis.kill();
    redis.restart();
    let restarted = Instant::now();
    let took = eventually("the restarted, empty Redis decides (closed)", async || succeed(&b).await.is_ok()).await;
    assert_eq!(b.state(), State::Closed);
    println!(
        "figures: the empty restarted Redis was followed {:?} after it started (subscribed_cache_ttl 30s)",
        restarted.elapsed().min(took)
    );
}
