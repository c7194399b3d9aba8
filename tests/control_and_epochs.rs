//! Operators' forced states and reset, epochs, and outcomes that arrive late.

mod support;

use redis_breaker::{Config, Error, Rejected, State};
use std::time::Duration;
use support::*;

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
        Err(Error::Rejected(Rejected { state: State::ForcedOpen, retry_after: None, .. })) => {}
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
        Err(Error::Rejected(Rejected { state: State::ForcedOpen, retry_after: Some(d), .. })) => {
            assert!(d <= Duration::from_millis(100))
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
    let ra = a.acquire().await.unwrap_err().retry_after.unwrap();
    let rb = b.acquire().await.unwrap_err().retry_after.unwrap();
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

/// Issue 22, item 3: an operator whose Redis user may not publish on the events channel (Redis
/// 7's `acl-pubsub-default resetchannels`) forces a breaker: the state is written, the API says
/// its event went out to nobody, the state hash remembers it, and a subscribed process that
/// confirms a state nobody announced trusts it for `cache_ttl`, not `subscribed_cache_ttl`: it
/// stops admitting calls within `cache_ttl` of the next unannounced transition.
#[tokio::test]
async fn an_operators_transition_redis_would_not_announce_is_reported_and_trusted_briefly() {
    let redis = private_redis().await;
    let name = unique("unannounced");
    let operator =
        client_as(&redis, "ops", &["resetchannels", "+@all"]).await.breaker(&name, Config::default()).unwrap();
    // The service: default bounds (30s while subscribed, 1s otherwise).
    let service = redis_breaker::Client::connect(&redis.url).await.unwrap().breaker(&name, Config::default()).unwrap();
    let start = std::time::Instant::now();
    while !service.health().await.unwrap().events_subscribed {
        assert!(start.elapsed() < Duration::from_secs(5), "no event subscription");
        tokio::time::sleep(Duration::from_millis(5)).await;
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
