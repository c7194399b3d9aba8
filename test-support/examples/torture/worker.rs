//! A worker process: its own `Client` under a stable identity (`host-<n>`, given the way a pod
//! would give it: the environment variable `REDIS_BREAKER_REPORTER_ID`), calling every breaker in
//! a loop and writing each decision to its file before the next call. SIGTERM ends it cleanly
//! (flush and shutdown); the nemesis may also SIGKILL it and start it again.

use crate::downstream::Caller;
use crate::history::{Decision, now_ms};
use crate::setup;
use redis_breaker::{Breaker, Client, StoreStatus};
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub(crate) struct Spec {
    pub(crate) id: usize,
    pub(crate) topology: String,
    pub(crate) urls: Vec<String>,
    pub(crate) downstream: u16,
    pub(crate) history: std::path::PathBuf,
}

impl Spec {
    pub(crate) fn to_args(&self) -> Vec<String> {
        vec![
            "--worker".into(),
            self.id.to_string(),
            self.topology.clone(),
            self.urls.join(","),
            self.downstream.to_string(),
            self.history.display().to_string(),
        ]
    }

    fn from_args(args: &[String]) -> Result<Spec, String> {
        let [id, topology, urls, downstream, history] = args else {
            return Err("a worker takes: ID TOPOLOGY URLS DOWNSTREAM_PORT HISTORY_FILE".into());
        };
        Ok(Spec {
            id: id.parse().map_err(|_| "bad worker id")?,
            topology: topology.clone(),
            urls: urls.split(',').map(String::from).collect(),
            downstream: downstream.parse().map_err(|_| "bad downstream port")?,
            history: history.into(),
        })
    }
}

pub(crate) fn main(args: &[String]) -> i32 {
    let spec = match Spec::from_args(args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("torture worker: {e}");
            return 2;
        }
    };
    if let Ok(level) = std::env::var("TORTURE_LOG") {
        log_to_stderr(&level);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("torture worker: no runtime: {e}");
            return 2;
        }
    };
    runtime.block_on(work(spec))
}

/// `TORTURE_LOG=debug` (or `info`, `trace`; `info/debug` for the library at info and the redis
/// client at debug): the worker writes the library's tracing and the redis client's log records
/// to its `worker-<n>.stderr`, each line led by the Unix time in milliseconds (the history
/// files' time base), to read beside a kept history.
fn log_to_stderr(levels: &str) {
    use tracing_subscriber::filter::LevelFilter;
    let (ours, redis) = levels.split_once('/').unwrap_or((levels, levels));
    let tracing_level = match ours {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        _ => LevelFilter::INFO,
    };
    let log_level = match redis {
        "trace" => log::LevelFilter::Trace,
        "debug" => log::LevelFilter::Debug,
        _ => log::LevelFilter::Info,
    };
    struct Stamp;
    impl tracing_subscriber::fmt::time::FormatTime for Stamp {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            write!(w, "{:.3}", now_ms())
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_level)
        .with_timer(Stamp)
        .try_init();
    struct RedisLog(log::LevelFilter);
    impl log::Log for RedisLog {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= self.0
        }
        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                eprintln!("{:.3} {:>5} {}: {}", now_ms(), record.level(), record.target(), record.args());
            }
        }
        fn flush(&self) {}
    }
    if log::set_boxed_logger(Box::new(RedisLog(log_level))).is_ok() {
        log::set_max_level(log_level);
    }
}

async fn connect(spec: &Spec) -> Result<Client, String> {
    let config = setup::client_config();
    let urls: Vec<&str> = spec.urls.iter().map(String::as_str).collect();
    match spec.topology.as_str() {
        "sentinel" => Client::connect_sentinel(&urls, "mymaster", config).await,
        "cluster" => Client::connect_cluster(&urls, config).await,
        _ => Client::connect_with(urls[0], config).await,
    }
    .map_err(|e| e.to_string())
}

async fn work(spec: Spec) -> i32 {
    let client = match connect(&spec).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("torture worker {}: {e}", spec.id);
            return 2;
        }
    };
    let file = match std::fs::OpenOptions::new().create(true).append(true).open(&spec.history) {
        Ok(f) => Arc::new(std::sync::Mutex::new(f)),
        Err(e) => {
            eprintln!("torture worker {}: {}: {e}", spec.id, spec.history.display());
            return 2;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for (name, _, _) in setup::BREAKERS {
        let breaker = match client.breaker(name, setup::breaker_config(name)) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("torture worker {}: breaker {name}: {e}", spec.id);
                return 2;
            }
        };
        let caller = Caller::new(spec.downstream, spec.id);
        loops.push(tokio::spawn(call_loop(spec.id, client.clone(), breaker, caller, file.clone(), stop.clone())));
    }
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("torture worker {}: no SIGTERM handler: {e}", spec.id);
            return 2;
        }
    };
    // A worker whose harness died (SIGKILL) goes too: it would call and write forever.
    let parent = std::os::unix::process::parent_id();
    let orphaned = async {
        while std::os::unix::process::parent_id() == parent {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = orphaned => std::process::exit(3),
    }
    stop.store(true, Ordering::SeqCst);
    for l in loops {
        let _ = l.await;
    }
    // A clean stop sends what is pending (and withdraws this process's reports).
    if let Err(e) = client.shutdown().await {
        eprintln!("torture worker {}: shutdown: {e}", spec.id);
    }
    0
}

/// Calls one breaker until told to stop. The quorum breaker is named again for each call, as a
/// request handler would, and a call its own breaker rejected backs off for the time left (up
/// to 400ms): between calls no handle is held, so the client may evict it.
async fn call_loop(
    w: usize,
    client: Client,
    held: Breaker,
    mut caller: Caller,
    file: Arc<std::sync::Mutex<std::fs::File>>,
    stop: Arc<AtomicBool>,
) {
    let pid = std::process::id();
    let mut rng_state = (pid as u64) << 16 | w as u64;
    let per_call = held.name() == "quorum";
    let (name, config) = (held.name().to_string(), held.config().clone());
    // Named again for each call, the breaker's handle is not kept between calls.
    let held = if per_call { None } else { Some(held) };
    while !stop.load(Ordering::SeqCst) {
        let breaker = match &held {
            Some(b) => b.clone(),
            None => match client.breaker(&name, config.clone()) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("torture worker {w}: {e}");
                    return;
                }
            },
        };
        let before = breaker.snapshot();
        let sub = client.events_subscribed();
        let t0 = now_ms();
        let acquired = breaker.acquire().await;
        let t1 = now_ms();
        // Decided by Redis's state: the store counted up, and not granted by this process
        // alone (the first acquire that meets an outage is decided by the degraded mode before
        // the client counts Redis down).
        let redis = client.store_status() == StoreStatus::Redis && !acquired.as_ref().is_ok_and(|p| p.is_local());
        let snap = breaker.snapshot();
        let mut d = Decision {
            w,
            pid,
            b: breaker.name().to_string(),
            t0,
            t1,
            t2: t1,
            t3: t1,
            d: "reject".into(),
            o: String::new(),
            own: false,
            ra: 0.0,
            st0: before.state.as_str().to_string(),
            ep0: before.epoch,
            fresh0: before.fresh,
            sub,
            st: snap.state.as_str().to_string(),
            inc: snap.incarnation,
            ep: snap.epoch,
            redis,
        };
        match acquired {
            Ok(permit) => {
                d.d = if permit.is_probe() { "probe" } else { "admit" }.into();
                let called = tokio::time::timeout(setup::CALL_TIMEOUT, caller.call()).await;
                d.t2 = now_ms();
                match called {
                    Ok(Ok(true)) => {
                        d.o = "ok".into();
                        permit.success().await;
                    }
                    Ok(_) => {
                        d.o = "fail".into();
                        permit.failure().await;
                    }
                    Err(_) => {
                        // The connection was dropped with the call: the next call makes another.
                        d.o = "timeout".into();
                        permit.failure().await;
                    }
                }
                d.t3 = now_ms();
            }
            Err(rejected) => {
                d.own = rejected.own;
                d.ra = rejected.retry_after().map_or(0.0, |r| r.as_secs_f64() * 1000.0);
            }
        }
        if let Ok(line) = serde_json::to_string(&d)
            && let Ok(mut f) = file.lock()
        {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
        // About 80 calls a second per breaker, spread so that workers do not beat in step.
        rng_state = rng_state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut pause = 8 + (rng_state >> 60);
        if per_call && d.own {
            pause += (d.ra as u64).min(400);
        }
        drop(breaker);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}
