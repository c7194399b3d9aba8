//! One run: the topology, the proxies, the downstream, the workers (`workers.rs`), the
//! collectors (`collect.rs`), and the nemesis (`nemesis.rs`) applying a schedule of faults drawn
//! from the seed; then the checker.

use crate::Args;
use crate::check::{self, Summary};
use crate::collect::{Ports, collect_history, collect_samples, collect_ttls, metrics};
use crate::downstream::Downstream;
use crate::faults::{FaultKind, schedule};
use crate::history::{Collected, now_ms};
use crate::nemesis::Nemesis;
use crate::proxy::Proxy;
use crate::setup;
use crate::topology::{self, Kind, Topology};
use crate::worker::Spec;
use crate::workers::Workers;
use redis_breaker::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
