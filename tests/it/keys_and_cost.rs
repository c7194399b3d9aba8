//! The key schema as redis-cli sees it, lost and flushed state, and the Redis cost of calls.

use crate::support::*;
use redis_breaker::{Client, Config, Error, State, StoreStatus};
use std::collections::HashMap;
use std::time::Duration;

#[tokio::test]
async fn every_key_has_a_ttl_and_the_state_outlives_open_until() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("ttl");
    let config = Config::builder()
        .failure_threshold(2)
        .failure_rate(0.9)
        .minimum_calls(50)
        .base_recovery(Duration::from_millis(50))
        .max_recovery(Duration::from_millis(50))
        .state_ttl(Duration::from_secs(600))
        .success_threshold(3)
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(60)).await;
    let probe = b.acquire().await.unwrap();
    let mut conn = redis.conn().await;
    for suffix in ["state", "probes", "window", "metrics"] {
        let ttl: i64 = redis::cmd("PTTL").arg(key(&name, suffix)).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0, "{suffix} has a TTL (PTTL {ttl})");
    }
    let metrics_ttl: i64 = redis::cmd("PTTL").arg(key(&name, "metrics")).query_async(&mut conn).await.unwrap();
    assert!(metrics_ttl > 86_000_000, "metrics keep their own 24h TTL: {metrics_ttl}");
    drop(probe);

    let long = Config::builder()
        .failure_threshold(1)
        .base_recovery(Duration::from_secs(7200))
        .max_recovery(Duration::from_secs(7200))
        .jitter(0.0)
        .state_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let name2 = unique("ttl-long-open");
    let b2 = client.breaker(&name2, long).unwrap();
    fail(&b2).await.unwrap_err();
    let ttl: i64 = redis::cmd("PTTL").arg(key(&name2, "state")).query_async(&mut conn).await.unwrap();
    assert!(ttl > 7_200_000, "an open state never expires before open_until: PTTL {ttl}");
}

#[tokio::test]
async fn a_missing_state_reads_as_closed_and_a_recreated_one_has_a_new_incarnation() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("lost");
    let b = client.breaker(&name, Config::builder().failure_threshold(1).build().unwrap()).unwrap();
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed, "no keys at all: closed, epoch 0");
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open);
    let first = state_hash(&redis, &name).await["incarnation"].clone();

    let mut conn = redis.conn().await;
    let _: () =
        redis::cmd("DEL").arg(key(&name, "state")).arg(key(&name, "probes")).query_async(&mut conn).await.unwrap();
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed, "deleting the keys is always safe: the breaker is closed");
    fail(&b).await.unwrap_err();
    let second = state_hash(&redis, &name).await["incarnation"].clone();
    assert_ne!(first, second, "the recreated state has a new incarnation");
    assert_eq!(b.snapshot().incarnation.to_string(), second);
}

#[tokio::test]
async fn script_flush_is_survived() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("noscript");
    let b = client.breaker(&name, Config::builder().failure_threshold(2).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut redis.conn().await).await.unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open, "the script was reloaded and the failure counted");
    assert_eq!(state_hash(&redis, &name).await["state"], "open");
}

/// Where the server has Functions (>= 7.0) the scripts go as FCALL of the crate's library; after
/// `FUNCTION FLUSH` the next call loads it again (one FUNCTION LOAD) and is decided as before.
/// Below 7.0, and with `functions(false)`, every call goes with EVALSHA.
#[tokio::test]
async fn the_functions_library_is_loaded_once_and_again_after_function_flush() {
    let redis = private_redis().await;
    let has_functions = redis.version().await >= (7, 0);
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("library");
    let b = client.breaker(&name, Config::builder().failure_threshold(3).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    let stats = redis.commandstats().await;
    let count = |stats: &std::collections::BTreeMap<String, u64>, c: &str| stats.get(c).copied().unwrap_or(0);
    assert_eq!(b.health().await.unwrap().scripts, if has_functions { "functions" } else { "evalsha" });
    if has_functions {
        assert_eq!(count(&stats, "function|load"), 1, "one load for the server: {stats:?}");
        // Each failure is an acquire and a record (cache_ttl zero; the second record goes as the
        // library's `count`); the first FCALL found no library.
        assert_eq!(count(&stats, "fcall"), 5, "one miss, then four calls: {stats:?}");
        let _: () = redis::cmd("FUNCTION").arg("FLUSH").query_async(&mut redis.conn().await).await.unwrap();
    }
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open, "the third failure was counted");
    assert_eq!(state_hash(&redis, &name).await["state"], "open");
    let after = redis.commandstats().await;
    if has_functions {
        assert_eq!(count(&after, "function|load"), 2, "loaded again after the flush: {after:?}");
        assert_eq!(count(&after, "evalsha"), count(&stats, "evalsha"), "no script went with EVALSHA: {after:?}");
    } else {
        assert_eq!(count(&after, "fcall"), 0);
    }

    let config = redis_breaker::ClientConfig::builder().functions(false).build().unwrap();
    let evalsha = Client::connect_with(&redis.url, config).await.unwrap();
    let e = evalsha.breaker(&unique("evalsha"), Config::default()).unwrap();
    let before = redis.commandstats().await;
    fail(&e).await.unwrap_err();
    assert_eq!(e.health().await.unwrap().scripts, "evalsha");
    let after = redis.commandstats().await;
    assert_eq!(count(&after, "fcall"), count(&before, "fcall"), "functions(false) sends no FCALL");
    assert_eq!(
        count(&after, "evalsha") - count(&before, "evalsha"),
        if has_functions { 6 } else { 4 },
        "the connection's check, the failure's acquire and record (each first a NOSCRIPT miss where the first client used the library), the health refresh: {after:?}"
    );
}

/// The library keeps each config it validated under its id, and a call sends the id alone. A
/// library loaded anew (FUNCTION LOAD REPLACE here; a restart or a failover to a server whose
/// library never saw the config) does not know it: the call is refused before anything is
/// written and sent again with the whole config, and the failure counts once.
#[tokio::test]
async fn a_config_the_library_lost_is_sent_again_and_the_failure_counts_once() {
    let redis = private_redis().await;
    if redis.version().await < (7, 0) {
        return;
    }
    let client = client(&redis, Duration::from_secs(60)).await;
    let name = unique("config-lost");
    let b = client.breaker(&name, Config::builder().failure_threshold(3).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    assert_eq!(state_field(&redis, &name, "failures").await, 1);

    let mut conn = redis.conn().await;
    let listed: redis::Value = redis::cmd("FUNCTION")
        .arg("LIST")
        .arg("LIBRARYNAME")
        .arg("redis_breaker_*")
        .arg("WITHCODE")
        .query_async(&mut conn)
        .await
        .unwrap();
    fn code(v: &redis::Value) -> Option<String> {
        match v {
            redis::Value::BulkString(b) if b.starts_with(b"#!lua") => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::Array(items) | redis::Value::Set(items) => items.iter().find_map(code),
            redis::Value::Map(pairs) => pairs.iter().find_map(|(k, v)| code(k).or_else(|| code(v))),
            _ => None,
        }
    }
    let library = code(&listed).expect("the library's code");
    let _: String =
        redis::cmd("FUNCTION").arg("LOAD").arg("REPLACE").arg(&library).query_async(&mut conn).await.unwrap();
    let failed_fcalls = || async {
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut redis.conn().await).await.unwrap();
        let line = info.lines().find(|l| l.starts_with("cmdstat_fcall:")).unwrap_or_default().to_string();
        line.split("failed_calls=").nth(1).and_then(|v| v.split(',').next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    let refused_before = failed_fcalls().await;

    fail(&b).await.unwrap_err();
    assert_eq!(state_field(&redis, &name, "failures").await, 2, "the failure was counted, once");
    assert_eq!(failed_fcalls().await - refused_before, 1, "one call refused for its unknown config");
    assert_eq!(b.health().await.unwrap().store, StoreStatus::Redis, "nothing was decided without Redis");
    fail(&b).await.unwrap_err();
    assert_eq!(b.state(), State::Open, "the third failure opens it: the config is known again");
    assert_eq!(failed_fcalls().await - refused_before, 1, "the config is kept again: sent by its id alone");
    let metrics: HashMap<String, String> =
        redis::cmd("HGETALL").arg(key(&name, "metrics")).query_async(&mut conn).await.unwrap();
    assert_eq!(metrics["failures"], "3");
}

/// A closed state's TTL and the metrics' TTL are set in full when a tenth of the shorter TTL has
/// passed since `ttl_at`, not on every write: a failure record that only counts then runs five
/// commands (TIME, two HMGET, two HSET) and no PEXPIRE. A `ttl_at` that is missing or bad only makes
/// the refresh due.
#[tokio::test]
async fn a_failure_record_sets_the_ttls_only_when_due() {
    let redis = private_redis().await;
    let client = client(&redis, Duration::from_secs(60)).await;
    let name = unique("ttl-due");
    let b = client.breaker(&name, Config::builder().failure_threshold(1000).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    let ttl_at: u64 = state_hash(&redis, &name).await["ttl_at"].parse().expect("ttl_at is written with the state");
    assert!(ttl_at > 0);
    let pexpires = |stats: &std::collections::BTreeMap<String, u64>| stats.get("pexpire").copied().unwrap_or(0);
    let before = redis.commandstats().await;
    for _ in 0..10 {
        fail(&b).await.unwrap_err();
    }
    let after = redis.commandstats().await;
    assert_eq!(pexpires(&after), pexpires(&before), "no TTL set while not due: {after:?}");
    assert_eq!(state_field(&redis, &name, "failures").await, 11);
    let mut conn = redis.conn().await;
    for bad in ["0", "x"] {
        let _: () =
            redis::cmd("HSET").arg(key(&name, "state")).arg("ttl_at").arg(bad).query_async(&mut conn).await.unwrap();
        let before = redis.commandstats().await;
        fail(&b).await.unwrap_err();
        let after = redis.commandstats().await;
        assert_eq!(
            pexpires(&after) - pexpires(&before),
            2,
            "ttl_at {bad:?}: the state's and the metrics' TTLs are set"
        );
        assert!(state_field(&redis, &name, "ttl_at").await >= ttl_at, "ttl_at {bad:?} is written again");
        assert_eq!(state_hash(&redis, &name).await["state"], "closed", "a bad ttl_at is no corrupt state");
    }
    for suffix in ["state", "metrics"] {
        let ttl: i64 = redis::cmd("PTTL").arg(key(&name, suffix)).query_async(&mut conn).await.unwrap();
        assert!(ttl > 0, "{suffix} has a TTL: {ttl}");
    }
}

#[tokio::test]
async fn an_open_breaker_and_a_healthy_one_send_no_redis_command_per_call() {
    let redis = private_redis().await;
    let client = client_flushing_every(&redis, Duration::from_secs(10), Duration::from_secs(600)).await;
    let open = client
        .breaker(
            "cost-open",
            Config::builder().failure_threshold(1).base_recovery(Duration::from_secs(30)).build().unwrap(),
        )
        .unwrap();
    let healthy = client.breaker("cost-healthy", Config::default()).unwrap();
    fail(&open).await.unwrap_err();
    succeed(&healthy).await.unwrap();

    let before = redis.script_calls().await;
    for _ in 0..1000 {
        assert!(matches!(
            succeed(&open).await,
            Err(Error::Rejected(r)) if r.state == State::Open && r.retry_after().is_some()
        ));
        succeed(&healthy).await.unwrap();
    }
    assert_eq!(redis.script_calls().await - before, 0, "2000 calls decided from the snapshots");
    client.flush().await.unwrap();
    assert_eq!(redis.script_calls().await - before, 2, "one flush per breaker carries the counts");
    let mut conn = redis.conn().await;
    let m: HashMap<String, u64> =
        redis::cmd("HGETALL").arg(key("cost-open", "metrics")).query_async(&mut conn).await.unwrap();
    assert_eq!(m["rejected"], 1000);
    let m: HashMap<String, u64> =
        redis::cmd("HGETALL").arg(key("cost-healthy", "metrics")).query_async(&mut conn).await.unwrap();
    assert_eq!((m["calls"], m["successes"]), (1001, 1001));
}

#[tokio::test]
async fn a_different_config_in_the_fleet_shows_in_health() {
    let redis = redis().await;
    let name = unique("config-drift");
    let old = client(&redis, Duration::ZERO).await.breaker(&name, Config::default()).unwrap();
    let new = client(&redis, Duration::ZERO)
        .await
        .breaker(&name, Config::builder().failure_threshold(9).build().unwrap())
        .unwrap();
    fail(&old).await.unwrap_err();
    let h = new.health().await.unwrap();
    assert_eq!(h.store, StoreStatus::Redis);
    assert!(!h.config_matches, "the state was last written with another config");
    fail(&new).await.unwrap_err();
    let h = new.health().await.unwrap();
    assert!(h.config_matches, "its own write is the last one now");
    let json = serde_json::to_value(&h).unwrap();
    assert_eq!(json["snapshot"]["state"], "closed");
    assert_eq!(json["snapshot"]["failures"], 2);
}

#[tokio::test]
async fn breakers_lists_the_names_with_state() {
    let redis = private_redis().await;
    let client = client(&redis, Duration::ZERO).await;
    for name in ["alpha", "beta[1]", "gamma?"] {
        fail(&client.breaker(name, Config::default()).unwrap()).await.unwrap_err();
    }
    assert_eq!(client.breakers().await.unwrap(), vec!["alpha", "beta[1]", "gamma?"]);
}

#[tokio::test]
async fn the_same_name_gives_the_same_breaker_and_a_bad_name_touches_nothing() {
    let redis = private_redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let a = client.breaker("same", Config::default()).unwrap();
    let b = client.breaker("same", Config::default()).unwrap();
    fail(&a).await.unwrap_err();
    assert_eq!(b.snapshot().failures, 1, "one breaker, one snapshot");
    assert!(client.breaker("same", Config::builder().failure_threshold(1).build().unwrap()).is_err());

    let evalsha = redis.script_calls().await;
    let before = redis.total_calls().await;
    for bad in ["", "has space", "{tag}", "star*", "new\nline", "caf\u{e9}"] {
        let err = client.breaker(bad, Config::default()).unwrap_err();
        assert!(err.to_string().contains("printable ASCII"), "{err}");
    }
    // Only the INFO of total_calls itself (and its connection's handshake) ran since.
    let after = redis.total_calls().await;
    assert!(after - before <= 4, "no breaker command for a bad name ({} commands)", after - before);
    assert_eq!(redis.script_calls().await, evalsha);
}

#[tokio::test]
async fn the_in_memory_client_follows_the_same_semantics_on_a_fake_clock() {
    let clock = redis_breaker::FakeClock::new(1_000_000);
    let client = Client::in_memory_with_clock(clock.clone());
    let config = Config::builder()
        .failure_threshold(2)
        .base_recovery(Duration::from_secs(30))
        .jitter(0.0)
        .success_threshold(1)
        .build()
        .unwrap();
    let b = client.breaker("local", config).unwrap();
    fail(&b).await.unwrap_err();
    fail(&b).await.unwrap_err();
    match succeed(&b).await {
        Err(Error::Rejected(r)) if r.state == State::Open => {
            assert_eq!(r.retry_after(), Some(Duration::from_secs(30)), "the fake clock's time left, as told")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    clock.advance(Duration::from_secs(30));
    succeed(&b).await.unwrap();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.health().await.unwrap().store, StoreStatus::InMemory);
    assert_eq!(client.breakers().await.unwrap(), vec!["local"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_snapshot_is_refreshed_once_while_callers_keep_deciding() {
    let redis = private_redis().await;
    // A snapshot is used stale for at most one more cache_ttl: 2s leaves a slow machine room.
    let client = client_flushing_every(&redis, Duration::from_secs(2), Duration::from_secs(600)).await;
    let b = client.breaker("single-flight", Config::default()).unwrap();
    succeed(&b).await.unwrap();
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = redis.script_calls().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (b, barrier) = (b.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                succeed(&b).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(redis.script_calls().await - before, 1, "100 callers, one refresh");
    assert!(b.snapshot().fresh, "the refresh renewed the snapshot");
}

/// Callers that start together on a snapshot that cannot decide (cold, or marked stale after a
/// Redis restart, or expired open) send one script call for the process, not one each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_or_stale_snapshot_is_refreshed_once_for_all_waiting_callers() {
    let redis = private_redis().await;
    let client = client_flushing_every(&redis, Duration::from_secs(1), Duration::from_secs(600)).await;
    let callers = 500;
    let race = |b: redis_breaker::Breaker| async move {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(callers));
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let (b, barrier) = (b.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    succeed(&b).await.is_ok()
                })
            })
            .collect();
        let mut allowed = 0;
        for t in tasks {
            allowed += usize::from(t.await.unwrap());
        }
        allowed
    };

    // The connection's one-off checks (server version, ACL) are made, and the acquire and
    // record scripts loaded (a NOSCRIPT miss counts as a call on servers without Functions),
    // before counting.
    let warm = client.breaker(&unique("warm-up"), Config::default()).unwrap();
    succeed(&warm).await.unwrap();
    warm.flush().await.unwrap();
    // Cold: the process has never asked Redis about this breaker.
    let cold = client.breaker(&unique("cold"), Config::default()).unwrap();
    let before = redis.script_calls().await;
    assert_eq!(race(cold).await, callers, "every call is allowed");
    let spent = redis.script_calls().await - before;
    assert!(spent <= 2, "{callers} callers on a cold snapshot sent {spent} script calls");

    // Expired open: the deadline passed; one caller takes the probe, the others learn from it.
    let name = unique("reopening");
    let config = Config::builder()
        .failure_threshold(1)
        .success_threshold(1000)
        .base_recovery(Duration::from_millis(100))
        .max_recovery(Duration::from_millis(100))
        .jitter(0.0)
        .build()
        .unwrap();
    let open = client.breaker(&name, config).unwrap();
    fail(&open).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = redis.script_calls().await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(callers));
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (b, barrier) = (open.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                b.acquire().await.ok() // held: a probe stays out while the others decide
            })
        })
        .collect();
    let mut permits = Vec::new();
    for t in tasks {
        permits.extend(t.await.unwrap());
    }
    let spent = redis.script_calls().await - before;
    assert_eq!(permits.len(), 1, "one probe");
    assert!(spent <= 3, "{callers} callers on an expired open snapshot sent {spent} script calls");
}
