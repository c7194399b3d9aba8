//! The recovery scenario of `multi_process.rs` (issue 26): the 8 processes drive a steady load
//! through one breaker against a cold service (`cold_service.rs`) that is down, so the breaker
//! trips; the coordinator recovers the service; the probes succeed and close the breaker; the
//! whole fleet's load then meets a service still cold. Measured: whether the breaker re-opens
//! within `WATCH` of closing, and how the fleet's calls ended meanwhile.
//!
//! The numbers, and why:
//! - load: 8 processes x `RATE` (100) calls/s = 80 calls per 100ms slot, each call its own task;
//! - the service: 16 calls per slot cold (a fifth of the load), full (100, above the load) 2s
//!   after its first call, linearly: it serves the whole load from 1.5s on;
//! - the breaker: the consecutive rule at its default (5 failures), `base_recovery` 300ms (no
//!   jitter: each run the same), one probe at a time, 2 probe successes close it. At the close
//!   the service is at most a few ms into its warm-up: without a ramp, each slot's 64 calls
//!   beyond the first 16 fail in a row, so the fifth of them re-trips the breaker;
//! - the ramp: 3s from 10%: the fleet admits 8 calls per slot at the close (half the cold
//!   capacity) rising by 24 a second while the capacity rises by 42: admitted calls stay below
//!   0.6 of the capacity throughout, so the per-call random draw, whose spread is a few calls a
//!   slot, does not make 5 failures in a row.
//!
//! `RB_RAMP_RUNS=N` runs N rounds per variant (default 1, the CI run).

use super::cold_service::{ColdService, Pool, Warmup};
use super::{Fleet, PROCESSES, ready_then_wait, support};
use redis_breaker::{Client, Config, Error, State};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Calls per second in each process.
const RATE: u64 = 100;
/// How long the scenario watches the breaker after it closed.
const WATCH: Duration = Duration::from_secs(4);
/// How long each process drives its load: the trip, `base_recovery`, the probes and `WATCH`.
const RUN: Duration = Duration::from_millis(5_000);
/// The variants: no ramp, and the ramp (its length; where it starts is `RAMP_START`).
const VARIANTS: [(&str, Duration); 2] = [("no ramp", Duration::ZERO), ("ramp 3s from 10%", Duration::from_secs(3))];
const RAMP_START: f64 = 0.1;
/// Outcome columns of a 100ms bucket.
const OK: usize = 0;
const FAILED: usize = 1;
const REJECTED: usize = 2;
const THROTTLED: usize = 3;

pub const COLD: Warmup =
    Warmup { slot: Duration::from_millis(100), cold: 16, full: 100, warmup: Duration::from_secs(2) };

/// The breaker's config in every process; `ramp` zero: no ramp.
fn config(ramp: Duration) -> Config {
    let builder = Config::builder()
        .failure_threshold(5)
        .success_threshold(2)
        .half_open_max_probes(1)
        .base_recovery(Duration::from_millis(300))
        .max_recovery(Duration::from_secs(2))
        .jitter(0.0)
        .call_timeout(Duration::from_millis(200))
        .probe_lease(Duration::from_millis(250));
    // The ramp: the one line between the two variants.
    let builder = if ramp.is_zero() { builder } else { builder.recovery_ramp(ramp).ramp_start(RAMP_START) };
    builder.build().expect("config")
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A worker's `ramp NAME ADDR RAMP_MS GO`: calls the service at `ADDR` through the breaker,
/// `RATE` calls a second (each its own task) for `RUN`; answers the outcomes per 100ms of the
/// wall clock: `start_ms=<ms of the first bucket> b=ok.failed.rejected.throttled,...`.
pub async fn load(client: &Client, control: &mut redis::aio::MultiplexedConnection, args: [&str; 4]) -> String {
    let [name, addr, ramp_ms, go] = args;
    let b = client.breaker(name, config(Duration::from_millis(ramp_ms.parse().unwrap()))).unwrap();
    // Subscribed to the breaker's events before the load starts, as a process that has been
    // calling for a while is (a permit dropped without an outcome records nothing).
    drop(b.acquire().await);
    while !b.health().await.unwrap().events_subscribed {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let pool = Pool::new(addr);
    ready_then_wait(control, go).await;
    let start_ms = unix_millis() / 100 * 100;
    let buckets = Arc::new(Mutex::new(vec![[0u32; 4]; RUN.as_millis() as usize / 100 + 20]));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE as u32);
    // A process the machine stalled does not make up for the calls it missed in one burst.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let until = Instant::now() + RUN;
    let mut calls = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tick.tick().await;
        let (b, pool, buckets) = (b.clone(), pool.clone(), buckets.clone());
        calls.spawn(async move {
            let at = ((unix_millis() - start_ms) / 100) as usize;
            let column = match b.execute(|| pool.call()).await {
                Ok(()) => OK,
                Err(Error::Inner(_) | Error::Timeout(_)) => FAILED,
                Err(Error::Rejected(r)) if r.state == State::Closed && r.admitted().is_some() => THROTTLED,
                Err(Error::Rejected(_)) => REJECTED,
                Err(other) => panic!("unexpected {other:?}"),
            };
            let mut buckets = buckets.lock().unwrap();
            let last = buckets.len() - 1;
            buckets[at.min(last)][column] += 1;
        });
    }
    while calls.join_next().await.is_some() {}
    client.flush().await.unwrap();
    let buckets = buckets.lock().unwrap();
    let b: Vec<String> = buckets.iter().map(|c| format!("{}.{}.{}.{}", c[0], c[1], c[2], c[3])).collect();
    format!("start_ms={start_ms} b={}", b.join(","))
}

/// One process's answer: its buckets' start and counts.
fn parse(answer: &str) -> (u64, Vec<[u64; 4]>) {
    let start = super::field(answer, "start_ms");
    let b = answer.split_whitespace().find_map(|w| w.strip_prefix("b=")).expect("buckets");
    let buckets = b
        .split(',')
        .map(|c| {
            let n: Vec<u64> = c.split('.').map(|n| n.parse().unwrap()).collect();
            [n[0], n[1], n[2], n[3]]
        })
        .collect();
    (start, buckets)
}

/// What one round measured.
struct Round {
    /// From the trip to the close, ms.
    closed_after: u64,
    /// The opens within `WATCH` of the close: ms after it.
    retrips: Vec<u64>,
    /// The fleet's calls from the 100ms bucket holding the close to 2s after the close (the
    /// bucket's calls before the close included): ok, failed, rejected, throttled.
    after: [u64; 4],
}

fn round(
    rt: &tokio::runtime::Runtime,
    url: &str,
    fleet: &mut Fleet,
    service: &Arc<ColdService>,
    ramp: Duration,
) -> Round {
    let name = support::unique("mp-ramp");
    service.down();
    // When the fleet's failures have opened the breaker, the service recovers: its warm-up
    // starts with the first call it serves, the first probe.
    let watcher = {
        let (service, url, key) = (service.clone(), url.to_string(), format!("breaker:{{{name}}}:state"));
        rt.spawn(async move {
            let mut conn = support::admin_connection(&url).await;
            let start = Instant::now();
            loop {
                let state: Option<String> =
                    redis::cmd("HGET").arg(&key).arg("state").query_async(&mut conn).await.unwrap();
                if state.as_deref() == Some("open") {
                    service.recover();
                    return true;
                }
                if start.elapsed() > RUN {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let ramp_ms = ramp.as_millis();
    let addr = service.addr.clone();
    let answers = rt.block_on(fleet.round(0..PROCESSES, |_, go| format!("ramp {name} {addr} {ramp_ms} {go}")));
    assert!(rt.block_on(watcher).unwrap(), "the down service never opened the breaker");
    let history = rt.block_on(async {
        let client = Client::connect(url).await.unwrap();
        let mut h = client.breaker(&name, config(ramp)).unwrap().history(100).await.unwrap();
        h.reverse(); // oldest first
        h
    });
    let trip = history.iter().find(|e| e.to == "open").expect("a trip").at_ms;
    let close = history
        .iter()
        .find(|e| e.from == "half_open" && e.to == "closed")
        .unwrap_or_else(|| panic!("the probes never closed the breaker: {history:?}"))
        .at_ms;
    let retrips: Vec<u64> = history
        .iter()
        .filter(|e| e.to == "open" && e.at_ms > close && e.at_ms - close <= WATCH.as_millis() as u64)
        .map(|e| e.at_ms - close)
        .collect();
    let mut after = [0u64; 4];
    let mut end = u64::MAX;
    for (start, buckets) in answers.iter().map(|a| parse(a)) {
        end = end.min(start + RUN.as_millis() as u64);
        for (i, counts) in buckets.iter().enumerate() {
            let at = start + 100 * i as u64;
            if at + 100 > close && at < close + 2_000 {
                for c in 0..4 {
                    after[c] += counts[c];
                }
            }
        }
    }
    assert!(
        close + WATCH.as_millis() as u64 <= end + 100,
        "the breaker closed {}ms after the trip: too late to watch it for {WATCH:?}",
        close - trip
    );
    Round { closed_after: close - trip, retrips, after }
}

/// The scenario: each variant `RB_RAMP_RUNS` times (default 1). Without a ramp the fleet
/// re-trips the breaker (every run measured did, within 50ms of the close: the check that the
/// service is cold enough for the scenario to say anything); with the ramp it never does, and
/// holds calls back.
pub fn recovery(rt: &tokio::runtime::Runtime, redis: &support::TestRedis, fleet: &mut Fleet) -> String {
    let runs: usize = std::env::var("RB_RAMP_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let service = Arc::new(ColdService::start(rt, COLD));
    let mut figures = Vec::new();
    for (variant, ramp) in VARIANTS {
        let (mut retripped, mut throttled_runs) = (0, 0);
        for run in 1..=runs {
            let r = round(rt, &redis.url, fleet, &service, ramp);
            retripped += usize::from(!r.retrips.is_empty());
            let [ok, failed, rejected, throttled] = r.after;
            throttled_runs += usize::from(throttled > 0);
            let opens: Vec<String> = r.retrips.iter().map(|ms| format!("+{ms}ms")).collect();
            eprintln!(
                "multi_process: {variant}, run {run}: closed {}ms after the trip; re-tripped: {}; from the close's 100ms bucket to +2s: ok {ok}, failed {failed}, rejected {rejected}, throttled {throttled}",
                r.closed_after,
                if opens.is_empty() { "no".to_string() } else { format!("yes, opened at {}", opens.join(" ")) },
            );
        }
        figures.push(format!("{variant}: re-tripped in {retripped} of {runs} runs"));
        if ramp.is_zero() {
            assert_eq!(
                retripped, runs,
                "the cold service no longer makes the fleet re-trip without a ramp: {figures:?}"
            );
        } else {
            assert_eq!(retripped, 0, "the fleet re-tripped the cold service despite the ramp: {figures:?}");
            assert_eq!(throttled_runs, runs, "the ramp held calls back in every run: {figures:?}");
        }
    }
    format!("[{}]", figures.join("; "))
}
