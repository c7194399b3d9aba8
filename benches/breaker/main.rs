//! Criterion benches of the call paths, each beside a baseline measured in the same run, and a
//! closing table of ratios.
//!
//! `cargo bench --bench breaker` (uses `$REDIS_URL`, else starts a throwaway redis-server).
//! Scenarios: `hot_path` (a closed breaker with a fresh snapshot, against a bare async call and
//! the in-process breakers failsafe and recloser, on one thread and on two), `rejection` (an
//! open breaker), `redis` (the miss path and a recorded failure, against a PING round trip).
//!
//! The ratio table is measured apart from criterion (medians of 11 batches, whatever criterion
//! is told), so a short run gives the same table: CI runs
//! `cargo bench --bench breaker -- --warm-up-time 0.1 --measurement-time 0.3 'hot path, one|rejection'`
//! (criterion measures the matching groups briefly; the table has every row) and prints the
//! table without judging its times, but fails when a row it looks for is gone: keep the row
//! names "execute overhead, one thread" and "rejection" with their recloser and failsafe
//! baselines.

use redis_breaker_test_support::example as common;
mod harness;
mod hot_path;
mod redis_paths;
mod rejection;

use criterion::Criterion;

fn main() {
    let redis = common::redis().expect("a Redis for the benches");
    let mut c = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args();
    let mut ratios = harness::Ratios::default();
    hot_path::bench(&mut c, &redis.url, &mut ratios);
    rejection::bench(&mut c, &redis.url, &mut ratios);
    redis_paths::bench(&mut c, &redis.url, &mut ratios);
    c.final_summary();
    ratios.print();
}
