//! One run: the topology, the proxies, the downstream, the workers, the collectors, and the
//! nemesis applying a schedule of faults drawn from the seed; then the checker.

use crate::Args;
use crate::check::{self, Summary};
use crate::downstream::{Downstream, Health};
use crate::faults::{Fault, FaultKind, schedule};
use crate::history::{Collected, Immortal, Sample, Transition, now_ms};
use crate::proxy::Proxy;
use crate::setup;
use crate::topology::{self, Kind, Topology, conn};
use crate::worker::Spec;
use redis_breaker::{Client, redis};
use redis_breaker_test_support::line_field;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The worker processes; every one still running is killed on drop.
struct Workers {
    specs: Vec<Spec>,
    children: Vec<Option<Child>>,
    exe: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Workers {
    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.stderr")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .args(self.specs[i].to_args())
            .env("REDIS_BREAKER_REPORTER_ID", format!("host-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("a worker: {e}"))?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to each, then waits; answers the workers that did not stop within 15s or that
    /// exited with an error.
    async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for (i, slot) in self.children.iter_mut().enumerate() {
            let Some(mut c) = slot.take() else { continue };
            let started = std::time::Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        problems.push(format!("worker {i} exited with {status}"));
                        break;
                    }
                    Ok(None) if started.elapsed() > Duration::from_secs(15) => {
                        problems.push(format!("worker {i} did not stop within 15s of SIGTERM"));
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        problems
    }
}

/// Where the collectors find the data: the data nodes' ports, and the sentinels' for the
/// primary.
#[derive(Clone)]
struct Ports {
    kind: Kind,
    nodes: Vec<u16>,
    sentinels: Vec<u16>,
}

impl Ports {
    async fn primaries(&self) -> Vec<u16> {
        match self.kind {
            Kind::Sentinel => {
                for s in &self.sentinels {
                    let Ok(mut c) = conn(*s).await else { continue };
                    let a: Result<Vec<String>, _> = redis::cmd("SENTINEL")
                        .arg(&["get-master-addr-by-name", "mymaster"][..])
                        .query_async(&mut c)
                        .await;
                    if let Some(p) = a.ok().and_then(|a| a.get(1).and_then(|p| p.parse().ok())) {
                        return vec![p];
                    }
                }
                Vec::new()
            }
            _ => self.nodes.clone(),
        }
    }

    /// Runs a command on the node holding `key` (the one that does not answer MOVED).
    async fn on_key<T: redis::FromRedisValue>(&self, key: &str, cmd: &redis::Cmd) -> Result<T, String> {
        let mut last = String::from("no node answered");
        for p in self.primaries().await {
            let Ok(mut c) = conn(p).await else { continue };
            match cmd.query_async::<T>(&mut c).await {
                Ok(v) => return Ok(v),
                Err(e) => last = format!("{key} on {p}: {e}"),
            }
        }
        Err(last)
    }
}

fn key(b: &str, suffix: &str) -> String {
    format!("{}:{{{b}}}:{suffix}", setup::PREFIX)
}

async fn collect_history(ports: &Ports, out: &Mutex<Collected>) {
    for (b, _, _) in setup::BREAKERS {
        let k = key(b, "history");
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(&k).arg("-").arg("+");
        let Ok(entries) = ports.on_key::<Vec<(String, HashMap<String, String>)>>(&k, &cmd).await else { continue };
        let mut c = out.lock().unwrap_or_else(|p| p.into_inner());
        for (id, f) in entries {
            let get = |n: &str| f.get(n).cloned().unwrap_or_default();
            c.transitions.entry((b.to_string(), id.clone())).or_insert_with(|| Transition {
                b: b.to_string(),
                id,
                at: get("time").parse().unwrap_or(0.0),
                from: get("from"),
                to: get("to"),
                epoch: get("epoch").parse().unwrap_or(0),
                reason: get("reason"),
                origin: get("origin"),
            });
        }
    }
}

async fn collect_samples(ports: &Ports, out: &Mutex<Collected>) {
    for (b, _, _) in setup::BREAKERS {
        let k = key(b, "state");
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&k).arg(&["incarnation", "epoch"][..]);
        let at = now_ms();
        if let Ok(v) = ports.on_key::<Vec<Option<String>>>(&k, &cmd).await {
            let inc = v.first().cloned().flatten().and_then(|s| s.parse().ok());
            let epoch = v.get(1).cloned().flatten().and_then(|s| s.parse().ok()).unwrap_or(0);
            out.lock().unwrap_or_else(|p| p.into_inner()).samples.push(Sample { b: b.to_string(), at, inc, epoch });
        }
    }
}

async fn collect_ttls(ports: &Ports, out: &Mutex<Collected>) {
    for p in ports.primaries().await {
        let Ok(mut c) = conn(p).await else { continue };
        let keys: Vec<String> = match redis::cmd("KEYS").arg(format!("{}:*", setup::PREFIX)).query_async(&mut c).await {
            Ok(k) => k,
            Err(_) => continue,
        };
        for k in keys {
            let at = now_ms();
            let ttl: i64 = redis::cmd("PTTL").arg(&k).query_async(&mut c).await.unwrap_or(-2);
            if ttl != -1 {
                continue;
            }
            // A state forced with no duration keeps its keys until reset (the contract).
            let state_key = match k.rfind(':') {
                Some(i) => format!("{}:state", &k[..i]),
                None => continue,
            };
            let state: Option<String> =
                redis::cmd("HGET").arg(&state_key).arg("state").query_async(&mut c).await.unwrap_or(None);
            let state = state.unwrap_or_default();
            out.lock().unwrap_or_else(|p| p.into_inner()).immortals.push(Immortal { at, key: k, state });
        }
    }
}

async fn metrics(ports: &Ports) -> HashMap<String, HashMap<String, u64>> {
    let mut all = HashMap::new();
    for (b, _, _) in setup::BREAKERS {
        let k = key(b, "metrics");
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&k);
        let m: HashMap<String, u64> = ports.on_key(&k, &cmd).await.unwrap_or_default();
        all.insert(b.to_string(), m);
    }
    all
}

pub(crate) async fn run_one(kind: Kind, seed: u64, args: &Args) -> Result<Summary, String> {
    let root = std::env::temp_dir().join(format!("redis-breaker-torture-{}-{}", std::process::id(), kind.as_str()));
    std::fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    // Removed however the run ends (declared first: dropped after everything that uses it).
    let _root_guard = RemoveOnDrop(root.clone());
    let plan = schedule(kind, seed, args.seconds, args.workers, args.only.as_deref())?;
    println!("== torture {}: seed={seed} seconds={} workers={}", kind.as_str(), args.seconds, args.workers);
    for f in &plan {
        println!("   schedule: {}", f.describe());
    }
    let mut topo = Topology::start(kind, root.join("servers")).await?;
    let downstream = Downstream::start(args.workers).await.map_err(|e| e.to_string())?;
    let mut proxies = Vec::new();
    if kind == Kind::Single {
        for _ in 0..args.workers {
            proxies.push(Proxy::start(topo.nodes[0].port).await.map_err(|e| e.to_string())?);
        }
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut workers = Workers { specs: Vec::new(), children: Vec::new(), exe, dir: root.clone() };
    for i in 0..args.workers {
        workers.specs.push(Spec {
            id: i,
            topology: kind.as_str().into(),
            urls: topo.client_urls(proxies.get(i).map(|p| p.port), None),
            downstream: downstream.port,
            history: root.join(format!("worker-{i}.jsonl")),
        });
        workers.children.push(None);
        workers.spawn(i)?;
    }
    let operator = operator_client(&topo, None).await?;
    // Operators write through the CLI where it is built and the topology is one URL (it takes
    // no cluster or sentinel list), else through the library's API.
    let built = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("redis-breaker")))
        .filter(|p| p.is_file());
    let cli = built.clone().filter(|_| kind == Kind::Single);
    match (&cli, &built) {
        (Some(p), _) => println!("   operator writes: through the CLI ({})", p.display()),
        (None, Some(_)) => println!("   operator writes: through the library's API (the CLI takes one URL)"),
        (None, None) => {
            println!("   operator writes: through the library's API (no CLI built: cargo build -p redis-breaker-cli)")
        }
    }
    let no_publish = match kind {
        Kind::Sentinel => None,
        _ => Some(operator_client(&topo, Some((topology::NO_PUBLISH_USER, topology::NO_PUBLISH_PASS))).await?),
    };

    let ports = Ports {
        kind,
        nodes: topo.nodes.iter().map(|n| n.port).collect(),
        sentinels: topo.sentinels.iter().map(|n| n.port).collect(),
    };
    let collected = Arc::new(Mutex::new(Collected::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collectors = {
        let (ports, out, stop) = (ports.clone(), collected.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = 0u64;
            let mut primary = None;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if ports.kind == Kind::Sentinel
                    && let Some(&now) = ports.primaries().await.first()
                {
                    if let Some(before) = primary.filter(|p| *p != now) {
                        out.lock().unwrap_or_else(|p| p.into_inner()).switches.push((now_ms(), before, now));
                    }
                    primary = Some(now);
                }
                collect_samples(&ports, &out).await;
                if tick.is_multiple_of(3) {
                    collect_history(&ports, &out).await;
                }
                if tick.is_multiple_of(10) {
                    collect_ttls(&ports, &out).await;
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let t0 = now_ms();
    let mut faults = plan;
    // Start and end actions in time order.
    let mut actions: Vec<(f64, usize, bool)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        actions.push((f.at, i, true));
        actions.push((f.at + f.lasts, i, false));
        if f.kind == FaultKind::Rollback {
            // The state it rolls back to is saved a moment before.
            actions.push(((f.at - 1.5).max(0.5), i, true));
        }
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.2.cmp(&a.2)));
    let mut checkpointed = vec![false; faults.len()];
    let mut nemesis = Nemesis {
        cli,
        topo: &mut topo,
        proxies: &proxies,
        downstream: &downstream,
        workers: &mut workers,
        failing: None,
    };
    for (at, i, start) in actions {
        let wait = t0 + at * 1000.0 - now_ms();
        if wait > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(wait / 1000.0)).await;
        }
        let f = &mut faults[i];
        if f.kind == FaultKind::Rollback && start && !checkpointed[i] {
            checkpointed[i] = true;
            let port = nemesis.topo.nodes[0].port;
            if let Some(n) = nemesis.topo.node_by_port(port) {
                match n.checkpoint().await {
                    Ok(()) => f.restore_point = Some(now_ms()),
                    Err(e) => f.detail = format!("no checkpoint: {e}"),
                }
            }
            continue;
        }
        if start {
            if f.kind.loses_data() || matches!(f.kind, FaultKind::DeleteKeys | FaultKind::PoisonKey) {
                // What is about to be lost is read first.
                collect_history(&ports, &collected).await;
            }
            f.start = now_ms();
            nemesis.begin(f, &operator, no_publish.as_ref()).await;
        } else {
            nemesis.finish(f).await;
            f.end = now_ms();
        }
    }
    // Quiet: every fault healed; the workers settle, then stop cleanly and flush.
    nemesis.heal().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop_problems = workers.stop().await;
    let _ = operator.shutdown().await;
    if let Some(c) = &no_publish {
        let _ = c.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = collectors.await;
    collect_history(&ports, &collected).await;
    let metrics = metrics(&ports).await;
    let run_end = now_ms();

    let mut decisions = Vec::new();
    let mut panics = Vec::new();
    for i in 0..args.workers {
        decisions.extend(crate::history::read_decisions(&root.join(format!("worker-{i}.jsonl"))));
        let err = std::fs::read_to_string(root.join(format!("worker-{i}.stderr"))).unwrap_or_default();
        for l in err.lines().filter(|l| l.contains("panicked")) {
            panics.push(format!("worker {i}: {l}"));
        }
    }
    let collected = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
    let input = check::Input {
        kind,
        seed,
        t0,
        run_end,
        faults: &faults,
        decisions: &decisions,
        collected: &collected,
        metrics: &metrics,
        problems: stop_problems.into_iter().chain(panics).collect(),
    };
    let summary = check::check(&input);
    if let Some(dir) = &args.keep {
        let to = dir.join(kind.as_str());
        let copied = std::fs::create_dir_all(&to).and_then(|()| {
            for i in 0..args.workers {
                std::fs::copy(root.join(format!("worker-{i}.jsonl")), to.join(format!("worker-{i}.jsonl")))?;
                let _ = std::fs::copy(root.join(format!("worker-{i}.stderr")), to.join(format!("worker-{i}.stderr")));
            }
            // The servers' own logs (a sentinel's tells each failover it started, and why).
            for n in topo.nodes.iter().chain(&topo.sentinels) {
                let _ = std::fs::copy(n.dir.join("server.out"), to.join(format!("server-{}.out", n.port)));
            }
            Ok(())
        });
        match copied {
            Ok(()) => println!("   histories kept in {}", to.display()),
            Err(e) => println!("   histories not kept: {}: {e}", to.display()),
        }
    }
    Ok(summary)
}

/// A directory removed on drop.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn operator_client(topo: &Topology, user: Option<(&str, &str)>) -> Result<Client, String> {
    let config = redis_breaker::ClientConfig::builder()
        .prefix(setup::PREFIX)
        .client_id(if user.is_some() { "operator-nopub" } else { "operator" })
        .build()
        .map_err(|e| e.to_string())?;
    let urls = topo.client_urls(None, user);
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    match topo.kind {
        Kind::Single => Client::connect_with(refs[0], config).await,
        Kind::Sentinel => Client::connect_sentinel(&refs, "mymaster", config).await,
        Kind::Cluster => Client::connect_cluster(&refs, config).await,
    }
    .map_err(|e| e.to_string())
}

struct Nemesis<'a> {
    /// The `redis-breaker` binary, when operators write through it.
    cli: Option<std::path::PathBuf>,
    topo: &'a mut Topology,
    proxies: &'a [Proxy],
    downstream: &'a Downstream,
    workers: &'a mut Workers,
    /// The worker whose downstream fails alone now, if any.
    failing: Option<usize>,
}

impl Nemesis<'_> {
    async fn data_ports(&self) -> Vec<u16> {
        match self.topo.kind {
            Kind::Sentinel => self.topo.primary_port().await.into_iter().collect(),
            _ => self.topo.nodes.iter().map(|n| n.port).collect(),
        }
    }

    async fn on_all(&self, cmd: &[&str]) {
        for p in self.data_ports().await {
            let _ = topology::info_cmd(p, cmd).await;
        }
    }

    /// Kills the clients' pub/sub connections on every data node, not the sentinels' own (a
    /// sentinel whose link to the primary drops counts the time since the primary's last
    /// PING reply, up to a ping period, toward `down-after-milliseconds`: killing its links
    /// made the sentinels fail over by themselves, seed 1002616, a loss no fault recorded).
    async fn kill_subscribers(&self) {
        for p in self.data_ports().await {
            let Ok(mut c) = conn(p).await else { continue };
            let list: String =
                redis::cmd("CLIENT").arg(&["LIST", "TYPE", "pubsub"][..]).query_async(&mut c).await.unwrap_or_default();
            for line in list.lines().filter(|l| !line_field(l, "name").starts_with("sentinel-")) {
                let _: redis::RedisResult<i64> =
                    redis::cmd("CLIENT").arg("KILL").arg("ID").arg(line_field(line, "id")).query_async(&mut c).await;
            }
        }
    }

    async fn begin(&mut self, f: &mut Fault, operator: &Client, no_publish: Option<&Client>) {
        let breaker = setup::BREAKERS[f.target % setup::BREAKERS.len()].0;
        match f.kind {
            FaultKind::KillRestart | FaultKind::Rollback | FaultKind::Pause => {
                let port = match self.topo.kind {
                    Kind::Cluster => self.topo.nodes[f.target % 3].port,
                    _ => self.topo.primary_port().await.unwrap_or(self.topo.nodes[0].port),
                };
                f.detail = format!("node {port}");
                if f.kind != FaultKind::Pause {
                    f.lost = self.breakers_on(port).await;
                }
                if let Some(n) = self.topo.node_by_port(port) {
                    if f.kind == FaultKind::Pause {
                        n.pause()
                    } else {
                        n.kill();
                        let dead = now_ms();
                        f.dead_at = Some(dead);
                        f.detail.push_str(&format!(", dead {:.0}ms after the fault began", dead - f.start));
                    }
                }
            }
            FaultKind::Failover => {
                f.lost = setup::BREAKERS.iter().map(|b| b.0.to_string()).collect();
                f.restore_point = Some(f.start);
                let before = self.topo.primary_port().await;
                if let Some(s) = self.topo.sentinels.first() {
                    let r = topology::info_cmd(s.port, &["SENTINEL", "FAILOVER", "mymaster"]).await;
                    f.detail = format!("from {before:?}: {}", if r.is_some() { "started" } else { "refused" });
                }
                let topo = &*self.topo;
                let _ = topology::wait_for(Duration::from_secs(10), "the failover", async || {
                    topo.primary_port().await != before
                })
                .await;
                f.target = usize::from(before.unwrap_or(0));
            }
            FaultKind::SlotMigration => f.detail = self.migrate(setup::BREAKERS[f.target % 3].0).await,
            FaultKind::Blackhole => self.proxy(f.target).map(|p| p.blackhole(true)).unwrap_or(()),
            FaultKind::Delay => {
                let ms = 20 + 60 * u64::from(f.variant);
                f.detail = format!("{ms}ms");
                self.proxy(f.target).map(|p| p.delay(ms)).unwrap_or(())
            }
            FaultKind::SilentSubscription => {
                self.proxy(f.target).map(|p| p.blackhole_subscriptions(true)).unwrap_or(())
            }
            FaultKind::PubsubKill => self.kill_subscribers().await,
            FaultKind::ScriptFlush => {
                self.on_all(&["SCRIPT", "FLUSH"]).await;
                self.on_all(&["FUNCTION", "FLUSH"]).await;
            }
            FaultKind::WorkerRestart => {
                // A crash loop is most often the bad host's: restart the failing one if any.
                if f.variant < 2
                    && let Some(w) = self.failing
                {
                    f.target = w;
                }
                self.workers.kill(f.target)
            }
            FaultKind::OperatorWrite if self.cli.is_some() => {
                let (ok, said) = self.cli_write(f, breaker, None).await;
                f.detail = format!("{breaker} via the CLI: {} {said}", if ok { "ok" } else { "failed" });
            }
            FaultKind::OperatorNoPublish if self.cli.is_some() => {
                let user = Some((topology::NO_PUBLISH_USER, topology::NO_PUBLISH_PASS));
                let (ok, said) = self.cli_write(f, breaker, user).await;
                // The CLI tells its operator by its exit status and a line on stderr.
                f.told = Some(!ok && !said.is_empty());
                let status = if ok { "exit 0" } else { "non-zero exit" };
                f.detail = format!("{breaker} via the CLI as {}: {status} {said}", topology::NO_PUBLISH_USER);
            }
            FaultKind::OperatorWrite => {
                let Ok(b) = operator.breaker(breaker, setup::breaker_config(breaker)) else { return };
                let note = format!("torture: operator {} #{}", f.variant, f.target);
                let lasts = Duration::from_secs_f64(f.lasts);
                let r = match f.variant {
                    0 => b.force_open_noted(Some(lasts), &note).await,
                    1 => b.force_close_noted(Some(lasts), &note).await,
                    _ => b.reset_noted(&note).await,
                };
                f.detail =
                    format!("{breaker}: {}", r.map(|s| s.state.as_str().to_string()).unwrap_or_else(|e| e.to_string()));
            }
            FaultKind::OperatorNoPublish => {
                let Some(c) = no_publish else { return };
                let Ok(b) = c.breaker(breaker, setup::breaker_config(breaker)) else { return };
                let r = b.force_open_noted(Some(Duration::from_secs_f64(f.lasts)), "torture: no PUBLISH right").await;
                f.told = Some(check::operator_told(&r));
                f.detail = format!("{breaker}: {r:?}");
            }
            FaultKind::DeleteKeys => {
                let (s, p) = (key(breaker, "state"), key(breaker, "probes"));
                let mut cmd = redis::cmd("DEL");
                cmd.arg(&s).arg(&p);
                let ports = self.ports();
                let r: Result<i64, String> = ports.on_key(&s, &cmd).await;
                f.detail = format!("{breaker}: {r:?}");
            }
            FaultKind::PoisonKey => {
                let s = key(breaker, "state");
                let ports = self.ports();
                let mut cmd = redis::cmd("EVAL");
                // Poisons only a key that exists (keeping its TTL): a key made here without one
                // would be the harness's, not the library's.
                cmd.arg(
                    "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end \
                     if ARGV[1] == '0' then redis.call('HSET', KEYS[1], 'state', 'exploded') \
                     elseif ARGV[1] == '1' then redis.call('HSET', KEYS[1], 'epoch', 'NaN', 'failures', '-x') \
                     else redis.call('HSET', KEYS[1], 'open_until', 'soon') end return 1",
                )
                .arg(1)
                .arg(&s)
                .arg(f.variant.to_string());
                let r: Result<i64, String> = ports.on_key(&s, &cmd).await;
                f.detail = format!("{breaker}: {r:?}");
            }
            FaultKind::DownstreamOne => {
                let h = if f.variant == 0 { Health::Hanging } else { Health::Failing };
                f.detail = format!("{h:?}");
                self.failing = Some(f.target);
                self.downstream.set(f.target, h);
            }
            FaultKind::DownstreamAll => {
                let h = if f.variant == 0 { Health::Hanging } else { Health::Failing };
                f.detail = format!("{h:?}");
                self.downstream.set_all(h);
            }
        }
    }

    async fn finish(&mut self, f: &mut Fault) {
        match f.kind {
            FaultKind::KillRestart | FaultKind::Rollback | FaultKind::Pause => {
                let port: u16 = f
                    .detail
                    .trim_start_matches("node ")
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let result = match self.topo.node_by_port(port) {
                    Some(n) if f.kind == FaultKind::Pause => {
                        n.resume();
                        Ok(())
                    }
                    Some(n) if f.kind == FaultKind::Rollback && f.restore_point.is_some() => {
                        n.restart_from_checkpoint()
                    }
                    Some(n) => n.restart_empty(),
                    None => Ok(()),
                };
                if let Err(e) = result {
                    f.detail.push_str(&format!("; restart failed: {e}"));
                }
                if f.kind != FaultKind::Pause {
                    if self.topo.kind == Kind::Cluster {
                        let _ = self.topo.wait_cluster_ok().await;
                    }
                    let _ = self.topo.add_no_publish_user().await;
                }
            }
            FaultKind::Failover => {
                // The old primary takes writes until the sentinels make it a replica (they wait
                // to see it claim the role for a while): the failover ends when it has synced
                // from the new one.
                let old = f.target as u16;
                let done =
                    topology::wait_for(Duration::from_secs(30), "the old primary to become a replica", async || {
                        topology::info_field(old, "replication", "master_link_status").await.as_deref() == Some("up")
                    })
                    .await;
                if let Err(e) = done {
                    f.detail.push_str(&format!("; {e}"));
                }
            }
            FaultKind::Blackhole => self.proxy(f.target).map(|p| p.blackhole(false)).unwrap_or(()),
            FaultKind::Delay => self.proxy(f.target).map(|p| p.delay(0)).unwrap_or(()),
            FaultKind::SilentSubscription => {
                self.proxy(f.target).map(|p| p.blackhole_subscriptions(false)).unwrap_or(())
            }
            FaultKind::WorkerRestart => {
                if let Err(e) = self.workers.spawn(f.target) {
                    f.detail = e;
                }
            }
            FaultKind::DownstreamOne => {
                self.failing = None;
                self.downstream.set(f.target, Health::Healthy)
            }
            FaultKind::DownstreamAll => self.downstream.set_all(Health::Healthy),
            _ => {}
        }
    }

    async fn heal(&mut self) {
        for p in self.proxies {
            p.blackhole(false);
            p.blackhole_subscriptions(false);
            p.delay(0);
        }
        self.downstream.set_all(Health::Healthy);
    }

    /// One operator's write through the CLI: open (variant 0, and always for a user who may
    /// not publish), close or reset, with a note; answers whether it exited 0 and what it said
    /// on stderr.
    async fn cli_write(&self, f: &Fault, breaker: &str, user: Option<(&str, &str)>) -> (bool, String) {
        let Some(cli) = &self.cli else { return (false, String::new()) };
        let url = self.topo.client_urls(None, user).remove(0);
        let lasts = format!("{}ms", (f.lasts * 1000.0) as u64);
        let note = format!("torture: operator {} #{}", f.variant, f.target);
        let verb = if user.is_some() { 0 } else { f.variant };
        let mut cmd = tokio::process::Command::new(cli);
        cmd.args(["--url", &url, "--prefix", setup::PREFIX]);
        match verb {
            0 => cmd.args(["open", breaker, "--for", &lasts, "--note", &note]),
            1 => cmd.args(["close", breaker, "--for", &lasts, "--note", &note]),
            _ => cmd.args(["reset", breaker, "--note", &note]),
        };
        match cmd.stdin(Stdio::null()).output().await {
            Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stderr).trim().replace('\n', " | ")),
            Err(e) => (false, format!("could not run the CLI: {e}")),
        }
    }

    fn proxy(&self, worker: usize) -> Option<&Proxy> {
        self.proxies.get(worker)
    }

    fn ports(&self) -> Ports {
        Ports {
            kind: self.topo.kind,
            nodes: self.topo.nodes.iter().map(|n| n.port).collect(),
            sentinels: self.topo.sentinels.iter().map(|n| n.port).collect(),
        }
    }

    /// The breakers whose keys the data node on `port` holds.
    async fn breakers_on(&self, port: u16) -> Vec<String> {
        let all = || setup::BREAKERS.iter().map(|b| b.0.to_string()).collect();
        if self.topo.kind != Kind::Cluster {
            return all();
        }
        let ports: Vec<u16> = self.topo.nodes.iter().map(|n| n.port).collect();
        let mut held = Vec::new();
        for (b, _, _) in setup::BREAKERS {
            match slot_owner(&ports, &key(b, "state")).await {
                Ok((_, masters)) if masters.iter().any(|m| m.2 && m.1 != port) => {}
                _ => held.push(b.to_string()),
            }
        }
        held
    }

    /// Moves the slot of `breaker`'s keys to another master, keys and all.
    async fn migrate(&self, breaker: &str) -> String {
        match migrate_slot(&self.topo.nodes.iter().map(|n| n.port).collect::<Vec<_>>(), &key(breaker, "state")).await {
            Ok(d) => format!("{breaker}: {d}"),
            Err(e) => format!("{breaker}: migration failed: {e}"),
        }
    }
}

/// The slot of `key` and the masters: id, port, and whether it serves the slot.
async fn slot_owner(ports: &[u16], key: &str) -> Result<(u16, Vec<(String, u16, bool)>), String> {
    let mut last = String::from("no node answered");
    for p in ports {
        let Ok(mut c) = conn(*p).await else { continue };
        let slot: u16 = match redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut c).await {
            Ok(s) => s,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let nodes: String = match redis::cmd("CLUSTER").arg("NODES").query_async(&mut c).await {
            Ok(n) => n,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let mut masters = Vec::new();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 || !f[2].contains("master") {
                continue;
            }
            let port = f[1].split(['@', ':']).nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
            let serves = f[8..].iter().any(|r| {
                let mut it = r.split('-');
                match (it.next().and_then(|a| a.parse::<u16>().ok()), it.next()) {
                    (Some(a), Some(b)) => b.parse::<u16>().is_ok_and(|b| (a..=b).contains(&slot)),
                    (Some(a), None) => a == slot,
                    _ => false,
                }
            });
            masters.push((f[0].to_string(), port, serves));
        }
        return Ok((slot, masters));
    }
    Err(last)
}

async fn migrate_slot(ports: &[u16], key: &str) -> Result<String, String> {
    let (slot, masters) = slot_owner(ports, key).await?;
    let src = masters.iter().find(|m| m.2).cloned().ok_or("no owner of the slot")?;
    let dst = masters.iter().find(|m| !m.2).cloned().ok_or("no other master")?;
    let mut s = conn(src.1).await?;
    let mut d = conn(dst.1).await?;
    let q = |c: &mut redis::aio::MultiplexedConnection, args: Vec<String>| {
        let mut cmd = redis::cmd(&args[0]);
        cmd.arg(&args[1..]);
        let mut c = c.clone();
        async move { cmd.query_async::<redis::Value>(&mut c).await.map_err(|e| e.to_string()) }
    };
    let sl = slot.to_string();
    q(&mut d, vec!["CLUSTER".into(), "SETSLOT".into(), sl.clone(), "IMPORTING".into(), src.0.clone()]).await?;
    q(&mut s, vec!["CLUSTER".into(), "SETSLOT".into(), sl.clone(), "MIGRATING".into(), dst.0.clone()]).await?;
    let mut moved = 0;
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg(&["GETKEYSINSLOT", &sl, "100"][..])
            .query_async(&mut s)
            .await
            .map_err(|e| e.to_string())?;
        if keys.is_empty() {
            break;
        }
        moved += keys.len();
        let mut m = redis::cmd("MIGRATE");
        m.arg(&["127.0.0.1", &dst.1.to_string(), "", "0", "5000", "REPLACE", "KEYS"][..]).arg(&keys);
        m.query_async::<redis::Value>(&mut s).await.map_err(|e| e.to_string())?;
    }
    for p in ports {
        let mut c = conn(*p).await?;
        q(&mut c, vec!["CLUSTER".into(), "SETSLOT".into(), sl.clone(), "NODE".into(), dst.0.clone()]).await?;
    }
    Ok(format!("slot {slot}: {} -> {} ({moved} keys)", src.1, dst.1))
}
