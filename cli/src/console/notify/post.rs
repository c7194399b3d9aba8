//! One POST to a receiver, over TCP or TLS (rustls with the system's trusted roots).

use super::receiver::Receiver;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;

/// TLS with the system's trusted roots (and $SSL_CERT_FILE / $SSL_CERT_DIR), on ring.
pub(super) fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default();
        return Err(format!(
            "an https:// --notify URL needs trusted root certificates and none were found{why}: install the system's CA certificates or set SSL_CERT_FILE"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// What one POST came back with.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) retry_after: Option<Duration>,
}

/// One POST on a connection of its own.
pub(super) async fn post(
    r: &Receiver,
    body: Bytes,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<Answer, String> {
    let tcp =
        tokio::net::TcpStream::connect((r.host.as_str(), r.port)).await.map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match (r.tls, tls) {
        (true, Some(connector)) => {
            let name = rustls::pki_types::ServerName::try_from(r.host.clone())
                .map_err(|e| format!("not a TLS server name: {e}"))?;
            let stream = connector.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            exchange(TokioIo::new(stream), r, body).await
        }
        (true, None) => Err("no TLS set up".into()),
        (false, _) => exchange(TokioIo::new(tcp), r, body).await,
    }
}

/// The request and the answer's head (its body is not read).
async fn exchange<T>(io: T, r: &Receiver, body: Bytes) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    let request = hyper::Request::post(r.target.as_str())
        .header(header::HOST, r.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, concat!("redis-breaker/", env!("CARGO_PKG_VERSION")))
        .header(header::CONNECTION, "close")
        .body(Full::new(body))
        .map_err(|e| format!("cannot make the request: {e}"))?;
    let mut conn = std::pin::pin!(conn);
    let mut send = std::pin::pin!(sender.send_request(request));
    // The connection is driven here, not spawned: when the deadline drops this future, the
    // connection goes with it.
    let response = tokio::select! {
        response = &mut send => response,
        _ = &mut conn => send.await,
    }
    .map_err(|e| format!("HTTP: {e}"))?;
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Ok(Answer { status: response.status(), retry_after })
}
