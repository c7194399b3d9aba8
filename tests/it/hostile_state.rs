//! State corrupted by hand and arguments a script must refuse: never a panic, never a wedged
//! breaker.

use crate::support::*;
use redis_breaker::{Config, State};
use std::time::Duration;

/// Trips one failure, corrupts the keys by hand, then makes a success and a failure through it.
async fn corrupted_then_called(setup: &[&[&str]]) -> (TestRedis, String, std::collections::HashMap<String, String>) {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("corrupt");
    let b = client.breaker(&name, Config::builder().failure_threshold(3).build().unwrap()).unwrap();
    fail(&b).await.unwrap_err();
    let mut conn = redis.conn().await;
    for args in setup {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(a.replace("NAME", &name));
        }
        let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
    }
    succeed(&b).await.expect("the call goes through a corrupt state");
    assert_eq!(b.state(), State::Closed);
    fail(&b).await.unwrap_err();
    let hash = state_hash(&redis, &name).await;
    (redis, name, hash)
}

#[tokio::test]
async fn an_unknown_state_resets_to_closed_and_says_why() {
    let (_, _, h) = corrupted_then_called(&[&["HSET", "breaker:{NAME}:state", "state", "banana"]]).await;
    assert_eq!(h["state"], "closed");
    assert_eq!(h["reason"], "corrupt state reset to closed: field state was 'banana'");
    assert_eq!(h["failures"], "1", "the breaker works on from the reset");
}

#[tokio::test]
async fn a_non_numeric_counter_resets_to_closed() {
    let (_, _, h) = corrupted_then_called(&[&["HSET", "breaker:{NAME}:state", "failures", "abc"]]).await;
    assert_eq!(h["reason"], "corrupt state reset to closed: field failures was 'abc'");
}

#[tokio::test]
async fn a_negative_open_until_resets_to_closed() {
    let (_, _, h) =
        corrupted_then_called(&[&["HSET", "breaker:{NAME}:state", "state", "open", "open_until", "-5"]]).await;
    assert_eq!(h["reason"], "corrupt state reset to closed: field open_until was '-5'");
}

#[tokio::test]
async fn a_huge_open_until_resets_or_is_capped_at_max_recovery() {
    let (_, _, h) = corrupted_then_called(&[&[
        "HSET",
        "breaker:{NAME}:state",
        "state",
        "open",
        "open_until",
        "99999999999999999999999",
    ]])
    .await;
    assert!(h["reason"].starts_with("corrupt state reset to closed: field open_until"), "{}", h["reason"]);

    // A valid integer but centuries away (beyond any duration the crate writes) is corrupt.
    let (_, _, h) = corrupted_then_called(&[&[
        "HSET",
        "breaker:{NAME}:state",
        "state",
        "open",
        "incarnation",
        "7",
        "epoch",
        "3",
        "open_until",
        "8000000000000000",
    ]])
    .await;
    assert!(h["reason"].starts_with("corrupt state reset to closed: deadline open_until"), "{}", h["reason"]);

    // A deadline a day away, longer than this caller's max_recovery, is brought back to it.
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("far-open");
    let config = Config::builder().max_recovery(Duration::from_secs(60)).build().unwrap();
    let b = client.breaker(&name, config).unwrap();
    let mut conn = redis.conn().await;
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let day_away = (now_ms + 86_400_000).to_string();
    let _: () = redis::cmd("HSET")
        .arg(key(&name, "state"))
        .arg(&["state", "open", "incarnation", "7", "epoch", "3", "open_until", day_away.as_str()])
        .query_async(&mut conn)
        .await
        .unwrap();
    let rejected = b.acquire().await.expect_err("still open");
    assert!(rejected.retry_after().unwrap() <= Duration::from_secs(60), "{rejected:?}");
}

#[tokio::test]
async fn a_state_key_of_the_wrong_type_is_replaced() {
    let (_, _, h) =
        corrupted_then_called(&[&["DEL", "breaker:{NAME}:state"], &["SET", "breaker:{NAME}:state", "x"]]).await;
    assert_eq!(h["state"], "closed");
    assert_eq!(h["failures"], "1");
}

#[tokio::test]
async fn probes_window_and_metrics_keys_of_the_wrong_type_are_replaced() {
    let (redis, name, h) = corrupted_then_called(&[
        &["RPUSH", "breaker:{NAME}:probes", "x"],
        &["SET", "breaker:{NAME}:window", "x"],
        &["DEL", "breaker:{NAME}:metrics"],
        &["LPUSH", "breaker:{NAME}:metrics", "x"],
    ])
    .await;
    assert_eq!(h["failures"], "1", "the state itself was sound and kept working");
    assert!(!h["reason"].starts_with("corrupt"), "{}", h["reason"]);
    let mut conn = redis.conn().await;
    let t: String = redis::cmd("TYPE").arg(key(&name, "metrics")).query_async(&mut conn).await.unwrap();
    assert_eq!(t, "hash", "the metrics key was replaced");
}

#[tokio::test]
async fn a_probes_key_of_the_wrong_type_does_not_block_recovery() {
    let redis = redis().await;
    let client = client(&redis, Duration::ZERO).await;
    let name = unique("bad-probes");
    let config = Config::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .base_recovery(Duration::from_millis(30))
        .max_recovery(Duration::from_millis(30))
        .build()
        .unwrap();
    let b = client.breaker(&name, config).unwrap();
    fail(&b).await.unwrap_err();
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("RPUSH").arg(key(&name, "probes")).arg("x").query_async(&mut conn).await.unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    let probe = b.acquire().await.expect("the probe is granted");
    assert!(probe.is_probe());
    let t: String = redis::cmd("TYPE").arg(key(&name, "probes")).query_async(&mut conn).await.unwrap();
    assert_eq!(t, "zset", "the list was replaced by the lease");
    probe.success().await;
    assert_eq!(b.state(), State::Closed);
}

/// Both ways a script reaches Redis refuse a bad argument by name and write nothing: the
/// EVALSHA script (the header and prelude exactly as src/store/scripts.rs joins them) and, where the
/// server has Functions, the library's function (whose validation of a config is kept between
/// calls: a bad value right after a good config is still refused).
#[tokio::test]
async fn scripts_refuse_bad_arguments_with_a_named_error() {
    let redis = redis().await;
    let source = include_str!("../../src/store/scripts.rs");
    let header = source
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"local KEYS, ARGV = KEYS, ARGV")?.strip_suffix("\","))
        .map(|rest| format!("local KEYS, ARGV = KEYS, ARGV{rest}").replace("\\n", "\n"))
        .expect("the EVALSHA header in src/store/scripts.rs");
    let lib: String = source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("include_str!(\"")?.split_once("lua/lib/")?.1.split('"').next())
        .map(|file| {
            std::fs::read_to_string(format!("{}/lua/lib/{file}", env!("CARGO_MANIFEST_DIR"))).expect("lua/lib file")
        })
        .collect();
    assert!(lib.contains("local function parse_config"), "the prelude was found in src/store/scripts.rs");
    let script = header + &lib + include_str!("../../lua/acquire.lua");
    let name = unique("bad-args");
    let keys = ["state", "probes", "window", "metrics", "history", "reporters", "processes"].map(|s| key(&name, s));
    // Where each argument goes, by its name in the tables of the generated lua/lib/protocol.lua
    // (ARG: every script's; ACQUIRE: acquire.lua's own; BATCH: offsets within a batch; CONFIG:
    // offsets within the rest of the config, sent whole here, from ACQUIRE.config on).
    let protocol = include_str!("../../lua/lib/protocol.lua");
    let number = |table: &str, name: &str| -> usize {
        let rows = protocol.split(&format!("local {table} = {{\n")).nth(1).expect("the table");
        let rows = rows.split("\n}").next().expect("its end");
        rows.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name} = "))?.strip_suffix(',')?.parse().ok())
            .unwrap_or_else(|| panic!("{table}.{name} in lua/lib/protocol.lua"))
    };
    // ARGV counts from 1, the list of arguments from 0.
    let at = |table: &str, name: &str| number(table, name) - 1;
    let batch = |field: &str| at("ACQUIRE", "batch") + number("BATCH", field);
    let config = |field: &str| at("ACQUIRE", "config") + number("CONFIG", field);
    let common = ["now", "rand", "channel", "name", "origin", "shard_channel", "fingerprint", "config_id"];
    let place = |field: &str| if common.contains(&field) { at("ARG", field) } else { config(field) };
    // Every argument "0" (the batch's counts among them) but these; the batch's id is none.
    let mut good = vec!["0".to_string(); config("ramp_permille") + 1];
    for (name, value) in [
        ("now", ""),
        ("rand", "0.5"),
        ("channel", ""),
        ("name", "n"),
        ("origin", "client-a"),
        ("shard_channel", ""),
        ("fingerprint", "fp"),
        ("config_id", "an-id-the-library-does-not-keep"),
        ("failure_threshold", "5"),
        ("success_threshold", "2"),
        ("max_probes", "1"),
        ("base", "30000"),
        ("max", "300000"),
        ("multiplier", "2"),
        ("jitter", "0.1"),
        ("lease", "30000"),
        ("state_ttl", "3600000"),
        ("metrics_ttl", "86400000"),
        ("minimum_calls", "20"),
        ("window", "60000"),
        ("failure_expiry", "60000"),
        ("quorum", "1"),
        ("ramp_permille", "100"),
    ] {
        good[place(name)] = value.to_string();
    }
    good[at("ACQUIRE", "permit")] = "p1".to_string();
    good[at("ACQUIRE", "batch_id")] = String::new();
    let mut conn = redis.conn().await;
    // The library is on the server once a client has made a call (servers with Functions).
    let client = client(&redis, std::time::Duration::ZERO).await;
    succeed(&client.breaker(&unique("bad-args-loader"), Config::default()).unwrap()).await.unwrap();
    let mut ways = vec![redis::cmd("EVAL").arg(&script).clone()];
    if redis.version().await >= (7, 0) {
        let libraries: redis::Value = redis::cmd("FUNCTION")
            .arg("LIST")
            .arg("LIBRARYNAME")
            .arg("redis_breaker_*")
            .query_async(&mut conn)
            .await
            .unwrap();
        fn strings(v: &redis::Value, out: &mut Vec<String>) {
            match v {
                redis::Value::BulkString(b) => out.push(String::from_utf8_lossy(b).into_owned()),
                redis::Value::Array(items) | redis::Value::Set(items) => items.iter().for_each(|i| strings(i, out)),
                redis::Value::Map(pairs) => pairs.iter().for_each(|(k, v)| (strings(k, out), strings(v, out)).1),
                _ => {}
            }
        }
        let mut found = Vec::new();
        strings(&libraries, &mut found);
        let function = found.iter().find(|s| s.starts_with("rb_") && s.ends_with("_acquire"));
        let hash = function.and_then(|f| f.split('_').nth(1)).expect("the library's functions");
        ways.push(redis::cmd("FCALL").arg(format!("rb_{hash}_acquire")).clone());
    }
    for way in &ways {
        let run = |args: Vec<String>| {
            let mut cmd = way.clone();
            cmd.arg(7).arg(&keys).arg(args);
            cmd
        };
        for (i, bad, field) in [
            (at("ARG", "rand"), "x", "rand"),
            (config("failure_threshold"), "-1", "failure_threshold"),
            (config("success_threshold"), "0", "success_threshold"),
            (config("base"), "1.5", "base_recovery"),
            (config("max"), "10", "max_recovery"),
            (config("jitter"), "nan", "jitter"),
            (config("failure_rate"), "2", "failure_rate"),
            (config("window"), "5", "window"),
            (config("failure_expiry"), "0", "failure_expiry"),
            (at("ARG", "shard_channel"), &"x".repeat(513), "shard channel"),
            (config("quorum"), "0", "quorum"),
            (config("quorum"), "10001", "quorum"),
            (config("fraction"), "1.5", "quorum_fraction"),
            (config("ramp"), "3600001", "recovery_ramp"),
            (config("ramp_permille"), "0", "ramp_start"),
            (config("ramp_permille"), "1001", "ramp_start"),
            (batch("throttled"), "-1", "batch throttled"),
            (at("ACQUIRE", "permit"), "", "permit id"),
            (batch("fseq"), "1.5", "batch fseq"),
            (batch("slow"), "3", "batch slow"),
        ] {
            let ok: Vec<String> = run(good.clone()).query_async(&mut conn).await.unwrap();
            assert_eq!(ok[0], "allowed");
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
            let mut args = good.clone();
            args[i] = (*bad).to_string();
            let err = run(args).query_async::<Vec<String>>(&mut conn).await.unwrap_err();
            let text = err.to_string();
            assert!(text.contains(&format!("redis-breaker: bad argument {field}")), "{field}: {text}");
            let exists: i64 = redis::cmd("EXISTS").arg(&keys).query_async(&mut conn).await.unwrap();
            assert_eq!(exists, 0, "a refused call wrote nothing ({field})");
        }
    }
}

/// Issue 22, item 11 (the staleness table): a closed snapshot that expired keeps deciding while
/// one task refreshes it. With Redis slow to answer that refresh (here writes paused), a state
/// edited by hand (no event) is missed past the snapshot's lifetime: by at most `cache_ttl`
/// (the grace of a stale closed snapshot), after which callers wait for the refresh's answer.
#[tokio::test]
async fn an_expired_closed_snapshot_decides_while_its_refresh_is_in_flight_for_at_most_cache_ttl() {
    let redis = private_redis().await;
    let ttl = Duration::from_millis(200);
    let client = client(&redis, ttl).await;
    let name = unique("stale-while-refreshing");
    let b = client.breaker(&name, Config::default()).unwrap();
    let mut conn = redis.conn().await;
    succeed(&b).await.unwrap();
    let confirmed = std::time::Instant::now();
    // Forced open by hand: no event, no script.
    let _: () = redis::cmd("HSET")
        .arg(format!("breaker:{{{name}}}:state"))
        .arg(&["state", "forced_open", "open_until", "0", "epoch", "9"])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Redis takes no script for 700ms (CLIENT PAUSE WRITE): the refresh hangs in flight.
    let _: () = redis::cmd("CLIENT").arg(&["PAUSE", "700", "WRITE"]).query_async(&mut conn).await.unwrap();
    let mut last_admitted = Duration::ZERO;
    let mut admitted_after_expiry = 0;
    let rejected_at = loop {
        let at = confirmed.elapsed();
        match succeed(&b).await {
            Ok(()) => {
                last_admitted = at;
                if at > ttl {
                    admitted_after_expiry += 1;
                }
            }
            Err(e) => {
                assert!(e.is_rejected(), "{e}");
                break confirmed.elapsed();
            }
        }
        assert!(confirmed.elapsed() < Duration::from_secs(3), "never rejected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    eprintln!(
        "snapshot lifetime {ttl:?}: last call admitted at {last_admitted:?} ({admitted_after_expiry} after expiry), first rejection at {rejected_at:?}"
    );
    assert!(admitted_after_expiry > 0, "the stale closed snapshot decided while its refresh was in flight");
    assert!(last_admitted < ttl * 2 + Duration::from_millis(50), "at most cache_ttl past expiry: {last_admitted:?}");
}
