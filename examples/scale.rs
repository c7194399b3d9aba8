//! Redis cost per active (client, breaker) pair per second, for a fleet in one process: C
//! clients (each a process of the fleet) x B breakers, each breaker called R times a second,
//! healthy. Each run gets a throwaway redis-server of its own (with `--cluster N`, a cluster of
//! N masters on loopback, the slots split evenly; the library's `cluster` feature), watched idle
//! for 5s first (an idle server spends about 2ms of CPU a second on its own cron: the figures
//! are also given net of it); after a warm-up, INFO commandstats and INFO cpu of every master
//! are read before and after the measured seconds, summed, and for a cluster also given per
//! shard, with the six commands that took most server time (INFO commandstats usec). INFO
//! clients' `connected_clients` after the warm-up gives the servers' connections per
//! client (the harness's own connection to each server, counted before the clients connect,
//! left out). Every row is run twice: with the default config, and with the old defaults as the
//! baseline (`cache_ttl` 1s whatever the subscription, metrics sent every flush, scripts sent
//! with EVALSHA), in the same run. Each row gives the 1-minute load average of the machine
//! before and after its measured seconds: the clients and the servers share its cores.
//!
//! ```text
//! cargo run --release --example scale                          # the grid (about 5 minutes)
//! cargo run --release --example scale -- --clients 100 --breakers 10 --rate 10 --secs 30
//! cargo run --release --features cluster --example scale -- --cluster 3 --clients 100 --breakers 10 --rate 10 --secs 30
//! cargo run --release --example scale -- --flush-round 10000   # one client, 10,000 breakers
//! cargo run --release --example scale -- ... --keepalive-ms 10000  # another events_keepalive
//! cargo run --release --example scale -- ... --ports 22000     # servers on the first free ports from 22000
//! ```
//!
//! Measure whole multiples of 30s (`subscribed_cache_ttl`, `metrics_interval`): each pair then
//! sends the same number of refreshes in every window.

use redis_breaker_test_support::example as common;
use redis_breaker_test_support::server::{self, Server};

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
    /// Masters of a Redis Cluster, or `None` for one plain server.
    cluster: Option<usize>,
    /// The first port the servers may take (else any free port).
    ports: Option<u16>,
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

/// The servers of one run: one plain server, or the masters of a cluster with their slots.
struct Deployment {
    servers: Vec<Server>,
    slots: Option<Vec<(u16, u16)>>,
}

impl Deployment {
    fn start(run: Run) -> Result<Deployment, String> {
        let spawn = |cluster: bool, from: u16| match run.ports {
            Some(_) => server::spawn_from(from, cluster),
            None if cluster => server::spawn_cluster_node(),
            None => server::spawn_server(),
        };
        let first = run.ports.unwrap_or(0);
        let Some(n) = run.cluster else {
            return Ok(Deployment { servers: vec![spawn(false, first)?], slots: None });
        };
        let mut servers: Vec<Server> = Vec::new();
        for _ in 0..n {
            let from = servers.last().map_or(first, |s| s.port.saturating_add(1));
            servers.push(spawn(true, from)?);
        }
        let slots = server::form_cluster(&servers)?;
        Ok(Deployment { servers, slots: Some(slots) })
    }

    fn urls(&self) -> Vec<String> {
        self.servers.iter().map(Server::url).collect()
    }

    async fn client(&self, config: ClientConfig) -> Client {
        let urls = self.urls();
        if self.slots.is_some() {
            return cluster_client(&urls, config).await;
        }
        Client::connect_with(&urls[0], config).await.expect("client")
    }

    fn describe(&self) -> String {
        match &self.slots {
            Some(slots) => format!("cluster, {} master{}", slots.len(), if slots.len() == 1 { "" } else { "s" }),
            None => "one server".to_string(),
        }
    }
}

#[cfg(feature = "cluster")]
async fn cluster_client(urls: &[String], config: ClientConfig) -> Client {
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    Client::connect_cluster(&urls, config).await.expect("cluster client")
}

#[cfg(not(feature = "cluster"))]
async fn cluster_client(_: &[String], _: ClientConfig) -> Client {
    eprintln!("--cluster needs the library's cluster feature: cargo run --release --features cluster --example scale");
    std::process::exit(2);
}

/// What one server spent so far: script calls, every command, CPU seconds, and each command's
/// (calls, usec) from INFO commandstats (the commands scripts run are counted there too).
#[derive(Clone, Default)]
struct Spent {
    scripts: u64,
    commands: u64,
    cpu: f64,
    by_command: BTreeMap<String, (u64, u64)>,
}

impl Spent {
    /// What was spent between `before` and `self`.
    fn since(&self, before: &Spent) -> Spent {
        let by_command = self
            .by_command
            .iter()
            .map(|(cmd, (calls, usec))| {
                let (c0, u0) = before.by_command.get(cmd).copied().unwrap_or_default();
                (cmd.clone(), (calls - c0, usec - u0))
            })
            .collect();
        Spent {
            scripts: self.scripts - before.scripts,
            commands: self.commands - before.commands,
            cpu: self.cpu - before.cpu,
            by_command,
        }
    }

    fn add(&mut self, other: &Spent) {
        self.scripts += other.scripts;
        self.commands += other.commands;
        self.cpu += other.cpu;
        for (cmd, (calls, usec)) in &other.by_command {
            let sum = self.by_command.entry(cmd.clone()).or_default();
            *sum = (sum.0 + calls, sum.1 + usec);
        }
    }
}

/// One master's share of a run, per second of the measured time.
struct Shard {
    port: u16,
    slots: (u16, u16),
    /// The scale breakers whose keys this master holds.
    breakers: usize,
    scripts: f64,
    commands: f64,
    cpu_ms: f64,
    net_cpu_ms: f64,
    conns_per_client: f64,
}

struct Figures {
    scripts: f64,
    cpu_us: f64,
    /// CPU net of what the same servers spent idle (no client connected) before the run.
    net_cpu_us: f64,
    commands: f64,
    calls: f64,
    /// The servers' connections per client during the run, the harness's own left out.
    conns_per_client: f64,
    /// The machine's 1-minute load average before and after the measured seconds.
    load: (String, String),
    shards: Vec<Shard>,
    /// The commands by server time (commandstats usec), most first: name, calls per second
    /// on each master, usec per second over all.
    top: Vec<(String, Vec<f64>, f64)>,
}

type Conn = redis::aio::MultiplexedConnection;

/// INFO `section` as field -> value.
async fn info(conn: &mut Conn, section: &str) -> BTreeMap<String, String> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await.expect("INFO");
    text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

/// What the server behind `conn` has spent so far.
async fn spent(conn: &mut Conn) -> Spent {
    let stats = info(conn, "commandstats").await;
    let field = |v: &str, name: &str| {
        v.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('=')?.parse::<u64>().ok()).unwrap_or(0)
    };
    let by_command: BTreeMap<String, (u64, u64)> = stats
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("cmdstat_")?.to_string(), (field(v, "calls"), field(v, "usec")))))
        .collect();
    let calls = |cmd: &str| by_command.get(cmd).map_or(0, |c| c.0);
    let scripts = ["evalsha", "eval", "script|load", "fcall", "function|load"].iter().map(|c| calls(c)).sum();
    let commands = by_command.values().map(|c| c.0).sum();
    let cpu = info(conn, "cpu").await;
    let seconds = |f: &str| cpu.get(f).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Spent { scripts, commands, cpu: seconds("used_cpu_sys") + seconds("used_cpu_user"), by_command }
}

/// What each server has spent so far.
async fn spent_all(conns: &mut [Conn]) -> Vec<Spent> {
    let mut all = Vec::new();
    for conn in conns {
        all.push(spent(conn).await);
    }
    all
}

/// INFO clients `connected_clients` of each server.
async fn connected(conns: &mut [Conn]) -> Vec<u64> {
    let mut all = Vec::new();
    for conn in conns {
        all.push(info(conn, "clients").await.get("connected_clients").and_then(|v| v.parse().ok()).unwrap_or(0));
    }
    all
}

/// How many of the `breakers` scale breakers have their keys in each of `slots` (asked of a
/// cluster node with CLUSTER KEYSLOT); all of them on a plain server.
async fn breakers_held(conn: &mut Conn, breakers: usize, slots: Option<&Vec<(u16, u16)>>) -> Vec<usize> {
    let Some(slots) = slots else { return vec![breakers] };
    let mut held = vec![0; slots.len()];
    for i in 0..breakers {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("breaker:{{scale-{i}}}:state"))
            .query_async(conn)
            .await
            .expect("CLUSTER KEYSLOT");
        if let Some(at) = slots.iter().position(|(first, last)| (*first..=*last).contains(&slot)) {
            held[at] += 1;
        }
    }
    held
}

/// The machine's 1-minute load average (Linux), or "?".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// How long each run's servers are watched idle before the clients connect.
const IDLE: Duration = Duration::from_secs(5);

async fn measure(row: Row, defaults: Defaults, run: Run) -> Figures {
    let Run { warmup, secs, keepalive, .. } = run;
    let deployment = Deployment::start(run).expect("the run's own redis-server(s)");
    eprintln!("started {} on 127.0.0.1 ports {:?}", deployment.describe(), deployment.urls());
    let mut conns = Vec::new();
    for url in deployment.urls() {
        conns.push(
            redis::Client::open(url.as_str()).expect("url").get_multiplexed_async_connection().await.expect("connect"),
        );
    }
    // An idle redis-server spends CPU of its own (its cron, about 2ms a second; a cluster node
    // its bus too): measured first, on these servers, so the figures can be given net of it.
    let idle0 = spent_all(&mut conns).await;
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle1 = spent_all(&mut conns).await;
    let idle_secs = idle_started.elapsed().as_secs_f64();
    let idle_per_sec: Vec<f64> = idle1.iter().zip(&idle0).map(|(a, b)| (a.cpu - b.cpu) / idle_secs).collect();
    // The harness's own connections, counted before any client connects.
    let own = connected(&mut conns).await;
    let mut clients = Vec::new();
    for _ in 0..row.clients {
        clients.push(deployment.client(defaults.config(keepalive)).await);
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
    let conns_now = connected(&mut conns).await;
    let load_before = load_average();
    let before = spent_all(&mut conns).await;
    let started = Instant::now();
    tokio::time::sleep(secs).await;
    let after = spent_all(&mut conns).await;
    let elapsed = started.elapsed().as_secs_f64();
    let load_after = load_average();
    let mut calls = 0;
    for t in tasks {
        calls += t.await.expect("load task");
    }
    let held = breakers_held(&mut conns[0], row.breakers, deployment.slots.as_ref()).await;
    let spent: Vec<Spent> = after.iter().zip(&before).map(|(a, b)| a.since(b)).collect();
    let mut shards = Vec::new();
    for (i, d) in spent.iter().enumerate() {
        let idle = idle_per_sec[i] * elapsed;
        shards.push(Shard {
            port: deployment.servers[i].port,
            slots: deployment.slots.as_ref().map_or((0, 16_383), |s| s[i]),
            breakers: held[i],
            scripts: d.scripts as f64 / elapsed,
            commands: d.commands as f64 / elapsed,
            cpu_ms: d.cpu * 1e3 / elapsed,
            net_cpu_ms: (d.cpu - idle).max(0.0) * 1e3 / elapsed,
            conns_per_client: conns_now[i].saturating_sub(own[i]) as f64 / row.clients as f64,
        });
    }
    let mut total = Spent::default();
    for d in &spent {
        total.add(d);
    }
    let mut top: Vec<(String, Vec<f64>, f64)> = total
        .by_command
        .iter()
        .filter(|(_, (calls, _))| *calls > 0)
        .map(|(cmd, (_, usec))| {
            let calls = spent.iter().map(|d| d.by_command.get(cmd).map_or(0.0, |c| c.0 as f64 / elapsed)).collect();
            (cmd.clone(), calls, *usec as f64 / elapsed)
        })
        .collect();
    top.sort_by(|a, b| b.2.total_cmp(&a.2));
    top.truncate(6);
    let idle: f64 = idle_per_sec.iter().sum::<f64>() * elapsed;
    let pair_seconds = (row.clients * row.breakers) as f64 * elapsed;
    Figures {
        scripts: total.scripts as f64 / pair_seconds,
        cpu_us: total.cpu * 1e6 / pair_seconds,
        net_cpu_us: (total.cpu - idle).max(0.0) * 1e6 / pair_seconds,
        commands: total.commands as f64 / pair_seconds,
        calls: calls as f64 / ((row.clients * row.breakers) as f64 * (warmup + secs).as_secs_f64()),
        conns_per_client: shards.iter().map(|s| s.conns_per_client).sum(),
        load: (load_before, load_after),
        shards,
        top,
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
    let cluster = arg(&args, "--cluster").map(|n| usize::try_from(n).unwrap_or(1).max(1));
    let ports = arg(&args, "--ports").map(|p| u16::try_from(p).unwrap_or(u16::MAX));
    let run = Run { warmup, secs, keepalive, cluster, ports };
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
    let redis = match cluster {
        Some(n) => format!("a fresh cluster of {n} master{} per run", if n == 1 { "" } else { "s" }),
        None => "a fresh redis-server per run".to_string(),
    };
    println!(
        "Redis cost per active (client, breaker) pair per second; {}s measured after {}s of warm-up, {redis}\n",
        secs.as_secs(),
        warmup.as_secs()
    );
    println!(
        "| active pairs | calls/s per pair | config | script calls / pair / s | Redis CPU / pair / s | net of idle server | commands / pair / s | connections / client | load avg |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut shards = Vec::new();
    let mut commands = Vec::new();
    for row in rows {
        let mut figures = Vec::new();
        for defaults in [Defaults::Current, Defaults::Old] {
            let f = measure(row, defaults, run).await;
            println!(
                "| {} x {} = {} | {} ({:.1} made) | {} | {:.4} | {:.2} µs | {:.2} µs | {:.4} | {:.2} | {} - {} |",
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
                f.conns_per_client,
                f.load.0,
                f.load.1
            );
            for (i, shard) in f.shards.iter().enumerate() {
                shards.push(format!(
                    "| {} x {} x {}/s, {} | {}/{} (port {}, slots {}-{}) | {} | {:.2} | {:.2} ms | {:.2} ms | {:.1} | {:.2} |",
                    row.clients,
                    row.breakers,
                    row.rate,
                    defaults.label(),
                    i + 1,
                    f.shards.len(),
                    shard.port,
                    shard.slots.0,
                    shard.slots.1,
                    shard.breakers,
                    shard.scripts,
                    shard.cpu_ms,
                    shard.net_cpu_ms,
                    shard.commands,
                    shard.conns_per_client
                ));
            }
            for (cmd, calls, usec) in &f.top {
                let calls: Vec<String> = calls.iter().map(|c| format!("{c:.1}")).collect();
                commands.push(format!(
                    "| {} x {} x {}/s, {} | {cmd} | {} | {:.2} ms |",
                    row.clients,
                    row.breakers,
                    row.rate,
                    defaults.label(),
                    calls.join(" / "),
                    usec / 1e3
                ));
            }
            figures.push(f);
        }
        println!(
            "|  |  | baseline / default | {} | {} | {} | | | |",
            ratio(figures[1].scripts, figures[0].scripts),
            ratio(figures[1].cpu_us, figures[0].cpu_us),
            ratio(figures[1].net_cpu_us, figures[0].net_cpu_us)
        );
    }
    if cluster.is_some() {
        println!("\nPer shard, per second of the measured time:\n");
        println!(
            "| run | shard | breakers held | script calls / s | Redis CPU / s | net of idle | commands / s | connections / client |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for line in shards {
            println!("{line}");
        }
    }
    println!(
        "\nThe commands by server time (INFO commandstats usec, summed over the masters; a script's own commands counted too), per second of the measured time:\n"
    );
    println!("| run | command | calls / s (each master) | server time / s |");
    println!("|---|---|---|---|");
    for line in commands {
        println!("{line}");
    }
}

/// `a / b` as "1.5x", or "-" when `b` is zero (no script call in a short run).
fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 { format!("{:.1}x", a / b) } else { "-".to_string() }
}
