//! Performance report against a real Redis: Redis commands per `execute` under a steady healthy
//! load from several processes, the server-side cost of each script, Redis memory per breaker,
//! and the throughput of many concurrent tasks.
//!
//! `cargo run --release --example report` — uses `$REDIS_URL`, else starts a throwaway
//! redis-server (the memory figure needs a server of its own: it writes 10,000 breakers under
//! the prefix `report`). Options: `--processes 4 --rate 250 --seconds 5 --breakers 10000
//! --tasks 64`; `--scripts` prints the server time per script alone.

use redis_breaker_test_support::example as common;

use redis_breaker::{Client, ClientConfig, Config};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Options {
    scripts_only: bool,
    processes: u32,
    rate: u32,
    seconds: u64,
    breakers: usize,
    tasks: usize,
}

fn options() -> Result<Options, String> {
    let mut o = Options { scripts_only: false, processes: 4, rate: 250, seconds: 5, breakers: 10_000, tasks: 64 };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--scripts" {
            o.scripts_only = true;
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<u64>().ok()).filter(|v| *v > 0);
        let value = value.ok_or(format!("{flag} takes a positive number"))?;
        match flag.as_str() {
            "--processes" => o.processes = value as u32,
            "--rate" => o.rate = value as u32,
            "--seconds" => o.seconds = value,
            "--breakers" => o.breakers = value as usize,
            "--tasks" => o.tasks = value as usize,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(spec) = std::env::var("REPORT_WORKER") {
        return worker(&spec).await;
    }
    let o = options()?;
    let redis = common::redis()?;
    let mut admin = redis::Client::open(redis.url.as_str())?.get_multiplexed_async_connection().await?;
    let version: String = redis::cmd("INFO").arg("server").query_async(&mut admin).await?;
    let version = version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").to_string();
    println!("redis-breaker report: redis {version} at {}, {} cores\n", redacted(&redis.url), num_cpus());

    if o.scripts_only {
        return script_costs(&redis.url, &mut admin).await;
    }
    steady_load(&o, &redis.url, &mut admin).await?;
    script_costs(&redis.url, &mut admin).await?;
    memory(&o, &redis.url, &mut admin).await?;
    throughput(&o, &redis.url).await?;
    Ok(())
}

fn redacted(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("redis://***@{host}"),
        None => url.to_string(),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<HashMap<String, (u64, f64)>> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (cmd, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |name: &str| rest.split(',').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
            Some((cmd.to_string(), (field("calls")?.parse().ok()?, field("usec_per_call")?.parse().ok()?)))
        })
        .collect())
}

fn sent(stats: &HashMap<String, (u64, f64)>) -> u64 {
    ["evalsha", "eval", "script|load", "fcall", "function|load"].iter().map(|c| stats.get(*c).map_or(0, |s| s.0)).sum()
}

/// Several processes, each with its own Client, call one healthy breaker at a steady rate.
async fn steady_load(
    o: &Options,
    url: &str,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("report-steady-{}", std::process::id());
    let before = sent(&commandstats(admin).await?);
    let exe = std::env::current_exe()?;
    let children: Vec<_> = (0..o.processes)
        .map(|_| {
            Command::new(&exe)
                .env("REPORT_WORKER", format!("{url} {name} {} {}", o.rate, o.seconds))
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    let mut calls = 0u64;
    for child in children {
        let out = child.wait_with_output()?;
        calls += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(0);
    }
    let commands = sent(&commandstats(admin).await?) - before;
    println!("steady healthy load: {} processes x {} calls/s x {}s", o.processes, o.rate, o.seconds);
    println!(
        "  {calls} calls, {commands} Redis commands (EVALSHA): {:.4} commands per execute\n",
        commands as f64 / calls.max(1) as f64
    );
    Ok(())
}

async fn worker(spec: &str) -> Result<(), Box<dyn std::error::Error>> {
    let parts: Vec<&str> = spec.split(' ').collect();
    let [url, name, rate, seconds] = parts[..] else { return Err("bad worker spec".into()) };
    let client = Client::connect(url).await?;
    let breaker = client.breaker(name, Config::default())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.parse::<u32>()?);
    let until = Instant::now() + Duration::from_secs(seconds.parse()?);
    let mut calls = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        let _ = breaker.execute(|| async { Ok::<(), ()>(()) }).await;
        calls += 1;
    }
    client.shutdown().await?;
    println!("{calls}");
    Ok(())
}

/// Server time of each script, from `usec_per_call` with one script at a time, sent both ways:
/// with EVALSHA (`functions(false)`, the baseline) and as FCALL of the Functions library (the
/// default where the server has Functions), in the same run.
async fn script_costs(
    url: &str,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<(), Box<dyn std::error::Error>> {
    let n = 4_000;
    println!("server time per script call (INFO commandstats usec_per_call, {n} calls each from 16 callers):");
    println!("  {:<40} {:>9} {:>9} {:>7}", "script", "EVALSHA", "FCALL", "ratio");
    let evalsha = script_costs_one_way(url, admin, false, n).await?;
    let fcall = script_costs_one_way(url, admin, true, n).await?;
    for ((label, old), (_, new)) in evalsha.iter().zip(&fcall) {
        let old = old.unwrap_or(f64::NAN);
        match new {
            Some(new) => println!("  {label:<40} {old:>6.2} µs {new:>6.2} µs {:>6.2}x", new / old),
            None => println!("  {label:<40} {old:>6.2} µs {:>9} {:>7}", "-", "-"),
        }
    }
    println!();
    Ok(())
}

/// One column of `script_costs`: µs per call of each script; `None` where the calls did not go
/// the asked way (a server without Functions).
async fn script_costs_one_way(
    url: &str,
    admin: &mut redis::aio::MultiplexedConnection,
    functions: bool,
    n: usize,
) -> Result<Vec<(&'static str, Option<f64>)>, Box<dyn std::error::Error>> {
    let config = |cache_ttl| {
        ClientConfig::builder()
            .cache_ttl(cache_ttl)
            .op_timeout(Duration::from_secs(1))
            .functions(functions)
            .prefix(if functions { "report-fcall" } else { "report-evalsha" })
            .build()
    };
    let client = Client::connect_with(url, config(Duration::ZERO)?).await?;
    // Failures on a client whose snapshots stay fresh: each is one record, no acquire.
    let recorder = Client::connect_with(url, config(ClientConfig::MAX_CACHE_TTL)?).await?;
    let windowed = Config::builder().failure_threshold(u32::MAX).failure_rate(0.99).minimum_calls(1_000_000).build()?;
    let acquire = client.breaker("report-acquire", Config::default())?;
    let failure = recorder.breaker("report-failure", Config::builder().failure_threshold(u32::MAX).build()?)?;
    let record = recorder.breaker("report-record", windowed)?;
    failure.execute(|| async { Err::<(), ()>(()) }).await.ok();
    record.execute(|| async { Err::<(), ()>(()) }).await.ok();
    let control = client.breaker("report-control", Config::default())?;
    acquire.execute(|| async { Ok::<(), ()>(()) }).await.ok();
    let command = if functions { "fcall" } else { "evalsha" };
    let mut out = Vec::new();
    for (label, which) in [
        ("acquire (closed)", 0),
        ("record (failure, no trip)", 1),
        ("record (failure, with the rate window)", 2),
        ("control (force_open / reset)", 3),
    ] {
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(admin).await?;
        // 16 callers at once, as a fleet would: a server that idles between calls measures
        // its own wake-up, not the script.
        let callers = (0..16).map(|k| {
            let (acquire, failure, record, control) = (&acquire, &failure, &record, &control);
            async move {
                for i in 0..n / 16 {
                    match which {
                        0 => drop(acquire.execute(|| async { Ok::<(), ()>(()) }).await),
                        1 => drop(failure.execute(|| async { Err::<(), ()>(()) }).await),
                        2 => drop(record.execute(|| async { Err::<(), ()>(()) }).await),
                        _ if (i + k) % 2 == 0 => drop(control.force_open(None).await),
                        _ => drop(control.reset().await),
                    }
                }
            }
        });
        futures_util::future::join_all(callers).await;
        let stats = commandstats(admin).await?;
        let usec = stats.get(command).filter(|(calls, _)| *calls > 0).map(|(_, usec)| *usec);
        out.push((label, usec));
    }
    client.shutdown().await?;
    recorder.shutdown().await?;
    Ok(out)
}

/// MEMORY USAGE over every key of breakers that tripped and hold all four keys.
async fn memory(
    o: &Options,
    url: &str,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = ClientConfig::builder()
        .prefix("report")
        .cache_ttl(Duration::ZERO)
        .op_timeout(Duration::from_secs(2))
        .build()?;
    let client = Client::connect_with(url, config).await?;
    let lease = Duration::from_secs(3600);
    let breaker_config = Config::builder()
        .failure_threshold(1)
        .failure_rate(0.5)
        .minimum_calls(1_000)
        .base_recovery(Duration::from_millis(1))
        .max_recovery(Duration::from_millis(1))
        .probe_lease(lease)
        .call_timeout(lease / 2)
        .build()?;
    let names: Vec<String> = (0..o.breakers).map(|i| format!("svc-{i:05}")).collect();
    let started = Instant::now();
    for chunk in names.chunks(200) {
        let tasks: Vec<_> = chunk
            .iter()
            .map(|name| {
                let b = client.breaker(name, breaker_config.clone());
                async move {
                    if let Ok(b) = b {
                        let _ = b.execute(|| async { Err::<(), ()>(()) }).await;
                    }
                }
            })
            .collect();
        futures_util::future::join_all(tasks).await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut permits = Vec::with_capacity(names.len());
    for name in &names {
        if let Ok(p) = client.breaker(name, breaker_config.clone())?.acquire().await {
            permits.push(p);
        }
    }
    let mut total = 0u64;
    let mut keys = 0u64;
    for chunk in names.chunks(500) {
        let mut pipe = redis::pipe();
        for name in chunk {
            for suffix in ["state", "probes", "window", "metrics"] {
                pipe.cmd("MEMORY").arg("USAGE").arg(format!("report:{{{name}}}:{suffix}")).arg("SAMPLES").arg(0);
            }
        }
        let sizes: Vec<Option<u64>> = pipe.query_async(admin).await?;
        keys += sizes.iter().filter(|s| s.is_some()).count() as u64;
        total += sizes.into_iter().flatten().sum::<u64>();
    }
    println!(
        "memory: {} breakers tripped and half-open with a probe out ({} keys, {} probes, set up in {:.1}s)",
        names.len(),
        keys,
        permits.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  MEMORY USAGE over all their keys: {total} bytes, {} bytes per breaker\n",
        total / names.len().max(1) as u64
    );
    drop(permits);
    Ok(())
}

/// Many tasks calling one healthy breaker on a 2-thread runtime.
async fn throughput(o: &Options, url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect(url).await?;
    let breaker = client.breaker("report-throughput", Config::default())?;
    breaker.execute(|| async { Ok::<(), ()>(()) }).await.ok();
    let window = Duration::from_secs(2);
    let started = Instant::now();
    let tasks: Vec<_> = (0..o.tasks)
        .map(|_| {
            let b = breaker.clone();
            tokio::spawn(async move {
                let mut calls = 0u64;
                while started.elapsed() < window {
                    for _ in 0..1_000 {
                        let _ = b.execute(|| async { Ok::<(), ()>(()) }).await;
                    }
                    calls += 1_000;
                    tokio::task::yield_now().await;
                }
                calls
            })
        })
        .collect();
    let mut calls = 0;
    for t in tasks {
        calls += t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("throughput: {} tasks on a 2-thread runtime, one healthy breaker", o.tasks);
    println!("  {calls} calls in {secs:.2}s: {:.1} million calls/s", calls as f64 / secs / 1e6);
    client.shutdown().await?;
    Ok(())
}
