//! The console's HTTP side: the routes and their handlers, the page and its assets, the token
//! check, and the headers every answer carries.

use super::alerts::all_alerts;
use super::respond::{error, hardened};
use super::{App, HISTORY_READ, Sample, hosts, metrics, statuses};
use crate::output;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use redis_breaker::{StoreError, duration};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The longest request body accepted (writes carry their arguments in the query).
const BODY_LIMIT: usize = 1024;

/// The page and what it loads: one HTML file, its script and its style, all from this binary.
const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Every route of the console, behind the check of the `Host` header.
pub(super) fn router(app: Arc<App>, hosts: hosts::Hosts) -> Router {
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
