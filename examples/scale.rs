//! Redis cost per active (client, breaker) pair per second, for a fleet in one process: C
//! clients (each a process of the fleet) x B breakers, each breaker called R times a second,
//! healthy. Each run gets a throwaway redis-server of its own, watched idle for 5s first (an
//! idle server spends about 2ms of CPU a second on its own cron: the figures are also given net
//! of it); after a warm-up, INFO commandstats and INFO cpu are read before and after the
//! measured seconds, and INFO clients' `connected_clients` after the warm-up gives the server's
//! connections per client (the harness's own connection, counted before the clients connect,
//! left out). Every row is run
//! twice: with the default config, and with the old defaults as the baseline (`cache_ttl` 1s
//! whatever the subscription, metrics sent every flush, scripts sent with EVALSHA), in the same
//! run.
//!
//! ```text
//! cargo run --release --example scale                          # the grid (about 5 minutes)
//! cargo run --release --example scale -- --clients 100 --breakers 10 --rate 10 --secs 30
//! cargo run --release --example scale -- --flush-round 10000   # one client, 10,000 breakers
//! cargo run --release --example scale -- ... --keepalive-ms 10000  # another events_keepalive
//! ```
//!
//! Measure whole multiples of 30s (`subscribed_cache_ttl`, `metrics_interval`): each pair then
//! sends the same number of refreshes in every window.

use redis_breaker_test_support::example as common;

use redis_breaker::{Client, ClientConfig, Config};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct Row {
    clients: usize,
    breakers: usize,
    rate: u32,
}

/// How each run is measured.
#[derive(Clone, Copy)]
struct Run {
    warmup: Duration,
    secs: Duration,
    /// `events_keepalive` when not the default (to see what the per-client PING costs).
    keepalive: Option<Duration>,
}

#[derive(Clone, Copy)]
enum Defaults {
    Current,
    Old,
}

impl Defaults {
    fn label(self) -> &'static str {
        match self {
            Defaults::Current => "default config",
            Defaults::Old => "old defaults (baseline)",
        }
    }

    fn config(self, keepalive: Option<Duration>) -> ClientConfig {
        let mut b = ClientConfig::builder().op_timeout(Duration::from_secs(1));
        if let Some(keepalive) = keepalive {
            b = b.events_keepalive(keepalive);
        }
        match self {
            Defaults::Current => b,
            Defaults::Old => {
                b.subscribed_cache_ttl(Duration::from_secs(1)).metrics_interval(Duration::from_secs(1)).functions(false)
            }
        }
        .build()
        .expect("client config")
    }
}

struct Figures {
    scripts: f64,
    cpu_us: f64,
    /// CPU net of what the same server spent idle (no client connected) before the run.
    net_cpu_us: f64,
    commands: f64,
    calls: f64,
    /// The server's connections per client during the run, the harness's own left out.
    conns_per_client: f64,
}

/// INFO `section` as field -> value.
async fn info(conn: &mut redis::aio::MultiplexedConnection, section: &str) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await.expect("INFO");
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

/// (script calls, every command, CPU seconds) the server has spent so far.
async fn spent(conn: &mut redis::aio::MultiplexedConnection) -> (u64, u64, f64) {
    let stats = info(conn, "commandstats").await;
    let calls = |cmd: &str| {
        stats
            .get(&format!("cmdstat_{cmd}"))
            .and_then(|v| v.strip_prefix("calls=")?.split(',').next()?.parse::<u64>().ok())
    };
    let scripts =
        ["evalsha", "eval", "script|load", "fcall", "function|load"].iter().filter_map(|c| calls(c)).sum::<u64>();
    let commands = stats.keys().filter_map(|k| calls(k.strip_prefix("cmdstat_")?)).sum::<u64>();
    let cpu = info(conn, "cpu").await;
    let seconds = |f: &str| cpu.get(f).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (scripts, commands, seconds("used_cpu_sys") + seconds("used_cpu_user"))
}

/// INFO clients `connected_clients`.
async fn connected(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    info(conn, "clients").await.get("connected_clients").and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// How long each run's server is watched idle before its clients connect.
const IDLE: Duration = Duration::from_secs(5);

async fn measure(row: Row, defaults: Defaults, run: Run) -> Figures {
    let Run { warmup, secs, keepalive } = run;
    let redis = common::spawn_server().expect("a redis-server of the run's own");
    let mut conn = redis::Client::open(redis.url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    // An idle redis-server spends CPU of its own (its cron, about 2ms a second): measured first,
    // on this server, so the figures can be given net of it.
    let (_, _, idle0) = spent(&mut conn).await;
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let (_, _, idle1) = spent(&mut conn).await;
    let idle_per_sec = (idle1 - idle0) / idle_started.elapsed().as_secs_f64();
    // The harness's own connections, counted before any client connects.
    let own = connected(&mut conn).await;
    let mut clients = Vec::new();
    for _ in 0..row.clients {
        clients.push(Client::connect_with(&redis.url, defaults.config(keepalive)).await.expect("client"));
    }
    let every = Duration::from_secs(1) / row.rate;
    let stop = Instant::now() + warmup + secs;
    let mut tasks = Vec::new();
    for client in &clients {
        let breakers: Vec<_> =
            (0..row.breakers).map(|i| client.breaker(&format!("scale-{i}"), Config::default()).unwrap()).collect();
        tasks.push(tokio::spawn(async move {
            // Clients start at spread offsets, as a fleet's processes do.
            tokio::time::sleep(every.mul_f64(rand::random::<f64>())).await;
            let mut tick = tokio::time::interval(every);
            let mut calls = 0u64;
            while Instant::now() < stop {
                tick.tick().await;
                for b in &breakers {
                    b.execute(|| async { Ok::<(), ()>(()) }).await.expect("a healthy call");
                    calls += 1;
                }
            }
            calls
        }));
    }
    tokio::time::sleep(warmup).await;
    let conns = connected(&mut conn).await.saturating_sub(own);
    let (s0, c0, cpu0) = spent(&mut conn).await;
    let started = Instant::now();
    tokio::time::sleep(secs).await;
    let (s1, c1, cpu1) = spent(&mut conn).await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("load task");
    }
    let pair_seconds = (row.clients * row.breakers) as f64 * elapsed;
    Figures {
        scripts: (s1 - s0) as f64 / pair_seconds,
        cpu_us: (cpu1 - cpu0) * 1e6 / pair_seconds,
        net_cpu_us: ((cpu1 - cpu0) - idle_per_sec * elapsed).max(0.0) * 1e6 / pair_seconds,
        commands: (c1 - c0) as f64 / pair_seconds,
        calls: calls as f64 / ((row.clients * row.breakers) as f64 * (warmup + secs).as_secs_f64()),
        conns_per_client: conns as f64 / row.clients as f64,
    }
}

/// One client with `n` breakers, each with a pending success: how long one flush round takes,
/// and whether the breakers leave the registry once no handle holds them.
async fn flush_round(n: usize) {
    let redis = common::spawn_server().expect("a redis-server of the run's own");
    let config = ClientConfig::builder()
        .op_timeout(Duration::from_secs(1))
        .cache_ttl(Duration::from_millis(200))
        .subscribed_cache_ttl(Duration::from_millis(200))
        .build()
        .expect("client config");
    let client = Client::connect_with(&redis.url, config).await.expect("client");
    let breakers: Vec<_> = (0..n).map(|i| client.breaker(&format!("tenant-{i}"), Config::default()).unwrap()).collect();
    for b in &breakers {
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("a healthy call");
        b.execute(|| async { Ok::<(), ()>(()) }).await.expect("a healthy call");
    }
    let started = Instant::now();
    client.flush().await.expect("flush");
    let took = started.elapsed();
    println!(
        "one flush round of {n} breakers: {took:.1?} ({:.1} µs per breaker; flush_interval is 1s)",
        took.as_secs_f64() * 1e6 / n as f64
    );
    drop(breakers);
    let held = client.local_breakers().len();
    let started = Instant::now();
    while !client.local_breakers().is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "registry: {held} breakers held while their handles lived, {} after the handles were dropped ({:.1?} later)",
        client.local_breakers().len(),
        started.elapsed()
    );
}

fn arg(args: &[String], name: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == name)?;
    match args.get(at + 1).map(|v| v.parse()) {
        Some(Ok(v)) => Some(v),
        _ => {
            eprintln!("{name} needs a number");
            std::process::exit(2);
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = arg(&args, "--flush-round") {
        return flush_round(usize::try_from(n).unwrap_or(10_000)).await;
    }
    let secs = Duration::from_secs(arg(&args, "--secs").unwrap_or(30));
    let warmup = Duration::from_secs(arg(&args, "--warmup").unwrap_or(5));
    let keepalive = arg(&args, "--keepalive-ms").map(Duration::from_millis);
    let run = Run { warmup, secs, keepalive };
    let rows = match (arg(&args, "--clients"), arg(&args, "--breakers"), arg(&args, "--rate")) {
        (Some(c), Some(b), Some(r)) => {
            vec![Row { clients: c as usize, breakers: b as usize, rate: u32::try_from(r).unwrap_or(1).max(1) }]
        }
        (None, None, None) => [(100, 10), (50, 100)]
            .into_iter()
            .flat_map(|(clients, breakers)| [2, 10].map(|rate| Row { clients, breakers, rate }))
            .collect(),
        _ => {
            eprintln!("give all of --clients, --breakers and --rate, or none (the grid)");
            std::process::exit(2);
        }
    };
    println!(
        "Redis cost per active (client, breaker) pair per second; {}s measured after {}s of warm-up, a fresh redis-server per run\n",
        secs.as_secs(),
        warmup.as_secs()
    );
    println!(
        "| active pairs | calls/s per pair | config | script calls / pair / s | Redis CPU / pair / s | net of idle server | commands / pair / s | connections / client |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in rows {
        let mut figures = Vec::new();
        for defaults in [Defaults::Current, Defaults::Old] {
            let f = measure(row, defaults, run).await;
            println!(
                "| {} x {} = {} | {} ({:.1} made) | {} | {:.4} | {:.2} µs | {:.2} µs | {:.4} | {:.2} |",
                row.clients,
                row.breakers,
                row.clients * row.breakers,
                row.rate,
                f.calls,
                defaults.label(),
                f.scripts,
                f.cpu_us,
                f.net_cpu_us,
                f.commands,
                f.conns_per_client
            );
            figures.push(f);
        }
        println!(
            "|  |  | baseline / default | {:.1}x | {:.1}x | {:.1}x | | |",
            figures[1].scripts / figures[0].scripts.max(f64::MIN_POSITIVE),
            figures[1].cpu_us / figures[0].cpu_us.max(f64::MIN_POSITIVE),
            figures[1].net_cpu_us / figures[0].net_cpu_us.max(f64::MIN_POSITIVE)
        );
    }
}
