//! The console's HTTP side: the routes and the read handlers (served from the shared read,
//! but for the per-click reads of one breaker), the page and its assets, and the layers every
//! answer passes through.

use super::control::{control, refused_name, refused_read, store_error};
use super::fleet::Fleet;
use super::respond::{BODY_LIMIT, error, harden, limit_body};
use super::{App, HISTORY_READ, Sample, api, hosts, metrics};
use axum::extract::{DefaultBodyLimit, Path, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The page and what it loads: one HTML file, its script and its style, all from this binary.
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Event streams open at once; more are answered 503 (each holds a connection and a
/// subscription's queue).
pub(super) const MAX_STREAMS: usize = 64;
/// `/readyz` answers 503 when the data served is older than this, or three reads.
const READY_AGE: Duration = Duration::from_secs(10);
/// How long a request waits for the console's first read of Redis.
const FIRST_READ_WAIT: Duration = Duration::from_secs(10);
/// How long a scrape waits for it: well within any scrape timeout (Prometheus's default is
/// 10 s); until then the scrape says `redis_breaker_console_redis_up 0` and has no fleet series.
const SCRAPE_FIRST_READ_WAIT: Duration = Duration::from_secs(1);

/// Every route of the console, behind the check of the `Host` header and the headers layer.
pub(super) fn router(app: Arc<App>, hosts: hosts::Hosts) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/console.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/console.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
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
        .layer(axum::middleware::from_fn(limit_body))
        // A request for another Host is answered before any route reads Redis.
        .layer(axum::middleware::from_fn_with_state(Arc::new(hosts), hosts::check))
        // Outermost: every answer, the errors of the layers above included.
        .layer(axum::middleware::map_response(harden))
        .with_state(app)
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

async fn page() -> Response {
    let mut r = asset(PAGE, "text/html; charset=utf-8");
    r.headers_mut().insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    r
}

/// The last shared read; waits for the first one when none has finished yet.
async fn current(app: &App) -> Arc<Fleet> {
    current_within(app, FIRST_READ_WAIT).await
}

/// The last shared read; waits at most `wait` for the first one when none has finished yet.
async fn current_within(app: &App, wait: Duration) -> Arc<Fleet> {
    let mut fleet = app.fleet.subscribe();
    let _ = tokio::time::timeout(wait, fleet.wait_for(|f| f.started.is_some())).await;
    fleet.borrow().clone()
}

/// 503 with the reason when the last shared read failed.
fn unavailable(fleet: &Fleet) -> Option<Response> {
    match (&fleet.error, fleet.started) {
        (Some(e), _) => Some(error(StatusCode::SERVICE_UNAVAILABLE, e.clone())),
        (None, None) => {
            Some(error(StatusCode::SERVICE_UNAVAILABLE, "redis unreachable: no read of Redis finished yet"))
        }
        (None, Some(_)) => None,
    }
}

async fn ready(AxumState(app): AxumState<Arc<App>>) -> Response {
    let fleet = current(&app).await;
    if let Some(r) = unavailable(&fleet) {
        return r;
    }
    match fleet.age() {
        Some(age) if age <= READY_AGE.max(app.read_every * 3) => {
            Json(json!({ "status": "ready", "read_at_ms": fleet.data.read_at_ms })).into_response()
        }
        _ => error(StatusCode::SERVICE_UNAVAILABLE, "redis unreachable: the last read of Redis is too old"),
    }
}

/// What the page needs to know of the console: the prefix, and whether it may write.
async fn info(AxumState(app): AxumState<Arc<App>>) -> Response {
    let body = json!({
        "prefix": app.client.config().prefix(),
        "read_only": app.token.is_none(),
        "auth_reads": app.auth_reads,
    });
    Json(body).into_response()
}

async fn list(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let fleet = current(&app).await;
    if let Some(r) = unavailable(&fleet) {
        return r;
    }
    Json(api::list(&fleet.data)).into_response()
}

/// One breaker: from the shared read when it holds it, else read from Redis (at most once a
/// second per name); a name with no keys is a closed breaker, epoch 0.
async fn one(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused_read(&app, &headers).or_else(|| refused_name(&app, &name)) {
        return r;
    }
    let fleet = current(&app).await;
    if let Some(row) = fleet.data.rows.iter().find(|r| r.status.name == name)
        && fleet.error.is_none()
    {
        let since_read = fleet.data.read_at.map(|at| at.elapsed()).unwrap_or_default();
        return Json(api::one(&row.status, row.note.as_deref(), since_read)).into_response();
    }
    if let Some(kept) = app.status_cache.get(&name) {
        return Json(kept).into_response();
    }
    let read = async { app.client.breaker(&name, redis_breaker::Config::default())?.status().await };
    match read.await {
        Ok(s) => {
            let body = api::one(&s, None, Duration::ZERO);
            app.status_cache.put(&name, body.clone());
            Json(body).into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// The console's samples of one breaker's counters over the last hour, oldest first (the
/// counters are cumulative: the page draws the differences).
async fn samples(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused_read(&app, &headers).or_else(|| refused_name(&app, &name)) {
        return r;
    }
    let kept: Vec<Sample> = app
        .samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&name)
        .map(|k| k.iter().copied().collect())
        .unwrap_or_default();
    Json(json!({ "samples": kept })).into_response()
}

/// The transitions Redis keeps for one breaker (about 100), newest first; read at most once a
/// second per name.
async fn history(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(r) = refused_read(&app, &headers).or_else(|| refused_name(&app, &name)) {
        return r;
    }
    if let Some(kept) = app.history_cache.get(&name) {
        return Json(kept).into_response();
    }
    let read = async { app.client.breaker(&name, redis_breaker::Config::default())?.history(HISTORY_READ).await };
    match read.await {
        Ok(entries) => {
            let body = json!({ "history": entries });
            app.history_cache.put(&name, body.clone());
            Json(body).into_response()
        }
        Err(e) => store_error(&e),
    }
}

/// Counts an open event stream while it lives.
struct StreamSlot(Arc<App>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Transitions as Server-Sent Events, one JSON event per message (the `Event` of the
/// library), from the client's event subscription (one for the whole console). At most
/// `MAX_STREAMS` at once; each ends when the console stops.
async fn events(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    if app.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        app.streams.fetch_sub(1, Ordering::SeqCst);
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("too many event streams open (at most {MAX_STREAMS})"));
    }
    let slot = StreamSlot(app.clone());
    let mut stop = app.shutdown.clone();
    let subscription = app.client.subscribe_all();
    let stream = futures_util::stream::unfold((subscription, slot), |(mut s, slot)| async move {
        let e = s.recv().await?;
        let data = serde_json::to_string(&e).unwrap_or_default();
        Some((Ok::<_, std::convert::Infallible>(SseEvent::default().event("transition").data(data)), (s, slot)))
    })
    .take_until(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(10))).into_response()
}

async fn alerts(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let fleet = current(&app).await;
    if let Some(r) = unavailable(&fleet) {
        return r;
    }
    Json(json!({ "alerts": fleet.data.alerts })).into_response()
}

/// Always 200: while Redis is unreachable the fleet's series keep the last read's values, with
/// `redis_breaker_console_redis_up 0` and a read age that grows.
async fn prometheus(AxumState(app): AxumState<Arc<App>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused_read(&app, &headers) {
        return r;
    }
    let started = std::time::Instant::now();
    let fleet = current_within(&app, SCRAPE_FIRST_READ_WAIT).await;
    let text = metrics::exposition(&fleet, app.notifier.as_deref(), started);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}
