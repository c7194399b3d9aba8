//! `redis-breaker serve`: the operator console. One web page, a JSON API, Server-Sent Events of
//! the transitions and a Prometheus endpoint for every breaker under the prefix, built on the
//! library's public API and the Redis keys alone.
//!
//! Safety: it listens on loopback unless told otherwise; every write needs the bearer token
//! (compared in constant time), and with no token the console is read-only; no cookies and no
//! CORS headers; breaker names are text on the page, never markup; the page loads nothing from
//! elsewhere and is served with a strict Content-Security-Policy.

mod alerts;
mod hosts;
mod metrics;
#[allow(dead_code)] // Until the notifier is wired into `serve`.
mod notify;
mod respond;
mod routes;

use crate::Failure;
use alerts::now_ms;
use futures_util::StreamExt;
use redis_breaker::status::Status;
use redis_breaker::{Client, StoreError};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. The default is loopback only; any other address lets that
    /// network read every breaker (and, with the token, stop a fleet's traffic).
    #[arg(long, default_value = "127.0.0.1:9187")]
    listen: SocketAddr,
    /// A file holding the bearer token that writes (open, close, reset) need; else
    /// $REDIS_BREAKER_TOKEN. Without either the console is read-only. At least 16 bytes.
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
    /// Reads need the token too (the page asks for it).
    #[arg(long)]
    auth_reads: bool,
    /// Alert on a breaker open (or forced open) for longer than this.
    #[arg(long, default_value = "5m", value_parser = crate::duration)]
    alert_open: Duration,
    /// Alert on a breaker that opened more than this many times in the last hour (flapping).
    #[arg(long, default_value_t = 5)]
    alert_flaps: u64,
    /// How often the console samples every breaker's metrics hash for the page's charts (it
    /// keeps an hour of samples in memory).
    #[arg(long, default_value = "1m", value_parser = crate::duration, hide = true)]
    sample_every: Duration,
    /// A Host the console also answers (repeatable): a name (any port), e.g.
    /// console.example.com, or name:port. On a loopback address the console answers only the
    /// Host values 127.0.0.1, localhost and ::1 (any port) and these, so that a web page
    /// whose name rebinds to 127.0.0.1 (DNS rebinding) cannot read it: any other Host gets 421
    /// Misdirected Request, an HTTP/1.1 request without one 400. On another address, without
    /// this option any Host is answered; with it, only loopback names, the listen address and
    /// these.
    #[arg(long = "allowed-host", value_name = "HOST[:PORT]", value_parser = hosts::parse_allowed)]
    allowed_host: Vec<hosts::HostName>,
}

/// One sample of a breaker's cumulative counters.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    at_ms: u64,
    calls: u64,
    failures: u64,
    rejected: u64,
}

/// What every request shares.
struct App {
    client: Client,
    token: Option<Vec<u8>>,
    auth_reads: bool,
    alert_open: Duration,
    alert_flaps: u64,
    /// An hour of samples per breaker, oldest first.
    samples: std::sync::Mutex<HashMap<String, VecDeque<Sample>>>,
    /// How many samples make an hour.
    samples_kept: usize,
    /// The names under the prefix that cannot be breakers and were logged: each is logged
    /// once (while its key exists).
    warned: std::sync::Mutex<HashSet<String>>,
}

/// Breakers read from Redis at once (each a script call on one multiplexed connection, so the
/// reads of a scrape travel pipelined).
const READS_IN_FLIGHT: usize = 64;
/// History entries read per breaker (Redis keeps about 100).
const HISTORY_READ: usize = 100;
/// The shortest token accepted.
const TOKEN_MIN: usize = 16;

pub(crate) async fn serve(client: Client, args: &ServeArgs) -> Result<ExitCode, Failure> {
    let token = token(args)?;
    if args.auth_reads && token.is_none() {
        return Err(Failure::Usage("--auth-reads needs a token (--token-file or $REDIS_BREAKER_TOKEN)".into()));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let scope = if args.listen.ip().is_loopback() {
        "loopback only".to_string()
    } else {
        format!("reachable from the network at {}: put it behind a proxy that authenticates", args.listen.ip())
    };
    let writes = if token.is_some() { "writes need the token" } else { "read-only: no token" };
    let hosts = hosts::Hosts::new(args.listen.ip(), &args.allowed_host);
    let answered = if hosts.any() { "; any Host header is answered: --allowed-host restricts it" } else { "" };
    eprintln!(
        "redis-breaker: console on http://{} ({scope}; {writes}{answered})",
        listener.local_addr().unwrap_or(args.listen)
    );
    let app = Arc::new(App {
        client,
        token,
        auth_reads: args.auth_reads,
        alert_open: args.alert_open,
        alert_flaps: args.alert_flaps,
        samples: std::sync::Mutex::new(HashMap::new()),
        samples_kept: usize::try_from(3600 / args.sample_every.as_secs().max(1)).unwrap_or(60) + 1,
        warned: std::sync::Mutex::new(HashSet::new()),
    });
    tokio::spawn(sample_loop(Arc::downgrade(&app), args.sample_every.max(Duration::from_millis(100))));
    let router = routes::router(app, hosts);
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        });
    server.await.map_err(|e| Failure::Other(format!("the console stopped: {e}")))?;
    Ok(ExitCode::SUCCESS)
}

/// The token from --token-file, else $REDIS_BREAKER_TOKEN, trimmed of surrounding whitespace.
fn token(args: &ServeArgs) -> Result<Option<Vec<u8>>, Failure> {
    let text = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("cannot read the token file {}: {e}", path.display())))?,
        ),
        None => std::env::var("REDIS_BREAKER_TOKEN").ok(),
    };
    let Some(text) = text else { return Ok(None) };
    let token = text.trim();
    if token.len() < TOKEN_MIN {
        return Err(Failure::Usage(format!("the token must be at least {TOKEN_MIN} bytes")));
    }
    Ok(Some(token.as_bytes().to_vec()))
}

/// Every breaker's status, read concurrently; sorted open and half-open first, then by name.
/// With them, the names under the prefix that cannot be breakers: skipped, and each logged
/// once.
async fn statuses(app: &App) -> Result<(Vec<Status>, Vec<String>), StoreError> {
    let crate::Listing { names, skipped } = crate::listing(&app.client).await?;
    warn_once(app, &skipped);
    let reads = futures_util::stream::iter(names).map(|name| async move {
        let b = app.client.breaker(&name, redis_breaker::Config::default())?;
        b.status().await
    });
    let mut out: Vec<Status> =
        reads.buffer_unordered(READS_IN_FLIGHT).collect::<Vec<_>>().await.into_iter().collect::<Result<_, _>>()?;
    out.sort_by(|a, b| (rank(a), &a.name).cmp(&(rank(b), &b.name)));
    Ok((out, skipped))
}

/// Logs each name in `skipped` that was not logged before (and forgets the names whose keys
/// are gone, so the set holds no more than the last listing found).
fn warn_once(app: &App, skipped: &[String]) {
    let mut warned = app.warned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now: HashSet<&String> = skipped.iter().collect();
    warned.retain(|name| now.contains(name));
    for name in skipped {
        if warned.insert(name.clone()) {
            let why = redis_breaker::name::validate_name(name).err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(name = ?name, %why, "skipped a key under the prefix whose name cannot be a breaker");
        }
    }
}

/// Open and half-open first, then forced, then closed.
fn rank(s: &Status) -> u8 {
    use redis_breaker::State;
    match s.state {
        State::Open | State::ForcedOpen => 0,
        State::HalfOpen => 1,
        State::ForcedClosed => 2,
        _ => 3,
    }
}

/// Samples every breaker's counters every `every`, keeping an hour of them, for as long as the
/// console runs. A round Redis cannot answer is skipped.
async fn sample_loop(app: std::sync::Weak<App>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(app) = app.upgrade() else { return };
        let Ok((all, _)) = statuses(&app).await else { continue };
        let at_ms = now_ms();
        let mut samples = app.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        samples.retain(|name, _| all.iter().any(|s| &s.name == name));
        for s in &all {
            let m = &s.metrics;
            let kept = samples.entry(s.name.clone()).or_default();
            kept.push_back(Sample { at_ms, calls: m.calls, failures: m.failures, rejected: m.rejected });
            while kept.len() > app.samples_kept {
                kept.pop_front();
            }
        }
    }
}
