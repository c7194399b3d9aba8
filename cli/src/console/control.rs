//! Writes (force open, force close, reset) and the token that reads and writes may need.

use super::respond::error;
use super::{App, api};
use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use redis_breaker::{StoreError, duration};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// How long a write's answer waits for the shared read that follows it.
const FRESH_READ_WAIT: Duration = Duration::from_secs(5);

/// A library error as an HTTP answer: bad input 400, a permission the console's Redis user
/// lacks 403 (nothing was written; the message says what to grant), Redis unreachable 503,
/// else 502 (Redis refused or answered nonsense).
pub(super) fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::Invalid(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
        StoreError::PublishDenied { .. } | StoreError::Denied { .. } => error(StatusCode::FORBIDDEN, e.to_string()),
        e if e.is_outage() => error(StatusCode::SERVICE_UNAVAILABLE, format!("redis unreachable: {e}")),
        e => error(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time
/// (`subtle`: the time does not depend on where the first difference is; a length that
/// differs answers at once, and the length is no secret worth keeping).
fn authorized(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = &app.token else { return false };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::as_bytes)
        .unwrap_or_default();
    bool::from(given.ct_eq(token.as_slice()))
}

fn unauthorized(why: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, why);
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// The 401 when reads need the token and it is missing or wrong.
pub(super) fn refused_read(app: &App, headers: &HeaderMap) -> Option<Response> {
    (app.auth_reads && !authorized(app, headers))
        .then(|| unauthorized("reads need the token: Authorization: Bearer <token>"))
}

/// A name as a 400 or a 404 when it is not one of ours: not a breaker's name, or outside
/// `--breakers`.
pub(super) fn refused_name(app: &App, name: &str) -> Option<Response> {
    if let Err(e) = redis_breaker::name::validate_name(name) {
        return Some(error(StatusCode::BAD_REQUEST, e.to_string()));
    }
    (!app.globs.admit(name))
        .then(|| error(StatusCode::NOT_FOUND, "this console serves only the breakers --breakers names"))
}

#[derive(Debug, Deserialize)]
pub(super) struct ControlQuery {
    #[serde(rename = "for")]
    duration: Option<String>,
    /// The operator's note for the history.
    note: Option<String>,
}

/// The longest duration text read (a duration longer than the library takes is refused by
/// it, with the limit).
const DURATION_TEXT_MAX: usize = 32;

pub(super) async fn control(
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
        let shown: String = name.chars().take(60).collect();
        tracing::warn!(breaker = ?shown, %peer, "a write without the right token was refused");
        return unauthorized("writes need the token: Authorization: Bearer <token>");
    }
    if let Some(r) = refused_name(&app, &name) {
        return r;
    }
    let Ok(Query(query)) = query else { return error(StatusCode::BAD_REQUEST, "bad query string") };
    let duration = match query.duration.as_deref() {
        Some(text) if text.len() > DURATION_TEXT_MAX => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("bad duration: {} bytes, at most {DURATION_TEXT_MAX}", text.len()),
            );
        }
        Some(text) => match duration::parse(text) {
            Ok(d) => Some(d).filter(|d| !d.is_zero()),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad duration: {e}")),
        },
        None => None,
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
    let written = match done {
        Ok(written) => written,
        Err(e) => {
            tracing::warn!(breaker = ?name, action = ?action, %peer, error = %e, "console write failed");
            return store_error(&e);
        }
    };
    tracing::info!(breaker = ?name, action = ?action, for_ms, note = ?note, %peer, "console write");
    let written_at = Instant::now();
    let status = match b.status().await {
        Ok(s) => s,
        Err(e) => return store_error(&e),
    };
    fresh_read(&app, written_at).await;
    // Written but not announced (Redis < 7.0, which cannot refuse it ahead): the status, and
    // the warning for the page.
    let warning = written.unannounced_warning();
    if let Some(w) = &warning {
        tracing::warn!(breaker = ?name, action = ?action, %peer, "console write not announced: {w}");
    }
    let note = (!note.is_empty() && action != "reset").then_some(note.as_str());
    let mut body = api::one(&status, note, Duration::ZERO);
    if let (Some(w), Some(fields)) = (warning, body.as_object_mut()) {
        fields.insert("warning".to_string(), serde_json::Value::String(w));
    }
    Json(body).into_response()
}

/// Asks the shared read to run now and waits (a few seconds at most) until one that began
/// after `written_at` is served: the page and the scrapes that follow a write show it.
async fn fresh_read(app: &App, written_at: Instant) {
    let mut fleet = app.fleet.subscribe();
    app.refresh.notify_one();
    let fresh = fleet.wait_for(|f| f.started.is_some_and(|s| s >= written_at));
    let _ = tokio::time::timeout(FRESH_READ_WAIT, fresh).await;
}
