//! The torture harness: real servers, worker processes, random faults, a recorded history, and a
//! checker of the fleet invariants (the README's "Fleet invariants").
//!
//! ```sh
//! cargo run --release --example torture -- --seconds 90 --seed 7 --topology all
//! ```
//!
//! One run per topology (`single`: one Redis; `sentinel`: a primary, a replica and three
//! sentinels; `cluster`: three masters), each with `--workers` worker processes (this same
//! binary, started with `--worker`) that call four breakers (plain, quorum 2, a failure-rate
//! rule, shadow) a few hundred times a second against a loopback downstream whose health the
//! nemesis sets per worker. The nemesis applies faults drawn from `--seed`; the schedule is
//! printed first and the same seed replays it. Every worker writes each decision to its own
//! file; the checker reads them, the faults and the breakers' history after the run. The last
//! line is `torture: seed=S seconds=T faults=F kinds=K calls=C violations=V`; the exit status
//! is 1 when a violation was found.
//!
//! Everything listens on 127.0.0.1 and everything started is stopped on success, on a
//! violation, on a panic and on Ctrl-C; the temporary directory is removed.

mod check;
mod collect;
mod downstream;
mod faults;
mod history;
mod nemesis;
mod proxy;
mod reshard;
mod run;
mod topology;
mod worker;
mod workers;

use std::time::Duration;

/// The breakers every worker calls, with the settings the checker relies on.
pub(crate) mod setup {
    use redis_breaker::{ClientConfig, Config, Degraded};
    use std::time::Duration;

    pub(crate) const OP_TIMEOUT: Duration = Duration::from_millis(100);
    pub(crate) const CACHE_TTL: Duration = Duration::from_millis(200);
    /// Long enough that trusting a snapshot that should have been short-lived shows.
    pub(crate) const SUBSCRIBED_CACHE_TTL: Duration = Duration::from_secs(5);
    pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
    /// Counts that only feed metrics wait this long: a reply refreshes a snapshot, so a short
    /// one would hide a snapshot trusted longer than it should be.
    pub(crate) const METRICS_INTERVAL: Duration = Duration::from_secs(2);
    pub(crate) const KEEPALIVE: Duration = Duration::from_millis(500);
    pub(crate) const CALL_TIMEOUT: Duration = Duration::from_millis(200);
    pub(crate) const QUORUM: u32 = 2;
    pub(crate) const QUORUM_WINDOW: Duration = Duration::from_secs(4);
    pub(crate) const FAILURE_THRESHOLD: u32 = 3;
    pub(crate) const PREFIX: &str = "torture";

    /// (name, max probes, shadow)
    pub(crate) const BREAKERS: [(&str, u32, bool); 4] =
        [("plain", 1, false), ("quorum", 1, false), ("rate", 2, false), ("shadow", 1, true)];

    pub(crate) fn client_config() -> ClientConfig {
        ClientConfig::builder()
            .prefix(PREFIX)
            .op_timeout(OP_TIMEOUT)
            .cache_ttl(CACHE_TTL)
            .subscribed_cache_ttl(SUBSCRIBED_CACHE_TTL)
            .flush_interval(FLUSH_INTERVAL)
            .metrics_interval(METRICS_INTERVAL)
            .events_keepalive(KEEPALIVE)
            .degraded(Degraded::Local)
            .build()
            .expect("the torture client config is valid")
    }

    pub(crate) fn breaker_config(name: &str) -> Config {
        let common = Config::builder()
            .failure_threshold(FAILURE_THRESHOLD)
            .success_threshold(2)
            .base_recovery(Duration::from_millis(600))
            .max_recovery(Duration::from_secs(3))
            .call_timeout(CALL_TIMEOUT)
            .probe_lease(Duration::from_millis(400));
        let b = match name {
            "quorum" => common.quorum(QUORUM).window(QUORUM_WINDOW),
            "rate" => common
                .failure_threshold(0)
                .failure_rate(0.5)
                .minimum_calls(20)
                .window(Duration::from_secs(2))
                .half_open_max_probes(2),
            "shadow" => common.shadow(true),
            _ => common,
        };
        b.build().expect("the torture breaker configs are valid")
    }
}

pub(crate) struct Args {
    pub(crate) seconds: u64,
    pub(crate) seed: u64,
    pub(crate) topologies: Vec<topology::Kind>,
    pub(crate) workers: usize,
    /// Only these kinds of fault (`--faults kill_restart,pause`), to chase one down.
    pub(crate) only: Option<Vec<String>>,
    /// Where to copy the workers' histories before the run's directory is removed.
    pub(crate) keep: Option<std::path::PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut a =
        Args { seconds: 30, seed: 0, topologies: vec![topology::Kind::Single], workers: 6, only: None, keep: None };
    let mut seed = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--seconds" => a.seconds = value()?.parse().map_err(|_| "--seconds takes a whole number")?,
            "--seed" => seed = Some(value()?.parse().map_err(|_| "--seed takes a whole number")?),
            "--workers" => a.workers = value()?.parse().map_err(|_| "--workers takes a whole number")?,
            "--topology" => {
                a.topologies = match value()?.as_str() {
                    "all" => vec![topology::Kind::Single, topology::Kind::Sentinel, topology::Kind::Cluster],
                    other => vec![topology::Kind::parse(other)?],
                }
            }
            "--keep-history" => a.keep = Some(value()?.into()),
            "--faults" => a.only = Some(value()?.split(',').map(String::from).collect()),
            "-h" | "--help" => {
                return Err("usage: torture [--seconds N] [--seed S] [--topology single|sentinel|cluster|all] \
                            [--workers W] [--faults KIND,...] [--keep-history DIR]"
                    .into());
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    if a.seconds < 8 {
        return Err("--seconds must be at least 8 (the run keeps 2s quiet at each end)".into());
    }
    if !(2..=32).contains(&a.workers) {
        return Err("--workers must be between 2 and 32".into());
    }
    a.seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(1) % 100_000
    });
    Ok(a)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--worker") {
        std::process::exit(worker::main(&args[1..]));
    }
    let args = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("torture: {e}");
            std::process::exit(2);
        }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    let code = runtime.block_on(run(args));
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

/// Ctrl-C or SIGTERM: the run's future is dropped, and with it every server, proxy and worker.
async fn interrupted() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
        _ = term.recv() => "terminated (SIGTERM)",
    }
}

async fn run(args: Args) -> i32 {
    let mut total = check::Summary::default();
    for (i, kind) in args.topologies.iter().enumerate() {
        // Each topology gets its own schedule, drawn from the seed and the topology.
        let seed = args.seed.wrapping_add(i as u64 * 1_000_003);
        let outcome = tokio::select! {
            r = run::run_one(*kind, seed, &args) => r,
            why = interrupted() => Err(format!("{why}: everything started was stopped")),
        };
        match outcome {
            Ok(summary) => total.add(&summary),
            Err(e) => {
                // The run could not be made (a server that would not start, a missing binary):
                // not a violation, but no verdict either.
                eprintln!("torture: {}: {e}", kind.as_str());
                last_line(&args, &total);
                return 2;
            }
        }
    }
    last_line(&args, &total);
    i32::from(total.violations > 0)
}

/// The line every run ends with.
fn last_line(args: &Args, total: &check::Summary) {
    println!(
        "torture: seed={} seconds={} faults={} kinds={} calls={} violations={}",
        args.seed,
        args.seconds,
        total.faults,
        total.kinds.len(),
        total.calls,
        total.violations
    );
}
