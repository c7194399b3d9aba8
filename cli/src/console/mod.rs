//! `redis-breaker serve`: the operator console. One web page, a JSON API, Server-Sent Events of
//! the transitions and a Prometheus endpoint for every breaker under the prefix, built on the
//! library's public API and the Redis keys alone.
//!
//! Safety: it listens on loopback unless told otherwise; every write needs the bearer token
//! (compared in constant time), and with no token the console is read-only; no cookies and no
//! CORS headers; breaker names are text on the page, never markup; the page loads nothing from
//! elsewhere and is served with a strict Content-Security-Policy.

mod alerts;
mod api;
mod cache;
mod control;
mod fleet;
mod glob;
mod hosts;
mod metrics;
mod notify;
mod respond;
mod routes;

use crate::Failure;
use redis_breaker::Client;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;
use tokio::sync::watch;

/// The default port: outside 9100-9999, which the Prometheus wiki's "Default port allocations"
/// had given out whole by June 2023 (9187 is postgres_exporter's), named by nothing in
/// /etc/services, and below Linux's ephemeral range (32768-60999). docs/console.md says more.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:19187";

/// Options of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. The default is loopback only; any other address lets that
    /// network read every breaker (and, with the token, stop a fleet's traffic).
    #[arg(long, env = "REDIS_BREAKER_LISTEN", default_value = DEFAULT_LISTEN)]
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
    /// How often the console samples every breaker's counters for the page's charts and the
    /// 5-minute failure rate (from the shared read, so at most once a second); it keeps an
    /// hour of samples per breaker.
    #[arg(long, default_value = "10s", value_parser = crate::duration, hide = true)]
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
    /// Show, scrape, alert and notify on the breakers whose name matches this glob only
    /// (repeatable: any of them; `*` any run of characters, `?` one), e.g. --breakers 'pay*'.
    /// Every breaker adds 18 series to /metrics (and one per alert that holds).
    #[arg(long = "breakers", value_name = "GLOB", value_parser = glob::parse)]
    breakers: Vec<String>,
    /// How often the console reads every breaker from Redis (one read serves every page,
    /// scrape and alert): each read is a SCAN pass and one script call per breaker, so a
    /// large fleet may want it less often. At least 1s.
    #[arg(long, default_value = "1s", value_parser = crate::duration)]
    read_every: Duration,
    #[command(flatten)]
    notify: notify::NotifyArgs,
}

/// One sample of a breaker's cumulative counters.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Sample {
    at_ms: u64,
    calls: u64,
    failures: u64,
    rejected: u64,
    /// When the counters started (the metrics hash's `since`): a change is a reset.
    #[serde(skip)]
    since_ms: u64,
}

/// What every request shares.
struct App {
    client: Client,
    token: Option<Vec<u8>>,
    auth_reads: bool,
    alert_open: Duration,
    alert_flaps: u64,
    globs: glob::Globs,
    read_every: Duration,
    /// The last shared read (`fleet::run` replaces it once a second).
    fleet: watch::Sender<Arc<fleet::Fleet>>,
    /// Asks the shared read to run now (after a write, so that its answer and the page show it).
    refresh: tokio::sync::Notify,
    /// An hour of samples per breaker, oldest first.
    samples: std::sync::Mutex<HashMap<String, VecDeque<Sample>>>,
    sample_every: Duration,
    /// How many samples make an hour.
    samples_kept: usize,
    /// The names under the prefix that cannot be breakers and were logged: each is logged
    /// once (while its key exists).
    warned: std::sync::Mutex<HashSet<String>>,
    notifier: Option<Arc<notify::Notifier>>,
    /// True once the console is stopping: event streams end.
    shutdown: watch::Receiver<bool>,
    /// Event streams open now (at most `routes::MAX_STREAMS`).
    streams: AtomicUsize,
    /// Per-click reads of Redis, each name at most once a second.
    history_cache: cache::PerName,
    status_cache: cache::PerName,
}

/// Breakers read from Redis at once (each a script call on one multiplexed connection, so the
/// reads of a shared read travel pipelined).
const READS_IN_FLIGHT: usize = 64;
/// History entries read per breaker (Redis keeps about 100).
const HISTORY_READ: usize = 100;
/// How long a stop waits for the open connections to finish after SIGTERM or SIGINT.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// The shortest token accepted.
const TOKEN_MIN: usize = 16;

pub(crate) async fn serve(client: Client, args: &ServeArgs) -> Result<ExitCode, Failure> {
    let token = token(args)?;
    if args.auth_reads && token.is_none() {
        return Err(Failure::Usage("--auth-reads needs a token (--token-file or $REDIS_BREAKER_TOKEN)".into()));
    }
    if args.read_every < Duration::from_secs(1) {
        return Err(Failure::Usage("--read-every must be at least 1s".into()));
    }
    let (stop, shutdown) = watch::channel(false);
    let signals = signals(stop)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Usage(format!("cannot listen on {}: {e}", args.listen)))?;
    let notifier = notify::Notifier::start(&args.notify, &client, shutdown.clone())?;
    let globs = glob::Globs::new(&args.breakers);
    if let Some(n) = &notifier
        && !args.breakers.is_empty()
    {
        let only = globs.clone();
        n.only(move |name| only.admit(name));
    }
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
        globs,
        read_every: args.read_every,
        fleet: watch::Sender::new(Arc::new(fleet::Fleet::initial())),
        refresh: tokio::sync::Notify::new(),
        samples: std::sync::Mutex::new(HashMap::new()),
        sample_every: args.sample_every,
        samples_kept: usize::try_from(3600 / args.sample_every.as_secs().max(1)).unwrap_or(360) + 1,
        warned: std::sync::Mutex::new(HashSet::new()),
        notifier: notifier.clone(),
        shutdown: shutdown.clone(),
        streams: AtomicUsize::new(0),
        history_cache: cache::PerName::default(),
        status_cache: cache::PerName::default(),
    });
    let reader = tokio::spawn(fleet::run(app.clone(), shutdown.clone()));
    let router = routes::router(app, hosts);
    let mut stopping = shutdown.clone();
    let server = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        })
        .into_future();
    // hyper has no timer here: a client that sent half a request (or keeps an idle connection)
    // would hold the graceful shutdown forever. It gets `STOP_GRACE` after the signal.
    let mut stopped = shutdown;
    let grace = async move {
        let _ = stopped.wait_for(|stop| *stop).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        done = server => done.map_err(|e| Failure::Other(format!("the console stopped: {e}")))?,
        () = grace => tracing::warn!(
            grace = ?STOP_GRACE,
            "stopping without waiting longer: connections still open (an unfinished request, or an idle client) were cut off"
        ),
    }
    signals.abort();
    // A read under way when the signal came is not waited for (Redis may be the reason to stop).
    reader.abort();
    // The notifications queued are delivered (for a bounded time) before the process exits.
    if let Some(n) = notifier {
        n.stopped().await;
    }
    tracing::info!("the console stopped");
    Ok(ExitCode::SUCCESS)
}

/// Sets `stop` on SIGTERM or SIGINT. The handlers are in place when this returns, before the
/// console says where it listens.
fn signals(stop: watch::Sender<bool>) -> Result<tokio::task::JoinHandle<()>, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let handler =
        |kind: SignalKind| signal(kind).map_err(|e| Failure::Other(format!("cannot handle SIGTERM and SIGINT: {e}")));
    let (mut term, mut int) = (handler(SignalKind::terminate())?, handler(SignalKind::interrupt())?);
    Ok(tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stopping: event streams end, then the console");
        stop.send_replace(true);
    }))
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
