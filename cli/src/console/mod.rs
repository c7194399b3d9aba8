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

use alerts::{all_alerts, now_ms};

use crate::Failure;
use crate::output;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use redis_breaker::status::Status;
use redis_breaker::{Client, StoreError, duration};
use serde::Deserialize;
use serde_json::json;
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
/// The longest request body accepted (writes carry their arguments in the query).
const BODY_LIMIT: usize = 1024;
/// History entries read per breaker (Redis keeps about 100).
const HISTORY_READ: usize = 100;
/// The shortest token accepted.
const TOKEN_MIN: usize = 16;

/// The page and what it loads: one HTML file, its script and its style, all from this binary.
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

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
    let router = router(app, hosts);
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

fn router(app: Arc<App>, hosts: hosts::Hosts) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/console.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/api/info", get(info))
        .route("/api/breakers", get(list))
        .route("/api/breakers/{name}", get(one))
        .route("/api/breakers/{name}/history", get(history))
        .route("/api/breakers/{name}/samples", get(samples))
        .route("/api/breakers/{name}/{action}", post(control))
        .route("/api/events", get(events))
        .route("/api/alerts", get(alerts))
        .route("/metrics", get(prometheus))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Outermost: a request for another Host is answered before any route reads Redis.
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), hosts::check))
        .with_state(app)
}

/// A JSON error: `{"error": "..."}`, one line.
pub(super) fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "error": text.into() }))).into_response()
}

/// A library error as an HTTP answer: bad input 400, a permission the console's Redis user
/// lacks 403 (nothing was written; the message says what to grant), Redis unreachable 503,
/// else 502 (Redis refused or answered nonsense).
fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Invalid(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        StoreError::PublishDenied { .. } | StoreError::Denied { .. } => error(StatusCode::FORBIDDEN, e.to_string()),
        e if e.is_outage() => error(StatusCode::SERVICE_UNAVAILABLE, format!("redis unreachable: {e}")),
        e => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Security headers every answer of ours carries.
pub(super) fn hardened(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    hardened(([(header::CONTENT_TYPE, kind)], body).into_response())
}

async fn page() -> Response {
    let mut r = asset(PAGE, "text/html; charset=utf-8");
    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    r.headers_mut().insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

/// Whether `headers` carry `Authorization: Bearer <token>`; the comparison takes the same time
/// wherever the first difference is.
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = &app.token else { return false };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes)
        .unwrap_or_default();
    constant_time_eq(given, token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

fn unauthorized(why: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, why);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The 401 when reads need the token and it is missing or wrong.
fn refused_read(app: &App, headers: &HeaderMap) -> Option<Response> {
    (app.auth_reads && !authorized(app, headers))
        .then(|| unauthorized("reads need the token: Authorization: Bearer <token>"))
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

/// What the page needs to know of the console: the prefix, and whether it may write.
async fn info(AxumState(app): AxumState<Arc<App>>) -> Response {
    let body = json!({
        "prefix": app.client.config().prefix(),
        "read_only": app.token.is_none(),
        "auth_reads": app.auth_reads,
    });
    hardened(Json(body).into_response())
}

async fn list(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    match statuses(&app).await {
        Ok((all, skipped)) => hardened(Json(output::list_value(&all, &skipped)).into_response()),
        Err(e) => store_error(&e),
    }
}

async fn one(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let read = async { app.client.breaker(&name, redis_breaker::Config::default())?.status().await };
    match read.await {
        Ok(s) => hardened(Json(s).into_response()),
        Err(e) => store_error(&e),
    }
}

#[derive(Debug, Deserialize)]
struct ControlQuery {
    #[serde(rename = "for")]
    duration: Option<String>,
    /// The operator's note for the history.
    note: Option<String>,
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

/// The console's samples of one breaker's counters over the last hour, oldest first (the
/// counters are cumulative: the page draws the differences).
async fn samples(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    if let Err(e) = redis_breaker::name::validate_name(&name) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let kept: Vec<Sample> = app
        .samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&name)
        .map(|k| k.iter().copied().collect())
        .unwrap_or_default();
    hardened(Json(json!({ "samples": kept })).into_response())
}

/// The transitions Redis keeps for one breaker (about 100), newest first.
async fn history(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let read = async { app.client.breaker(&name, redis_breaker::Config::default())?.history(HISTORY_READ).await };
    match read.await {
        Ok(entries) => hardened(Json(json!({ "history": entries })).into_response()),
        Err(e) => store_error(&e),
    }
}

async fn control(
    AxumState(app): AxumState<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    query: Result<Query<ControlQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if app.token.is_none() {
        return error(StatusCode::FORBIDDEN, "the console is read-only: it was started without a token");
    }
    if !authorized(&app, &headers) {
        tracing::warn!(breaker = %name, action = %action, %peer, "a write without the right token was refused");
        return unauthorized("writes need the token: Authorization: Bearer <token>");
    }
    let Ok(Query(query)) = query else { return error(StatusCode::BAD_REQUEST, "bad query string") };
    let duration = match query.duration.as_deref().map(duration::parse).transpose() {
        Ok(d) => d.filter(|d| !d.is_zero()),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad duration: {e}")),
    };
    if action == "reset" && duration.is_some() {
        return error(StatusCode::BAD_REQUEST, "reset takes no duration");
    }
    let b = match app.client.breaker(&name, redis_breaker::Config::default()) {
        Ok(b) => b,
        Err(e) => return store_error(&StoreError::from(e)),
    };
    let note = query.note.unwrap_or_default();
    let done = match action.as_str() {
        "open" => b.force_open_noted(duration, &note).await,
        "close" => b.force_close_noted(duration, &note).await,
        "reset" => b.reset_noted(&note).await,
        _ => return error(StatusCode::NOT_FOUND, "the actions are open, close and reset"),
    };
    let for_ms = duration.map(|d| d.as_millis() as u64);
    match done {
        Ok(written) => {
            tracing::info!(breaker = %name, action = %action, for_ms, note = %note, %peer, "console write");
            let status = match b.status().await {
                Ok(s) => s,
                Err(e) => return store_error(&e),
            };
            // Written but not announced (Redis < 7.0, which cannot refuse it ahead): the status,
            // and the warning for the page.
            let warning = written.unannounced_warning();
            if let Some(w) = &warning {
                tracing::warn!(breaker = %name, action = %action, %peer, "console write not announced: {w}");
            }
            match serde_json::to_value(&status) {
                Ok(mut body) => {
                    if let (Some(w), Some(fields)) = (warning, body.as_object_mut()) {
                        fields.insert("warning".to_string(), serde_json::Value::String(w));
                    }
                    hardened(Json(body).into_response())
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot write the status: {e}")),
            }
        }
        Err(e) => {
            tracing::warn!(breaker = %name, action = %action, %peer, error = %e, "console write failed");
            store_error(&e)
        }
    }
}

/// Transitions as Server-Sent Events, one JSON event per message (the `Event` of the
/// library), from the client's event subscription.
async fn events(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let subscription = app.client.subscribe_all();
    let stream = futures_util::stream::unfold(subscription, |mut s| async move {
        let e = s.recv().await?;
        let data = serde_json::to_string(&e).unwrap_or_default();
        Some((Ok::<_, std::convert::Infallible>(SseEvent::default().event("transition").data(data)), s))
    });
    hardened(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))).into_response())
}

async fn alerts(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let read = async {
        let (all, _) = statuses(&app).await?;
        all_alerts(&app, &all).await
    };
    match read.await {
        Ok(alerts) => hardened(Json(json!({ "alerts": alerts })).into_response()),
        Err(e) => store_error(&e),
    }
}

async fn prometheus(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let started = std::time::Instant::now();
    let read = async {
        let (all, skipped) = statuses(&app).await?;
        let alerts = all_alerts(&app, &all).await?;
        Ok::<_, StoreError>((all, skipped, alerts))
    };
    match read.await {
        Ok((all, skipped, alerts)) => {
            let text = metrics::exposition(&all, skipped.len(), &alerts, started.elapsed());
            hardened(([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response())
        }
        Err(e) => store_error(&e),
    }
}
