//! How every answer of the console is shaped: a JSON error, the security headers (one layer
//! over every answer, errors included) and the body limit.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The longest request body accepted (writes carry their arguments in the query).
pub(super) const BODY_LIMIT: usize = 1024;

/// Answers that set no policy of their own (all but the page) load nothing and are framed
/// nowhere.
const CSP_NONE: &str = "default-src 'none'; frame-ancestors 'none'";

/// A JSON error: `{"error": "..."}`, one line.
pub(super) fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "error": text.into() }))).into_response()
}

/// The layer over every answer (the outermost, so the Host check's 421, the router's 404 and
/// 405 and the body limit's 413 carry them too): no sniffing, no referrer, no caching, no
/// framing, and a Content-Security-Policy unless the answer set its own (the page's).
pub(super) async fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP_NONE));
    }
    r
}

/// 413 for a request that says its body is longer than `BODY_LIMIT`, whichever route it asks
/// (no route reads a body; a chunked body is never read, and the connection closes after it).
pub(super) async fn limit_body(request: Request, next: Next) -> Response {
    let length = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if length.is_some_and(|n| n > BODY_LIMIT as u64) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {BODY_LIMIT} bytes"));
    }
    next.run(request).await
}
