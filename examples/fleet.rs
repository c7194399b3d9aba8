//! The main demo: a fleet of stateless instances, each with its own `Client` (its own
//! connection and snapshot cache), shares one breaker in front of a downstream that fails for
//! a while and then recovers.
//!
//! `cargo run --example fleet` — uses `$REDIS_URL`, else starts a throwaway redis-server.
//! Options: `--instances N` (default 6), `--rate CALLS_PER_SECOND_PER_INSTANCE` (default 50),
//! `--keep` (leave the redis-server it started running, and print how to look at the demo's
//! breaker with redis-cli and in the console).
//!
//! Each second it prints what the downstream did, the breaker's state as Redis holds it, the
//! calls the fleet made, let through, saw fail and had rejected, and the Redis commands the
//! fleet sent (script calls, FCALL or EVALSHA, from an `INFO commandstats` delta).

use redis_breaker_test_support::example as common;

use redis_breaker::{Client, Config, Error};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const OUTAGE: std::ops::Range<u64> = 2..9;
const RUN_FOR: u64 = 16;

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    allowed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (instances, rate, keep) = options()?;
    let redis = common::redis()?;
    let mut admin = redis::Client::open(redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let config = Config::builder()
        .failure_threshold(5)
        .success_threshold(2)
        .half_open_max_probes(1)
        .base_recovery(Duration::from_secs(1))
        // A probe that fails just before the downstream recovers reopens for at most 4s, so the
        // demo always shows the recovery.
        .max_recovery(Duration::from_secs(4))
        .multiplier(2.0)
        .jitter(0.1)
        .call_timeout(Duration::from_secs(1))
        .probe_lease(Duration::from_secs(2))
        .build()?;
    let name = format!("fleet-demo-{}", std::process::id());
    let counts = Arc::new(Counts::default());
    let down = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));

    println!(
        "{instances} instances x {rate} calls/s share the breaker {name:?}; the downstream fails from {}s to {}s.\n",
        OUTAGE.start, OUTAGE.end
    );
    let mut tasks = Vec::new();
    for _ in 0..instances {
        let client = Client::connect(&redis.url).await?;
        let breaker = client.breaker(&name, config.clone())?;
        let (counts, down, stop) = (counts.clone(), down.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                counts.calls.fetch_add(1, Ordering::Relaxed);
                let down = down.load(Ordering::Relaxed);
                match breaker.execute(|| downstream(down)).await {
                    Ok(()) => {
                        counts.allowed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Rejected(_)) => {
                        counts.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        counts.allowed.fetch_add(1, Ordering::Relaxed);
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            client.shutdown().await
        }));
    }

    println!(
        "{:>4}  {:<10} {:<10} {:>6} {:>8} {:>7} {:>9} {:>11}",
        "t", "downstream", "state", "calls", "allowed", "failed", "rejected", "redis cmds"
    );
    let start = Instant::now();
    let mut last = script_calls(&mut admin).await?;
    let (mut total_calls, mut total_cmds) = (0, 0);
    for second in 0..RUN_FOR {
        down.store(OUTAGE.contains(&second), Ordering::Relaxed);
        tokio::time::sleep_until((start + Duration::from_secs(second + 1)).into()).await;
        let cmds = script_calls(&mut admin).await?;
        let state: Option<String> =
            redis::cmd("HGET").arg(format!("breaker:{{{name}}}:state")).arg("state").query_async(&mut admin).await?;
        let calls = counts.calls.swap(0, Ordering::Relaxed);
        println!(
            "{:>3}s  {:<10} {:<10} {:>6} {:>8} {:>7} {:>9} {:>11}",
            second + 1,
            if OUTAGE.contains(&second) { "failing" } else { "healthy" },
            state.unwrap_or_else(|| "closed".into()),
            calls,
            counts.allowed.swap(0, Ordering::Relaxed),
            counts.failed.swap(0, Ordering::Relaxed),
            counts.rejected.swap(0, Ordering::Relaxed),
            cmds - last,
        );
        total_calls += calls;
        total_cmds += cmds - last;
        last = cmds;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let reason: Option<String> =
        redis::cmd("HGET").arg(format!("breaker:{{{name}}}:state")).arg("reason").query_async(&mut admin).await?;
    println!(
        "\n{total_calls} calls, {total_cmds} Redis commands: {:.4} per call. Last transition: {}.",
        total_cmds as f64 / total_calls.max(1) as f64,
        reason.unwrap_or_default()
    );
    let url = redis.url.clone();
    if !redis.started() {
        println!("Inspect it: redis-cli -u {url} HGETALL 'breaker:{{{name}}}:state' (and :metrics)");
    } else if let Some(port) = keep.then(|| redis.keep()).flatten() {
        println!("\nThe demo's redis-server keeps running on port {port}. Look at the breaker:");
        println!("  redis-cli -p {port} HGETALL 'breaker:{{{name}}}:state'");
        println!("  redis-cli -p {port} HGETALL 'breaker:{{{name}}}:metrics'");
        println!("  cargo run -p redis-breaker-cli -- --url {url} serve   # then open http://127.0.0.1:19187");
        println!("Stop it with: redis-cli -p {port} shutdown nosave");
    } else {
        // Dropping the handle stops the server the demo started (and removes its directory).
        println!("(the demo's redis-server has stopped: run with --keep to look at the breaker afterwards)");
    }
    Ok(())
}

async fn downstream(down: bool) -> Result<(), &'static str> {
    if down {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Err("503 service unavailable")
    } else {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok(())
    }
}

/// Script calls the server has run: FCALL (the library, Redis >= 7.0) and EVALSHA.
async fn script_calls(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    let calls = |command: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(calls("fcall") + calls("evalsha"))
}

fn options() -> Result<(u32, u32, bool), String> {
    let (mut instances, mut rate, mut keep) = (6, 50, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--keep" {
            keep = true;
            continue;
        }
        let mut value = |what: &str| {
            args.next()
                .and_then(|v| v.parse::<u32>().ok())
                .filter(|v| *v > 0)
                .ok_or(format!("{what} takes a positive number"))
        };
        match arg.as_str() {
            "--instances" => instances = value("--instances")?,
            "--rate" => rate = value("--rate")?,
            other => {
                return Err(format!("unknown option {other}; options: --instances N, --rate CALLS_PER_SECOND, --keep"));
            }
        }
    }
    Ok((instances, rate, keep))
}
