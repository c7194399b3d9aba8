//! Operators' forced states and reset, epochs, and outcomes that arrive late.

use crate::support::*;
use redis_breaker::{Config, Error, State, StoreError};
use std::time::Duration;

async fn pttl(redis: &TestRedis, name: &str) -> i64 {
    redis::cmd("PTTL").arg(format!("breaker:{{{name}}}:state")).query_async(&mut redis.conn().await).await.unwrap()
}

#[tokio::test]
async fn force_open_without_duration_rejects_until_reset_and_never_expires() {
    let redis = redis().await;
    let name = unique("forced-open");
    let operator = client(&redis, Duration::from_secs(1)).await.breaker(&name, Config::default()).unwrap();
    let service = client(&redis, Duration::ZERO).await.breaker(&name, Config::default()).unwrap();
    let snap = operator.force_open(None).await.unwrap();
    assert_eq!(snap.state, State::ForcedOpen);
    assert_eq!(snap.reason, "forced open by operator until reset");
    match succeed(&service).await {
        Err(Error::Rejected(r)) if r.state == State::ForcedOpen && r.retry_after().is_none() => {}
        other => panic!("expected a rejection with no retry time, got {other:?}"),
    }
    assert_eq!(pttl(&redis, &name).await, -1, "an operator's decision does not expire");
    operator.reset().await.unwrap();
    succeed(&service).await.unwrap();
    assert!(pttl(&redis, &name).await > 0, "after reset the state has a TTL again");
}

#[tokio::test]
async fn force_open_for_a_duration_then_probes_with_trips_unchanged() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("forced-open-for");
    let b = client.breaker(&name, Config::builder().success_threshold(1).build().unwrap()).unwrap();
    b.force_open(Some(Duration::from_millis(100))).await.unwrap();
    match succeed(&b).await {
        Err(Error::Rejected(r)) if r.state == State::ForcedOpen && r.retry_after().is_some() => {
            assert!(r.retry_after().unwrap() <= Duration::from_millis(100))
        }
        other => panic!("expected a timed rejection, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(120)).await;
    let probe = b.acquire().await.expect("an expired forced open behaves as an expired open");
    assert!(probe.is_probe());
    assert_eq!(state_field(&redis, &name, "trips").await, 0, "forcing open is not a trip");
    probe.success().await;
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test]
async fn force_close_never_trips_and_still_records_metrics() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("forced-closed");
    let b = client.breaker(&name, Config::builder().failure_threshold(2).build().unwrap()).unwrap();
    let snap = b.force_close(None).await.unwrap();
    assert_eq!(snap.state, State::ForcedClosed);
    for _ in 0..10 {
        assert!(matches!(fail(&b).await, Err(Error::Inner(_))));
    }
    assert_eq!(state_hash(&redis, &name).await["state"], "forced_closed");
    assert_eq!(pttl(&redis, &name).await, -1);
    let failures: u64 = metric(&redis, &name, "failures").await;
    assert_eq!(failures, 10);
    b.reset().await.unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open, "after reset the rules apply again");
}

#[tokio::test]
async fn force_close_for_a_duration_ends_closed() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("forced-closed-for");
    let b = client.breaker(&name, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
    b.force_close(Some(Duration::from_millis(80))).await.unwrap();
    succeed(&b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    succeed(&b).await.unwrap();
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["state"].as_str(), hash["trips"].as_str()), ("closed", "0"));
    assert_eq!(hash["reason"], "forced close expired");
}

#[tokio::test]
async fn reset_clears_failures_trips_probes_and_window_but_keeps_metrics() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("reset");
    let config = Config::builder().failure_threshold(3).failure_rate(0.9).minimum_calls(100).build().unwrap();
    let b = client.breaker(&name, config).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    let before = state_field(&redis, &name, "epoch").await;
    b.reset().await.unwrap();
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["failures"].as_str(), hash["trips"].as_str()), ("0", "0"));
    assert_eq!(hash["epoch"].parse::<u64>().unwrap(), before, "a reset of a closed breaker is no transition");
    let mut conn = redis.conn().await;
    let window: i64 =
        redis::cmd("EXISTS").arg(format!("breaker:{{{name}}}:window")).query_async(&mut conn).await.unwrap();
    assert_eq!(window, 0);
    let calls: u64 = redis::cmd("HGET")
        .arg(format!("breaker:{{{name}}}:metrics"))
        .arg("calls")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(calls, 2);
}

#[tokio::test]
async fn a_late_outcome_from_an_old_epoch_moves_nothing() {
    let redis = redis().await;
    let name = unique("late");
    let config = Config::builder().failure_threshold(2).build().unwrap();
    let slow_worker = client(&redis, Duration::from_secs(1)).await.breaker(&name, config.clone()).unwrap();
    let others = client(&redis, Duration::from_secs(1)).await.breaker(&name, config).unwrap();
    let permit = slow_worker.acquire().await.unwrap();
    fail(&others).await.unwrap_err();
    fail(&others).await.unwrap_err();
    assert_eq!(others.state(), State::Open);
    others.reset().await.unwrap();
    let epoch = state_field(&redis, &name, "epoch").await;
    assert_eq!(epoch, 2);

    permit.failure().await; // granted in epoch 0, reported in epoch 2
    let hash = state_hash(&redis, &name).await;
    assert_eq!((hash["state"].as_str(), hash["failures"].as_str()), ("closed", "0"), "a stale failure moves nothing");
    assert_eq!(state_field(&redis, &name, "epoch").await, epoch);
    let failures: u64 = metric(&redis, &name, "failures").await;
    assert_eq!(failures, 3, "it still counts in metrics");
}

#[tokio::test]
async fn open_times_stay_inside_the_jitter_bounds_and_spread_across_them() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("jitter");
    let config = Config::builder()
        .failure_threshold(1)
        .base_recovery(Duration::from_secs(10))
        .max_recovery(Duration::from_secs(60))
        .jitter(0.5)
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    let mut bins = [0u32; 10];
    for _ in 0..200 {
        fail(&b).await.unwrap_err();
        let h = state_hash(&redis, &name).await;
        let open_ms = h["open_until"].parse::<u64>().unwrap() - h["opened_at"].parse::<u64>().unwrap();
        assert!((5_000..=15_000).contains(&open_ms), "open time {open_ms}ms outside 10s +/- 50%");
        bins[((open_ms - 5_000) / 1_000).min(9) as usize] += 1;
        b.reset().await.unwrap();
    }
    // 200 uniform draws over 10 bins: each bin expects 20; fewer than 5 has odds below 1e-5.
    assert!(bins.iter().all(|n| *n >= 5), "open times do not spread over the jitter range: {bins:?}");
}

#[tokio::test]
async fn two_clients_see_the_same_deadline() {
    let redis = redis().await;
    let name = unique("same-deadline");
    let config =
        Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(20)).jitter(0.5).build().unwrap();
    let a = client(&redis, Duration::ZERO).await.breaker(&name, config.clone()).unwrap();
    let b = client(&redis, Duration::ZERO).await.breaker(&name, config).unwrap();
    fail(&a).await.unwrap_err();
    let ra = a.acquire().await.unwrap_err().retry_after().unwrap();
    let rb = b.acquire().await.unwrap_err().retry_after().unwrap();
    let h = state_hash(&redis, &name).await;
    let open_ms =
        Duration::from_millis(h["open_until"].parse::<u64>().unwrap() - h["opened_at"].parse::<u64>().unwrap());
    assert!(ra <= open_ms && rb <= ra, "both count down to the one stored deadline: {ra:?} {rb:?} {open_ms:?}");
    assert!(ra - rb < Duration::from_millis(100), "{ra:?} vs {rb:?}");
    assert!(open_ms - ra < Duration::from_millis(100));
}

/// A Redis user made on `redis` with `rules` (after `on nopass ~*`), and a client of it.
async fn client_as(redis: &TestRedis, user: &str, rules: &[&str]) -> redis_breaker::Client {
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", user, "reset", "on", "nopass", "~*"])
        .arg(rules)
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let url = redis.url.replacen("redis://", &format!("redis://{user}:x@"), 1);
    let config = redis_breaker::ClientConfig::builder().op_timeout(Duration::from_secs(2)).build().unwrap();
    redis_breaker::Client::connect_with(&url, config).await.unwrap()
}

/// Whether the server tells before anything is written that a user may not publish
/// (`redis.acl_check_cmd`, Redis and Valkey >= 7.0): there an operator's write that could not be
/// announced is refused; before 7.0 it is made and reported unannounced.
async fn tells_ahead(redis: &TestRedis) -> bool {
    redis.version().await >= (7, 0)
}

/// The state hash and the history's length: what a refused write must leave as they were.
async fn written(redis: &TestRedis, name: &str) -> (std::collections::HashMap<String, String>, u64) {
    let history: u64 = redis::cmd("XLEN").arg(key(name, "history")).query_async(&mut redis.conn().await).await.unwrap();
    (state_hash(redis, name).await, history)
}

/// Issue 22, item 3: on Redis >= 7.0 an operator's write whose transition's event this Redis
/// user may not publish (Redis 7's `acl-pubsub-default resetchannels`) is refused before
/// anything is written — no state change, no history entry — with an error naming the channel
/// and what to grant; processes holding an older snapshot would otherwise go on deciding from it
/// for up to `subscribed_cache_ttl`. A reset of a closed breaker (no transition, no event) is
/// not refused. Granted the channel, the same user's write goes through, announced. On 6.2 the
/// server cannot tell ahead: the write is made and reported unannounced.
#[tokio::test]
async fn an_operators_transition_redis_would_not_announce_is_refused_before_anything_is_written() {
    let redis = private_redis().await;
    let name = unique("refused-unannounced");
    let trips = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(60)).build().unwrap();
    // A service that may publish trips the breaker: open, announced.
    let service = redis_breaker::Client::connect(&redis.url).await.unwrap().breaker(&name, trips.clone()).unwrap();
    fail(&service).await.unwrap_err();
    assert_eq!(service.state(), State::Open);
    let operator = client_as(&redis, "ops", &["resetchannels", "+@all"]).await;
    let b = operator.breaker(&name, Config::default()).unwrap();
    let before = written(&redis, &name).await;
    assert_eq!((before.0["state"].as_str(), before.1), ("open", 1));

    if !tells_ahead(&redis).await {
        let snap = b.force_open(None).await.expect("before 7.0 the write is made");
        assert_eq!((snap.state, snap.announced), (State::ForcedOpen, false), "and reported unannounced");
        assert_eq!(written(&redis, &name).await.1, 2, "its history entry");
        eprintln!("redis {:?} cannot tell ahead: the write was made and reported unannounced", redis.version().await);
        return;
    }
    for what in ["force_open", "force_open_noted", "force_close", "force_close_noted", "reset"] {
        let result = match what {
            "force_open" => b.force_open(None).await,
            "force_open_noted" => b.force_open_noted(Some(Duration::from_secs(30)), "rollback").await,
            "force_close" => b.force_close(Some(Duration::from_secs(10))).await,
            "force_close_noted" => b.force_close_noted(None, "hotfix").await,
            _ => b.reset().await,
        };
        match result {
            Err(StoreError::PublishDenied { key, channel, grant }) => {
                assert_eq!(key, format!("breaker:{{{name}}}:state"), "{what}");
                assert_eq!((channel.as_str(), grant.as_str()), ("breaker:events", "&breaker:events (and +publish)"));
            }
            other => panic!("{what}: expected a refusal, nothing written; got {other:?}"),
        }
        assert_eq!(written(&redis, &name).await, before, "{what} wrote something");
    }
    let e = b.reset_noted("x").await.unwrap_err();
    assert!(!e.is_outage(), "a refusal, not an outage");
    assert_eq!(
        e.to_string(),
        "the redis user may not publish on breaker:events, so no process would hear of this write: nothing was written; grant it &breaker:events (and +publish) in its ACL and write again"
    );
    assert_eq!(service.state(), State::Open, "the service's snapshot is still the truth");

    // A reset of a closed breaker makes no transition: nothing to announce, nothing refused.
    let closed = unique("refused-unannounced-closed");
    let counting = Config::builder().failure_threshold(3).build().unwrap();
    fail(&service_of(&redis, &closed, counting).await).await.unwrap_err();
    assert_eq!(state_field(&redis, &closed, "failures").await, 1);
    let snap = operator.breaker(&closed, Config::default()).unwrap().reset().await.expect("no transition: not refused");
    assert_eq!((snap.state, snap.announced), (State::Closed, true));
    assert_eq!(state_field(&redis, &closed, "failures").await, 0, "its failures cleared");

    // Granted the channel, the same user's write goes through, announced.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "ops", "&breaker:events"])
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let snap = b.force_open(None).await.expect("granted the channel");
    assert_eq!((snap.state, snap.announced), (State::ForcedOpen, true));
    assert_eq!(written(&redis, &name).await.1, 2, "one history entry");
}

/// A breaker of `name` on a client of its own (one that may publish).
async fn service_of(redis: &TestRedis, name: &str, config: Config) -> redis_breaker::Breaker {
    redis_breaker::Client::connect(&redis.url).await.unwrap().breaker(name, config).unwrap()
}

/// Issue 22, item 3, before Redis 7.0 (which cannot tell ahead that a PUBLISH will be refused):
/// an operator whose Redis user may not publish on the events channel forces a breaker: the
/// state is written, the API says its event went out to nobody, the state hash remembers it, and
/// a subscribed process that confirms a state nobody announced trusts it for `cache_ttl`, not
/// `subscribed_cache_ttl`: it stops admitting calls within `cache_ttl` of the next unannounced
/// transition. On >= 7.0 such a write is refused (the test above).
#[tokio::test]
async fn an_operators_transition_redis_would_not_announce_is_reported_and_trusted_briefly() {
    let redis = private_redis().await;
    let name = unique("unannounced");
    let operator =
        client_as(&redis, "ops", &["resetchannels", "+@all"]).await.breaker(&name, Config::default()).unwrap();
    // The service: default bounds (30s while subscribed, 1s otherwise).
    let service = redis_breaker::Client::connect(&redis.url).await.unwrap().breaker(&name, Config::default()).unwrap();
    breaker_subscribed(&service).await;
    if tells_ahead(&redis).await {
        let refused = operator.force_close(None).await;
        assert!(matches!(refused, Err(StoreError::PublishDenied { .. })), "refused on >= 7.0: {refused:?}");
        eprintln!("redis {:?} tells ahead: refused (the unannounced path runs on 6.2)", redis.version().await);
        return;
    }
    succeed(&service).await.unwrap();

    let snap = operator.force_close(None).await.expect("the write itself is applied");
    assert_eq!(snap.state, State::ForcedClosed);
    assert!(!snap.announced, "the API says the event went out to nobody");
    assert!(snap.unannounced_warning().unwrap().contains("not published"));
    assert_eq!(state_hash(&redis, &name).await["announced"], "0", "the state hash remembers it");
    assert!(!operator.status().await.unwrap().announced, "and operators' status shows it");
    // The service confirms the state with Redis (its flush): one nobody announced.
    service.flush().await.unwrap();
    assert_eq!(service.state(), State::ForcedClosed);
    assert!(!service.snapshot().announced);

    let snap = operator.force_open(None).await.unwrap();
    assert_eq!((snap.state, snap.announced), (State::ForcedOpen, false));
    let forced = std::time::Instant::now();
    let cache_ttl = redis_breaker::ClientConfig::DEFAULT_CACHE_TTL;
    let mut admitted = 0;
    while succeed(&service).await.is_ok() {
        admitted += 1;
        assert!(
            forced.elapsed() < cache_ttl * 3,
            "the service still admits calls {:?} after an unannounced forced open ({admitted} calls)",
            forced.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stopped = forced.elapsed();
    assert!(stopped < cache_ttl + Duration::from_millis(300), "stopped after {stopped:?}");
    eprintln!("an unannounced forced open stopped the service after {stopped:?} ({admitted} calls)");

    // An operator who may publish: the transition is announced, and the mark is gone.
    let mut events = service.subscribe();
    let snap = service.reset().await.unwrap();
    assert!(snap.announced);
    assert!(!state_hash(&redis, &name).await.contains_key("announced"));
    assert!(service.status().await.unwrap().announced);
    let e = tokio::time::timeout(Duration::from_secs(5), events.recv()).await.unwrap().unwrap();
    assert_eq!(e.to, State::Closed);
}

/// Issue 22, item 3, on a real 3-master cluster, where a transition's event goes with SPUBLISH
/// to the breaker's own channel (>= 7.0): the refusal names that channel and the pattern to
/// grant for every breaker of the prefix. Before 7.0 (one channel, PUBLISH) the write is made
/// and reported unannounced.
#[cfg(feature = "cluster")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_refusal_names_the_breakers_shard_channel() {
    let cluster = cluster();
    let mut urls = Vec::new();
    for url in &cluster.urls {
        let mut conn = crate::support::admin_connection(url).await;
        let _: () = redis::cmd("ACL")
            .arg(&["SETUSER", "ops", "reset", "on", "nopass", "~*", "resetchannels", "+@all"])
            .query_async(&mut conn)
            .await
            .unwrap();
        urls.push(url.replacen("redis://", "redis://ops:x@", 1));
    }
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let config = redis_breaker::ClientConfig::builder().op_timeout(Duration::from_secs(2)).build().unwrap();
    let operator = redis_breaker::Client::connect_cluster(&urls, config).await.unwrap();
    let name = unique("cluster-refused");
    let b = operator.breaker(&name, Config::default()).unwrap();
    let info: String =
        redis::cmd("INFO").arg("server").query_async(&mut redis_conn(&cluster.urls[0]).await).await.unwrap();
    let major = info.lines().find_map(|l| l.strip_prefix("redis_version:")?.split('.').next()?.parse::<u32>().ok());
    let seven = major.unwrap_or(0) >= 7;
    match b.force_open(None).await {
        Err(StoreError::PublishDenied { channel, grant, .. }) if seven => {
            assert_eq!(channel, format!("breaker:{{{name}}}:events"));
            assert_eq!(grant, "&breaker:{*}:events (and +spublish)");
        }
        Ok(snap) if !seven => assert_eq!((snap.state, snap.announced), (State::ForcedOpen, false)),
        other => panic!("redis >= 7.0: {seven}; got {other:?}"),
    }
}

#[cfg(feature = "cluster")]
async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    crate::support::admin_connection(url).await
}
