//! A closed breaker whose snapshot is fresh: no Redis command, against a bare call and the
//! in-process breakers failsafe and recloser, in the same executor harness; the same breaker
//! under a quorum (this process's own breaker hears every call), against no quorum; and one
//! whose recovery ramp runs (an hour long, admitting half the calls: one draw per call, half of
//! them held back), against the closed path.

use crate::harness::{Ratios, case, runtime};
use criterion::Criterion;
use failsafe::futures::CircuitBreaker as _;
use redis_breaker::{Client, ClientConfig, Config};
use std::hint::black_box;

async fn downstream() -> Result<u64, ()> {
    Ok(black_box(1))
}

pub fn bench(c: &mut Criterion, url: &str, ratios: &mut Ratios) {
    for threads in [1usize, 2] {
        let rt = runtime(threads);
        let client = rt.block_on(async {
            let config = ClientConfig::builder().cache_ttl(ClientConfig::MAX_CACHE_TTL).build().expect("config");
            Client::connect_with(url, config).await.expect("client")
        });
        let ours = client.breaker(&format!("bench-hot-{threads}"), Config::default()).expect("breaker");
        rt.block_on(async { ours.execute(downstream).await.expect("warm the snapshot") });
        let quorum = Config::builder().quorum(3).build().expect("config");
        let with_quorum = client.breaker(&format!("bench-hot-quorum-{threads}"), quorum).expect("breaker");
        rt.block_on(async { with_quorum.execute(downstream).await.expect("warm the snapshot") });
        let ramped =
            client.breaker(&format!("bench-hot-ramp-{threads}-{}", std::process::id()), ramping()).expect("breaker");
        rt.block_on(recover(&ramped));
        let failsafe = failsafe::Config::new().build();
        let recloser = recloser::AsyncRecloser::from(recloser::Recloser::default());

        let label = if threads == 1 { "one thread" } else { "two threads" };
        let mut g = c.benchmark_group(format!("hot path, {label}"));
        let iters = 10_000;
        let bare = case(&mut g, &rt, threads, iters, "baseline: bare async call", || async { downstream().await });
        let ours_ns = case(&mut g, &rt, threads, iters, "redis-breaker execute", {
            let b: &'static _ = Box::leak(Box::new(ours.clone()));
            move || async move { b.execute(downstream).await.is_ok() }
        });
        let quorum_ns = case(&mut g, &rt, threads, iters, "redis-breaker execute, quorum 3", {
            let b: &'static _ = Box::leak(Box::new(with_quorum.clone()));
            move || async move { b.execute(downstream).await.is_ok() }
        });
        let ramp_ns = case(&mut g, &rt, threads, iters, "redis-breaker execute, ramping", {
            let b: &'static _ = Box::leak(Box::new(ramped.clone()));
            move || async move { b.execute(downstream).await.is_ok() }
        });
        assert!(ramped.snapshot().ramp.is_some(), "the ramp ran through the measurement");
        let failsafe_ns = case(&mut g, &rt, threads, iters, "failsafe call", {
            let f: &'static _ = Box::leak(Box::new(failsafe.clone()));
            move || async move { f.call(downstream()).await.is_ok() }
        });
        let recloser_ns = case(&mut g, &rt, threads, iters, "recloser call", {
            let r: &'static _ = Box::leak(Box::new(recloser.clone()));
            move || async move { r.call(downstream()).await.is_ok() }
        });
        g.finish();
        let over = |ns: f64| (ns - bare).max(0.1);
        ratios.add(&format!("execute overhead, {label}"), "failsafe overhead", over(ours_ns), over(failsafe_ns));
        ratios.add(&format!("execute overhead, {label}"), "recloser overhead", over(ours_ns), over(recloser_ns));
        ratios.add(&format!("execute, {label}"), "bare async call", ours_ns, bare);
        ratios.add(&format!("execute under quorum 3, {label}"), "execute, no quorum", quorum_ns, ours_ns);
        ratios.add(&format!("execute while ramping, {label}"), "execute, closed", ramp_ns, ours_ns);
    }
}

/// A breaker that closes on one probe into an hour-long recovery ramp starting at half.
fn ramping() -> Config {
    Config::builder()
        .failure_threshold(1)
        .success_threshold(1)
        .base_recovery(std::time::Duration::from_millis(1))
        .max_recovery(std::time::Duration::from_millis(1))
        .recovery_ramp(std::time::Duration::from_secs(3600))
        .ramp_start(0.5)
        .build()
        .expect("config")
}

/// Trips `b`, and closes it with one probe: its ramp then runs.
async fn recover(b: &redis_breaker::Breaker) {
    let _ = b.execute(|| async { Err::<(), ()>(()) }).await;
    // Past the open time on the coarse clock too, which decides and may lag by milliseconds.
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    b.execute(downstream).await.expect("the probe");
    assert!(b.snapshot().ramp.is_some(), "the breaker ramps");
}
