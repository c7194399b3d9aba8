//! A failure that only counts: where the scripts run as a library, it goes alone as the library's
//! `count` function (two keys, five arguments), counts exactly what a record counts, and leaves
//! to the record anything else; with EVALSHA it goes as a record.

use crate::support::*;
use redis_breaker::{Breaker, Client, ClientConfig, Config, State};
use std::time::Duration;

/// A client whose snapshot stays fresh (so a failure sends its record alone), with the library
/// or without.
async fn fresh_client(redis: &TestRedis, functions: bool) -> Client {
    let config = ClientConfig::builder()
        .cache_ttl(Duration::from_secs(60))
        .subscribed_cache_ttl(Duration::from_secs(60))
        .flush_interval(Duration::from_secs(60))
        .functions(functions)
        .build()
        .expect("client config");
    Client::connect_with(&redis.url, config).await.expect("client")
}

/// The script calls the server ran while `f` ran, as each one's command, function (or script
/// sha) and key count, from the slow log (every command logged).
async fn script_calls_during(redis: &TestRedis, f: impl AsyncFnOnce()) -> Vec<(String, String, String)> {
    let mut conn = redis.conn().await;
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("slowlog-log-slower-than").arg(0).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("slowlog-max-len").arg(1000).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut conn).await.unwrap();
    f().await;
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG").arg("GET").arg(1000).query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(10_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    let mut calls: Vec<(String, String, String)> = log
        .iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => match fields.get(3) {
                Some(redis::Value::Array(args)) => {
                    let args: Vec<String> = args.iter().take(3).map(text).collect();
                    Some((args.first()?.to_ascii_lowercase(), args.get(1)?.clone(), args.get(2)?.clone()))
                }
                _ => None,
            },
            _ => None,
        })
        .filter(|(cmd, _, _)| cmd == "fcall" || cmd == "evalsha")
        .collect();
    calls.reverse();
    calls
}

/// The library function (`count`, `record`, ...) an FCALL called.
fn function(call: &(String, String, String)) -> &str {
    call.1.rsplit('_').next().unwrap_or("")
}

/// What the state and metrics hashes say of a breaker's failures.
async fn counted(redis: &TestRedis, name: &str) -> (String, u64, u64, u64, u64) {
    let state = state_hash(redis, name).await;
    let metrics = metrics_hash(redis, name).await;
    let field = |f: &str| state.get(f).and_then(|v| v.parse().ok()).unwrap_or(0);
    (state["state"].clone(), field("failures"), field("fseq"), metrics["calls"], metrics["failures"])
}

async fn fail_times(b: &Breaker, n: usize) {
    for _ in 0..n {
        fail(b).await.unwrap_err();
    }
}

/// With the library, each failure a fresh snapshot says trips nothing is one FCALL of `count`
/// with the state and metrics keys; the failure that trips goes as a record at once. Both leave
/// what the same failures leave through EVALSHA (record.lua alone).
#[tokio::test]
async fn a_failure_that_only_counts_is_one_small_call_and_counts_as_a_record() {
    let redis = private_redis().await;
    let has_functions = redis.version().await >= (7, 0);
    let config = Config::builder().failure_threshold(5).build().unwrap();
    let library = fresh_client(&redis, true).await;
    let evalsha = fresh_client(&redis, false).await;
    let (a, b) = (unique("count-fcall"), unique("count-evalsha"));
    let (fa, fb) = (library.breaker(&a, config.clone()).unwrap(), evalsha.breaker(&b, config).unwrap());
    // The first failure makes the snapshot and the metrics lane: a record.
    fail_times(&fa, 1).await;
    fail_times(&fb, 1).await;

    let calls = script_calls_during(&redis, async || fail_times(&fa, 3).await).await;
    if has_functions {
        assert_eq!(calls.len(), 3, "one script call per failure: {calls:?}");
        for call in &calls {
            assert_eq!((call.0.as_str(), function(call), call.2.as_str()), ("fcall", "count", "2"), "{calls:?}");
        }
    } else {
        assert!(calls.iter().all(|c| c.0 == "evalsha") && calls.len() == 3, "{calls:?}");
    }
    fail_times(&fb, 3).await;
    assert_eq!(counted(&redis, &a).await, ("closed".to_string(), 4, 4, 4, 4));
    assert_eq!(counted(&redis, &a).await, counted(&redis, &b).await, "count.lua counts as record.lua does");

    let calls = script_calls_during(&redis, async || fail_times(&fa, 1).await).await;
    if has_functions {
        let called: Vec<&str> = calls.iter().map(function).collect();
        assert_eq!(called, ["record"], "the failure that trips goes as a record at once: {calls:?}");
    }
    fail_times(&fb, 1).await;
    assert_eq!(fa.state(), State::Open);
    assert_eq!(counted(&redis, &a).await.0, "open");
    let (ma, mb) = (metrics_hash(&redis, &a).await, metrics_hash(&redis, &b).await);
    assert_eq!((ma["failures"], ma["calls"]), (5, 5));
    assert_eq!((ma["failures"], ma["calls"]), (mb["failures"], mb["calls"]));
}

/// A process's snapshot may be behind the fleet: a failure it takes to count only may be the one
/// that trips. `count` then writes nothing and answers so; the same failure goes as a record,
/// which trips the breaker, and it counts once.
#[tokio::test]
async fn a_count_that_would_trip_goes_as_a_record_and_counts_once() {
    let redis = private_redis().await;
    let config = Config::builder().failure_threshold(3).build().unwrap();
    let name = unique("count-behind");
    let (one, other) = (fresh_client(&redis, true).await, fresh_client(&redis, true).await);
    let (b1, b2) = (one.breaker(&name, config.clone()).unwrap(), other.breaker(&name, config).unwrap());
    fail_times(&b1, 1).await;
    fail_times(&b2, 1).await;
    // b1 saw one failure: by its snapshot a second one only counts; the fleet has two.
    let calls = script_calls_during(&redis, async || fail_times(&b1, 1).await).await;
    if redis.version().await >= (7, 0) {
        let called: Vec<&str> = calls.iter().map(function).collect();
        assert_eq!(called, ["count", "record"], "{calls:?}");
    }
    assert_eq!(b1.state(), State::Open, "the third failure in the fleet trips it");
    let (state, _, fseq, calls, failures) = counted(&redis, &name).await;
    assert_eq!((state.as_str(), fseq, calls, failures), ("open", 3, 3, 3), "counted once");
}
