//! The executor harness every contender runs in, and the ratio table.

use std::future::Future;
use std::time::{Duration, Instant};

pub fn runtime(threads: usize) -> tokio::runtime::Runtime {
    if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("runtime")
    }
}

/// Runs `iters` calls of `call` on each of `threads` tasks at once; returns the time per call
/// as one thread sees it (wall time / calls per task).
pub fn concurrent<F, Fut>(rt: &tokio::runtime::Runtime, threads: usize, iters: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future + Send,
{
    rt.block_on(async {
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(threads));
        let tasks: Vec<_> = (0..threads)
            .map(|_| {
                let (call, barrier) = (call.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::hint::black_box(call().await);
                    }
                    start.elapsed()
                })
            })
            .collect();
        let mut longest = Duration::ZERO;
        for t in tasks {
            longest = longest.max(t.await.expect("bench task"));
        }
        longest
    })
}

/// Median time per call over `rounds` batches of `iters` calls on `threads` tasks.
pub fn median_per_call<F, Fut>(rt: &tokio::runtime::Runtime, threads: usize, iters: u64, call: F) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future + Send,
{
    let mut samples: Vec<f64> =
        (0..11).map(|_| concurrent(rt, threads, iters, call.clone()).as_nanos() as f64 / iters as f64).collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Benches `call` under criterion in `group`, then returns its median time per call for the
/// ratio table.
pub fn case<F, Fut>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &tokio::runtime::Runtime,
    threads: usize,
    iters: u64,
    name: &str,
    call: F,
) -> f64
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future + Send,
{
    group.bench_function(name, |b| b.iter_custom(|n| concurrent(rt, threads, n, call.clone())));
    median_per_call(rt, threads, iters, call)
}

#[derive(Default)]
pub struct Ratios {
    rows: Vec<(String, String, f64, f64)>,
}

impl Ratios {
    /// Records `case` against `baseline`, both in ns per call, measured back to back.
    pub fn add(&mut self, case: &str, baseline: &str, case_ns: f64, baseline_ns: f64) {
        self.rows.push((case.to_string(), baseline.to_string(), case_ns, baseline_ns));
    }

    pub fn print(&self) {
        println!("\nratios (median of 11 batches each, measured in this run):");
        println!("{:<52} {:>11} {:<38} {:>11} {:>7}", "case", "ns/call", "baseline", "ns/call", "ratio");
        for (case, baseline, c, b) in &self.rows {
            println!("{case:<52} {c:>11.1} {baseline:<38} {b:>11.1} {:>7.2}", c / b);
        }
    }
}
