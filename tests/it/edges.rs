//! Edges where a breaker used to go wrong: leases against timeouts, state that expires or goes
//! back in time, poisoned counters, lost or late replies, outages, panics and absurd values.
//! Each test guards one behaviour users rely on.

use crate::support;
use crate::support::*;
use redis_breaker::{Client, ClientConfig, Config, ConfigBuilder, ConfigError, Error, EventKind, State, StoreStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Trips on one failure and is ready for probes 50ms later.
fn recovering() -> ConfigBuilder {
    Config::builder()
        .failure_threshold(1)
        .base_recovery(Duration::from_millis(50))
        .max_recovery(Duration::from_millis(50))
        .jitter(0.0)
}

async fn zcard(redis: &TestRedis, key: &str) -> u64 {
    redis::cmd("ZCARD").arg(key).query_async(&mut redis.conn().await).await.expect("ZCARD")
}

async fn redis_now_ms(redis: &TestRedis) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut redis.conn().await).await.expect("TIME");
    s * 1000 + us / 1000
}

/// Runs one command given as words (`NAME` is replaced by the breaker's name).
async fn hand_set(redis: &TestRedis, name: &str, words: &[&str]) {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(w.replace("NAME", name));
    }
    let _: redis::Value = cmd.query_async(&mut redis.conn().await).await.expect("hand-set command");
}

/// A loopback proxy that holds server-to-client bytes for `delay` on connections that have
/// sent EVALSHA or FCALL (the script connection), and forwards every other connection (the event
/// subscription) at once. Each chunk keeps its own arrival time, so the delay does not add up.
struct DelayProxy {
    port: u16,
}

impl DelayProxy {
    async fn start(upstream: String, delay: Duration) -> DelayProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&upstream).await else { continue };
                let (mut ri, mut wi) = inbound.into_split();
                let (mut ro, mut wo) = outbound.into_split();
                let scripted = Arc::new(AtomicBool::new(false));
                let seen = scripted.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match ri.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let has = |word: &[u8]| buf[..n].windows(word.len()).any(|w| w.eq_ignore_ascii_case(word));
                        if has(b"EVALSHA") || has(b"FCALL") {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if wo.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Option<Instant>, Vec<u8>)>();
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match ro.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        let hold = scripted.load(Ordering::SeqCst).then(|| Instant::now() + delay);
                        if tx.send((hold, buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    use tokio::io::AsyncWriteExt;
                    while let Some((hold, bytes)) = rx.recv().await {
                        if let Some(until) = hold {
                            tokio::time::sleep_until(until.into()).await;
                        }
                        if wi.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DelayProxy { port }
    }
}

// ---------------------------------------------------------------------------------------------
// Probe leases against call timeouts
// ---------------------------------------------------------------------------------------------

/// A probe lease that does not outlive the call timeout by a tenth is refused at build.
#[test]
fn a_probe_lease_must_outlive_the_call_timeout_by_a_tenth() {
    let build = |timeout_ms: u64, lease_ms: u64| {
        Config::builder()
            .call_timeout(Duration::from_millis(timeout_ms))
            .probe_lease(Duration::from_millis(lease_ms))
            .build()
    };
    let equal = build(10_000, 10_000);
    assert!(matches!(equal, Err(ConfigError::Field { field: "call_timeout", .. })), "{equal:?}");
    let short = build(10_000, 10_999);
    assert!(matches!(short, Err(ConfigError::Field { field: "call_timeout", .. })), "{short:?}");
    build(10_000, 11_000).expect("a lease of call_timeout + a tenth is enough");
}

/// The defaults leave the probe lease a margin over the call timeout (35s over 30s).
#[test]
fn the_default_probe_lease_outlives_the_default_call_timeout() {
    let c = Config::default();
    assert_eq!((c.call_timeout(), c.probe_lease()), (Duration::from_secs(30), Duration::from_secs(35)));
    Config::builder().build().expect("the defaults pass their own rules");
}

/// A probe reported after its lease ran out still counts when nobody took its slot.
#[tokio::test]
async fn a_probe_reported_after_its_lease_expired_still_counts_when_its_slot_is_free() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("late-probe");
    let config = recovering()
        .success_threshold(1)
        .probe_lease(Duration::from_millis(200))
        .call_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    fail(&b).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let probe = b.acquire().await.expect("the probe");
    assert!(probe.is_probe());
    tokio::time::sleep(Duration::from_millis(300)).await;
    probe.failure().await;
    let h = state_hash(&redis, &name).await;
    assert_eq!(
        (h.get("state").map(String::as_str), h.get("trips").map(String::as_str)),
        (Some("open"), Some("2")),
        "the late probe's failure reopened the breaker: {h:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Half-open state lifetime
// ---------------------------------------------------------------------------------------------

/// A half-open breaker whose probes keep coming back without a verdict never expires into closed.
#[tokio::test]
async fn a_half_open_breaker_does_not_expire_into_closed_while_probed() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("half-open-ttl");
    let config = recovering()
        .success_threshold(5)
        .state_ttl(Duration::from_millis(400))
        .probe_lease(Duration::from_millis(200))
        .call_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    fail(&b).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let start = Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let permit = b.acquire().await.expect("the probe slot is free");
        assert!(permit.is_probe(), "round {round}, {:?} in: a probe, not a closed breaker's call", start.elapsed());
        if round % 2 == 0 {
            permit.ignore().await;
        } else {
            permit.release().await;
        }
        let h = state_hash(&redis, &name).await;
        assert_eq!(
            h.get("state").map(String::as_str),
            Some("half_open"),
            "round {round}, {:?} in: the half-open state expired while probed: {h:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        round += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// Epochs that go back in time
// ---------------------------------------------------------------------------------------------

/// After Redis is restored to an older epoch, the cache takes it and calls stop asking Redis.
#[tokio::test]
async fn a_redis_restored_to_an_older_epoch_does_not_stall_the_cache() {
    let redis = private_redis().await;
    let client = client_flushing_every(&redis, Duration::from_millis(200), Duration::from_secs(60)).await;
    let name = unique("older-epoch");
    let b = client.breaker(&name, Config::default()).unwrap();
    for _ in 0..3 {
        b.force_open(None).await.unwrap();
        b.reset().await.unwrap();
    }
    let h = state_hash(&redis, &name).await;
    assert_eq!(h["epoch"], "6");
    // A restore from an older RDB: the same incarnation, an older epoch, closed.
    hand_set(
        &redis,
        &name,
        &["HSET", "breaker:{NAME}:state", "state", "closed", "epoch", "1", "incarnation", h["incarnation"].as_str()],
    )
    .await;

    let before = redis.script_calls().await;
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        succeed(&b).await.expect("closed: allowed");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let spent = redis.script_calls().await - before;
    assert!(spent < calls / 4, "{spent} EVALSHA for {calls} calls: the cache never took Redis's older epoch");
    assert_eq!(b.snapshot().epoch, 1, "the snapshot follows Redis");
}

/// An event forged with an epoch from the far future does not pin the breaker open.
#[tokio::test]
async fn a_forged_event_from_the_future_does_not_pin_the_breaker_open() {
    let redis = private_redis().await;
    let client = client_flushing_every(&redis, Duration::from_millis(200), Duration::from_secs(60)).await;
    let name = unique("forged");
    let b = client.breaker(&name, Config::default()).unwrap();
    b.force_open(None).await.unwrap();
    b.reset().await.unwrap();
    subscribed(&client).await;
    let h = state_hash(&redis, &name).await;
    let real_epoch: u64 = h["epoch"].parse().unwrap();
    let forged = serde_json::json!({
        "name": name, "from": "closed", "to": "open",
        "incarnation": h["incarnation"].parse::<u64>().unwrap(),
        "epoch": 1_000_000_000_000_000u64, "fseq": 0, "retry_after_ms": 600_000, "reason": "forged",
    });
    let mut events = b.subscribe();
    let receivers: u64 = redis::cmd("PUBLISH")
        .arg("breaker:events")
        .arg(forged.to_string())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert!(receivers >= 1, "the client's subscription received the forged event");
    // The process has applied the forged event before the recovery is measured.
    loop {
        let e = tokio::time::timeout(Duration::from_secs(3), events.recv()).await.unwrap().unwrap();
        if e.epoch == 1_000_000_000_000_000 {
            break;
        }
    }

    let start = Instant::now();
    loop {
        let ran = succeed(&b).await.is_ok();
        let snap = b.snapshot();
        if ran && snap.state == State::Closed && snap.epoch == real_epoch {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the forged event still holds the snapshot: ran {ran}, {:?} epoch {} (Redis: closed, epoch {real_epoch})",
            snap.state,
            snap.epoch
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = redis.script_calls().await;
    let mut calls = 0u64;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(600) {
        succeed(&b).await.expect("closed: allowed");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let spent = redis.script_calls().await - before;
    assert!(spent < calls / 4, "{spent} EVALSHA for {calls} calls: the cache did not recover");
}

// ---------------------------------------------------------------------------------------------
// Poisoned counters
// ---------------------------------------------------------------------------------------------

/// Poisons a key of a fresh breaker (`poison` runs once the client listens to events), makes
/// one failing call with `config` (it trips on one failure), and checks the trip took whole:
/// the caller gets its own error, the state is open, later calls are rejected, the event is
/// published. Returns the breaker's name, for checks of the repaired key.
async fn trip_through_poison(redis: &TestRedis, config: Config, poison: &[&[&str]]) -> String {
    let client = client(redis, Duration::from_secs(1)).await;
    let name = unique("poisoned");
    let b = client.breaker(&name, config).unwrap();
    let mut events = b.subscribe();
    subscribed(&client).await;
    for words in poison {
        hand_set(redis, &name, words).await;
    }
    let r = fail(&b).await;
    assert!(matches!(r, Err(Error::Inner("downstream failed"))), "the caller gets its own error: {r:?}");
    assert_eq!(state_hash(redis, &name).await.get("state").map(String::as_str), Some("open"));
    for i in 0..5 {
        let r = succeed(&b).await;
        assert!(matches!(r, Err(Error::Rejected(_))), "call {i} after the trip was let through: {r:?}");
    }
    let published = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match events.recv().await {
                Some(e) if e.kind == EventKind::Transition && e.to == State::Open => return,
                Some(_) => continue,
                None => panic!("the client is gone"),
            }
        }
    })
    .await;
    assert!(published.is_ok(), "the trip was published on breaker:events");
    name
}

/// A non-numeric metrics counter does not leave a trip half-applied, and is repaired.
#[tokio::test]
async fn a_non_numeric_metrics_counter_does_not_half_apply_a_trip() {
    let config = Config::builder().failure_threshold(1).build().unwrap();
    let redis = redis().await;
    let name = trip_through_poison(&redis, config, &[&["HSET", "breaker:{NAME}:metrics", "calls", "abc"]]).await;
    let calls: Option<String> =
        redis::cmd("HGET").arg(key(&name, "metrics")).arg("calls").query_async(&mut redis.conn().await).await.unwrap();
    assert!(calls.as_deref().is_some_and(|c| c.parse::<u64>().is_ok()), "calls is a number again: {calls:?}");
}

/// A metrics counter one increment from overflow does not leave a trip half-applied, and is repaired.
#[tokio::test]
async fn a_metrics_counter_at_its_limit_does_not_half_apply_a_trip() {
    let config = Config::builder().failure_threshold(1).build().unwrap();
    let max = i64::MAX.to_string();
    let redis = redis().await;
    let name =
        trip_through_poison(&redis, config, &[&["HSET", "breaker:{NAME}:metrics", "failures", max.as_str()]]).await;
    let failures: Option<String> = redis::cmd("HGET")
        .arg(key(&name, "metrics"))
        .arg("failures")
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert!(
        failures.as_deref().is_some_and(|f| f.parse::<u64>().is_ok_and(|n| n < i64::MAX as u64)),
        "failures is a number that can be incremented again: {failures:?}"
    );
}

/// A non-numeric rate-window bucket does not leave a trip half-applied, and is repaired.
#[tokio::test]
async fn a_non_numeric_window_bucket_does_not_half_apply_a_trip() {
    let window = Duration::from_secs(10);
    let config =
        Config::builder().failure_threshold(1).failure_rate(0.5).minimum_calls(100).window(window).build().unwrap();
    // Poison the buckets around now (a bucket is window/10), so the failure lands on one.
    let redis = redis().await;
    let bucket = redis_now_ms(&redis).await / (window.as_millis() as u64 / 10);
    let fields: Vec<String> = (bucket - 1..=bucket + 2).flat_map(|b| [format!("{b}:c"), format!("{b}:f")]).collect();
    let mut hset = vec!["HSET", "breaker:{NAME}:window"];
    for f in &fields {
        hset.push(f);
        hset.push("x");
    }
    let name = trip_through_poison(&redis, config, &[&hset]).await;
    let window: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(key(&name, "window")).query_async(&mut redis.conn().await).await.unwrap();
    assert!(window.values().all(|v| v.parse::<i64>().is_ok()), "every bucket is a number again: {window:?}");
}

// ---------------------------------------------------------------------------------------------
// Acquire replies that never arrive
// ---------------------------------------------------------------------------------------------

/// The config of the lost-reply tests: one probe, leased for long.
fn one_long_probe() -> Config {
    recovering()
        .half_open_max_probes(1)
        .probe_lease(Duration::from_secs(10))
        .call_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Trips `name`, waits until it may probe, and makes sure `b`'s connection is up (so the next
/// acquire is sent at once).
async fn ready_to_probe(redis: &TestRedis, b: &redis_breaker::Breaker) {
    let other = client(redis, Duration::from_secs(1)).await.breaker(b.name(), b.config().clone()).unwrap();
    fail(&other).await.unwrap_err();
    let start = Instant::now();
    // A flush is a script call: the client's first one also checks the server and the ACL.
    while b.flush().await.is_err() {
        assert!(start.elapsed() < Duration::from_secs(5), "the client never reached Redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
}

async fn pause_redis(redis: &TestRedis, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("ALL")
        .query_async(&mut redis.conn().await)
        .await
        .expect("CLIENT PAUSE");
}

/// After the paused acquire ran (the breaker went half-open), its lease must be freed soon and
/// another process must get the probe.
async fn the_probe_slot_is_free_again(redis: &TestRedis, name: &str) {
    tokio::time::sleep(Duration::from_millis(350)).await; // the pause is over
    eventually_within("the paused acquire reached Redis and went half-open", Duration::from_secs(3), async || {
        state_hash(redis, name).await.get("state").map(String::as_str) == Some("half_open")
    })
    .await;
    let probes = key(name, "probes");
    eventually_within("the lost acquire's lease was freed, long before its 10s", Duration::from_secs(3), async || {
        zcard(redis, &probes).await == 0
    })
    .await;
    let other = client(redis, Duration::from_secs(1)).await.breaker(name, one_long_probe()).unwrap();
    let permit = other.acquire().await.expect("another process gets the probe");
    assert!(permit.is_probe());
}

/// An acquire whose reply came too late (op_timeout) does not keep the half-open probe slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_acquire_does_not_hold_the_probe_slot() {
    let redis = private_redis().await;
    let config =
        ClientConfig::builder().op_timeout(Duration::from_millis(50)).store_failure_threshold(10).build().unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("lost-acquire");
    let b = client.breaker(&name, one_long_probe()).unwrap();
    ready_to_probe(&redis, &b).await;
    pause_redis(&redis, 300).await;
    let decided_locally = b.acquire().await;
    drop(decided_locally);
    the_probe_slot_is_free_again(&redis, &name).await;
}

/// An acquire cancelled while Redis was slow does not keep the half-open probe slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_acquire_does_not_hold_the_probe_slot() {
    let redis = private_redis().await;
    let config = ClientConfig::builder().op_timeout(Duration::from_secs(2)).build().unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("cancelled-acquire");
    let b = client.breaker(&name, one_long_probe()).unwrap();
    ready_to_probe(&redis, &b).await;
    pause_redis(&redis, 300).await;
    let cancelled = tokio::time::timeout(Duration::from_millis(50), b.acquire()).await;
    assert!(cancelled.is_err(), "the acquire was cancelled while Redis was paused");
    the_probe_slot_is_free_again(&redis, &name).await;
}

// ---------------------------------------------------------------------------------------------
// Processes with different windows
// ---------------------------------------------------------------------------------------------

/// Two processes whose rate windows differ still trip the breaker on their shared failures.
#[tokio::test]
async fn processes_with_different_windows_do_not_wipe_each_others_counts() {
    let redis = redis().await;
    let client_config = || {
        ClientConfig::builder()
            .flush_interval(Duration::from_millis(100))
            .op_timeout(Duration::from_secs(2))
            .build()
            .unwrap()
    };
    let rate = |window| {
        Config::builder().failure_threshold(0).failure_rate(0.5).minimum_calls(10).window(window).build().unwrap()
    };
    let name = unique("windows");
    let a = Client::connect_with(&redis.url, client_config()).await.unwrap();
    let b = Client::connect_with(&redis.url, client_config()).await.unwrap();
    let two = a.breaker(&name, rate(Duration::from_secs(2))).unwrap();
    let three = b.breaker(&name, rate(Duration::from_secs(3))).unwrap();
    for _ in 0..10 {
        let _ = fail(&two).await;
        let _ = fail(&three).await;
    }
    let h = state_hash(&redis, &name).await;
    assert_eq!(h.get("state").map(String::as_str), Some("open"), "20 failures of 20 calls trip the rate rule: {h:?}");
}

// ---------------------------------------------------------------------------------------------
// Late replies
// ---------------------------------------------------------------------------------------------

/// A reply that reaches a process after a newer trip event does not reopen its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_does_not_overwrite_a_newer_trip_event() {
    let redis = private_redis().await;
    let proxy =
        DelayProxy::start(redis.url.trim_start_matches("redis://").to_string(), Duration::from_millis(200)).await;
    let slow_config = ClientConfig::builder()
        .cache_ttl(Duration::from_secs(1))
        .flush_interval(Duration::from_millis(100))
        .op_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let slow = Client::connect_with(&format!("redis://127.0.0.1:{}", proxy.port), slow_config).await.unwrap();
    let direct = client(&redis, Duration::from_secs(1)).await;
    let name = unique("late-reply");
    let config = Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(30)).build().unwrap();
    let a = slow.breaker(&name, config.clone()).unwrap();
    let b = direct.breaker(&name, config).unwrap();
    subscribed(&slow).await;
    succeed(&a).await.expect("closed");

    // A steady load on A: its batches go out every 100ms, each reply 200ms late.
    let admitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (a, admitted, stop) = (a.clone(), admitted.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = a
                    .execute(|| async {
                        admitted.fetch_add(1, Ordering::SeqCst);
                        Ok::<(), ()>(())
                    })
                    .await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(admitted.load(Ordering::SeqCst) > 0, "the load runs");

    fail(&b).await.unwrap_err();
    let start = Instant::now();
    while a.state() != State::Open {
        assert!(start.elapsed() < Duration::from_secs(5), "A never saw the trip");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await; // a call decided just before it finishes
    let seen = admitted.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let after = admitted.load(Ordering::SeqCst) - seen;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(after, 0, "A let {after} calls through after it had seen the trip");
}

// ---------------------------------------------------------------------------------------------
// Absurd deadlines set by hand
// ---------------------------------------------------------------------------------------------

/// An open state with no deadline (set by hand) does not reject calls for ever.
#[tokio::test]
async fn an_open_state_without_a_deadline_does_not_reject_for_ever() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("open-no-deadline");
    let b = client.breaker(&name, Config::default()).unwrap();
    hand_set(&redis, &name, &["HSET", "breaker:{NAME}:state", "state", "open", "incarnation", "1", "epoch", "1"]).await;
    let start = Instant::now();
    loop {
        match b.acquire().await {
            Ok(permit) => {
                permit.success().await;
                break;
            }
            Err(r) => assert!(start.elapsed() < Duration::from_secs(2), "still rejected: {r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A probe lease scored far in the future (set by hand) frees its slot within the configured lease.
#[tokio::test]
async fn a_probe_lease_scored_far_in_the_future_does_not_block_half_open() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let config = recovering()
        .half_open_max_probes(1)
        .probe_lease(Duration::from_millis(200))
        .call_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for score in ["+inf", "1e300"] {
        let name = unique("far-lease");
        let b = client.breaker(&name, config.clone()).unwrap();
        let now = redis_now_ms(&redis).await.to_string();
        hand_set(
            &redis,
            &name,
            &[
                "HSET",
                "breaker:{NAME}:state",
                "state",
                "half_open",
                "incarnation",
                "1",
                "epoch",
                "2",
                "changed_at",
                now.as_str(),
            ],
        )
        .await;
        hand_set(&redis, &name, &["ZADD", "breaker:{NAME}:probes", score, "stuck"]).await;
        let start = Instant::now();
        loop {
            match b.acquire().await {
                Ok(permit) => {
                    assert!(permit.is_probe(), "lease {score}: a probe");
                    break;
                }
                Err(r) => assert!(start.elapsed() < Duration::from_secs(1), "lease {score}: still rejected: {r:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Outages, the in-memory client, panics, half-open retry times, idle resets
// ---------------------------------------------------------------------------------------------

/// Outcomes of calls made while Redis was down reach its metrics when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_decided_during_an_outage_reach_redis_when_it_returns() {
    let mut redis = private_redis().await;
    let config = ClientConfig::builder()
        .store_failure_threshold(1)
        .op_timeout(Duration::from_millis(500))
        .cache_ttl(Duration::from_millis(50))
        .build()
        .unwrap();
    let client = Client::connect_with(&redis.url, config).await.unwrap();
    let name = unique("outage-outcomes");
    let b = client.breaker(&name, Config::builder().failure_threshold(100).build().unwrap()).unwrap();
    succeed(&b).await.unwrap();
    client.flush().await.unwrap();

    redis.kill();
    let start = Instant::now();
    while client.store_status() != StoreStatus::RedisDown {
        assert!(start.elapsed() < Duration::from_secs(10), "the client never saw Redis down");
        let _ = b.health().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the snapshot's lifetime and its refresh grace: the degraded mode decides every call.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..4 {
        succeed(&b).await.expect("served while Redis is down");
    }
    for _ in 0..2 {
        assert!(matches!(fail(&b).await, Err(Error::Inner(_))), "served while Redis is down");
    }

    redis.restart(); // empty: whatever the metrics hold afterwards came from the outage
    let start = Instant::now();
    while client.store_status() != StoreStatus::Redis {
        assert!(start.elapsed() < Duration::from_secs(10), "the client never saw Redis back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (counts, m) = counts_after_flush(&client, &redis, &name).await;
    assert_eq!(counts, (6, 4, 2), "the 4 successes and 2 failures of the outage reached Redis: {m:?}");
}

/// `state()` of an in-memory breaker reports the state its own calls moved it to.
#[tokio::test]
async fn state_tells_the_truth_when_calls_are_decided_in_the_process() {
    let client = Client::in_memory();
    let b = client.breaker("in-process", Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.status().await.unwrap().state, State::Open, "the in-memory breaker tripped");
    assert_eq!(b.state(), State::Open, "state() agrees with status()");
}

/// A panic inside the protected call counts as a failure, and the panic still reaches the caller:
/// a call let through by Redis's reply, and one let through by a fresh snapshot (the common
/// case, whose guard holds the snapshot's view alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_protected_call_counts_as_a_failure_and_keeps_unwinding() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    for warm in [false, true] {
        let name = unique("panic");
        let b = client.breaker(&name, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
        if warm {
            succeed(&b).await.unwrap();
            assert!(b.snapshot().fresh, "the next call is decided by the snapshot");
        }
        let task = {
            let b = b.clone();
            tokio::spawn(async move {
                b.execute(|| async {
                    if std::hint::black_box(true) {
                        panic!("boom inside the protected call");
                    }
                    Ok::<(), &'static str>(())
                })
                .await
            })
        };
        let err = task.await.expect_err("the panic went on unwinding to the caller");
        assert!(err.is_panic());
        let payload = err.into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"boom inside the protected call"));
        let what = format!("the panic was recorded as a failure (snapshot fresh: {warm}): the breaker is open");
        eventually_within(&what, Duration::from_secs(3), async || {
            state_hash(&redis, &name).await.get("state").map(String::as_str) == Some("open")
        })
        .await;
        let other = support::client(&redis, Duration::ZERO).await.breaker(&name, b.config().clone()).unwrap();
        assert!(other.acquire().await.is_err(), "the fleet rejects calls after the panic");
    }
}

/// A caller rejected while half-open is told to retry soon, not after the whole probe lease.
#[tokio::test]
async fn a_caller_rejected_while_half_open_is_told_a_short_retry_time() {
    let redis = redis().await;
    let config = recovering().build().unwrap(); // default probe_lease and call_timeout
    let name = unique("half-open-retry");
    let a = client(&redis, Duration::from_secs(1)).await.breaker(&name, config.clone()).unwrap();
    let b = client(&redis, Duration::from_secs(1)).await.breaker(&name, config).unwrap();
    fail(&a).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let probe = a.acquire().await.expect("the probe");
    assert!(probe.is_probe());
    let rejected = b.acquire().await.expect_err("the only probe is out");
    assert_eq!(rejected.state, State::HalfOpen);
    let wait = rejected.retry_after().expect("a retry time");
    assert!(wait <= Duration::from_secs(1), "told to retry after {wait:?}");
    probe.release().await;
}

/// `reset()` of a breaker that is already closed publishes nothing and keeps its epoch.
#[tokio::test]
async fn resetting_a_closed_breaker_publishes_nothing_and_keeps_the_epoch() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("idle-reset");
    let b = client.breaker(&name, Config::default()).unwrap();
    let mut events = b.subscribe();
    subscribed(&client).await;
    b.force_open(None).await.unwrap();
    b.reset().await.unwrap();
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = events.recv().await {
            if e.kind == EventKind::Transition && e.to == State::Closed {
                return;
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the first reset's event arrived");
    let epoch = state_field(&redis, &name, "epoch").await;
    assert_eq!(epoch, 2);

    let snapshot = b.reset().await.unwrap();
    assert_eq!(state_field(&redis, &name, "epoch").await, epoch, "a reset of a closed breaker is no transition");
    assert_eq!(snapshot.epoch, epoch);
    let extra = tokio::time::timeout(Duration::from_millis(300), events.recv()).await;
    assert!(extra.is_err(), "nothing was published: {extra:?}");
}

/// A cache lifetime over a minute is refused at build.
#[test]
fn a_cache_ttl_over_a_minute_is_refused() {
    let long = ClientConfig::builder().cache_ttl(Duration::from_secs(3600)).build();
    assert!(matches!(long, Err(ConfigError::Field { field: "cache_ttl", .. })), "{long:?}");
    ClientConfig::builder().cache_ttl(Duration::from_secs(60)).build().expect("a minute is the most");
}

// =============================================================================================
// NEW API: the tests below use API added with the fixes (StoreError::Invalid); they do not
// compile against c586f73.
// =============================================================================================

/// `force_open` refuses a duration the scripts cannot hold, before writing anything.
#[tokio::test]
async fn force_open_refuses_a_duration_the_scripts_cannot_hold() {
    let redis = redis().await;
    let client = client(&redis, Duration::from_secs(1)).await;
    let name = unique("huge-force");
    let b = client.breaker(&name, Config::default()).unwrap();
    let r = b.force_open(Some(Duration::from_secs(104_230_000 * 86_400))).await;
    assert!(matches!(r, Err(redis_breaker::StoreError::Invalid(_))), "{r:?}");
    assert!(state_hash(&redis, &name).await.is_empty(), "nothing was written");
}
