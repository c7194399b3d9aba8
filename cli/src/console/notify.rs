//! Notifications (`serve --notify URL`): a JSON document POSTed to each receiver for every fleet
//! transition and every alert raised or cleared.
//!
//! The path of a transition: the console's own event subscription (one message per fleet
//! transition, whichever process made it), deduplicated, then held back by the per-breaker
//! minimum interval, then composed (a forced state's note read from the history) and put on one
//! bounded queue per receiver. Each receiver has its own task, so a receiver that hangs delays
//! only its own deliveries. Nothing on the console's side waits: the event loop and
//! [`Notifier::alerts`] only `try_send`, and a full queue drops (counted).
//!
//! Webhook URLs carry secrets in their path and query: only `scheme://host:port` is ever logged
//! or printed.

use super::alerts::{Alert, now_ms};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{StatusCode, header};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use redis_breaker::{Client, Event, EventKind, State, Subscription};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Options of `serve` for notifications.
#[derive(clap::Args)]
pub(crate) struct NotifyArgs {
    /// POST a JSON document to this URL for every fleet transition and every alert raised or
    /// cleared (repeatable; http:// or https://). A Slack incoming webhook works as it is. The
    /// URL's path and query are never logged. $REDIS_BREAKER_NOTIFY (URLs separated by spaces)
    /// keeps them out of the process list.
    #[arg(
        long = "notify",
        value_name = "URL",
        env = "REDIS_BREAKER_NOTIFY",
        value_delimiter = ' ',
        hide_env_values = true
    )]
    pub(crate) urls: Vec<String>,
    /// After a breaker's transition is sent, its next transitions within this interval are
    /// held back (against flapping); at the interval's end the last one is sent, saying how
    /// many were not. 0 sends every transition. Alerts are never held back.
    #[arg(long = "notify-min-interval", value_name = "DURATION", default_value = "1m", value_parser = crate::duration)]
    pub(crate) min_interval: Duration,
    /// Retries of a POST after a connection error, a timeout, a 408, 429 or 5xx (with an
    /// exponential backoff and jitter; a Retry-After of up to a minute is honoured): a
    /// notification is tried at most this many times plus one, then counted as failed.
    #[arg(long = "notify-retries", value_name = "N", default_value_t = 4)]
    pub(crate) retries: u32,
    /// Deadline of one POST: connecting, TLS, sending and the receiver's answer.
    #[arg(long = "notify-timeout", value_name = "DURATION", default_value = "10s", value_parser = crate::duration)]
    pub(crate) timeout: Duration,
    /// Notifications waiting per receiver; more are dropped (and counted).
    #[arg(
        long = "notify-queue",
        value_name = "N",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..=1_000_000)
    )]
    pub(crate) queue: u32,
    /// The first retry's backoff; each next one doubles it (up to a minute).
    #[arg(long = "notify-backoff", value_name = "DURATION", default_value = "1s", value_parser = crate::duration, hide = true)]
    pub(crate) backoff: Duration,
}

/// Without the URLs: they carry secrets.
impl fmt::Debug for NotifyArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyArgs")
            .field("urls", &format_args!("[{} hidden]", self.urls.len()))
            .field("min_interval", &self.min_interval)
            .field("retries", &self.retries)
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

/// How long queued notifications may still be delivered after the shutdown signal.
const DRAIN: Duration = Duration::from_secs(2);
/// The longest Retry-After honoured; a longer one waits this long.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(60);
/// The longest backoff between two attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Transitions remembered for deduplication.
const SEEN: usize = 4096;
/// Transitions waiting for their document (the note's read) before the receivers' queues.
const INBOX: usize = 1024;

/// Sends notifications in the background, never delaying the console.
pub(crate) struct Notifier {
    queues: Arc<[mpsc::Sender<Bytes>]>,
    counters: Counters,
    /// The alerts of the last call to [`alerts`](Notifier::alerts), by breaker and kind, with
    /// their message.
    held: Mutex<HashMap<(String, &'static str), String>>,
    prefix: String,
    /// Which breakers are notified (`serve --breakers`); all when `None`.
    filter: Arc<Mutex<Option<Filter>>>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

type Filter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone, Default)]
struct Counters {
    sent: Counter,
    failed: Counter,
    dropped: Counter,
    suppressed: Counter,
    retries: Counter,
}

impl Notifier {
    /// Starts the notifier when `args` name a receiver: it follows `client`'s transitions itself
    /// and stops when `shutdown` turns true.
    ///
    /// # Errors
    /// [`Failure::Usage`](crate::Failure::Usage) when a URL is not an http:// or https:// URL
    /// (the message names its position, never its path), or https:// is asked and the system
    /// has no trusted root certificate.
    pub(crate) fn start(
        args: &NotifyArgs,
        client: &Client,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<Arc<Notifier>>, crate::Failure> {
        if args.urls.is_empty() {
            return Ok(None);
        }
        let mut receivers = Vec::new();
        for (i, url) in args.urls.iter().enumerate() {
            let r = Receiver::parse(url).map_err(|e| crate::Failure::Usage(format!("--notify URL #{}: {e}", i + 1)))?;
            receivers.push(Arc::new(r));
        }
        let tls =
            if receivers.iter().any(|r| r.tls) { Some(tls_connector().map_err(crate::Failure::Usage)?) } else { None };
        let delivery = Arc::new(Delivery {
            attempts: args.retries.saturating_add(1),
            timeout: args.timeout.max(Duration::from_millis(1)),
            backoff: args.backoff,
            tls,
        });
        let counters = Counters::default();
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for r in receivers {
            let (tx, rx) = mpsc::channel(args.queue as usize);
            queues.push(tx);
            tracing::info!(receiver = %r.shown, "notifications go to this receiver");
            tasks.push(tokio::spawn(deliver_all(r, rx, delivery.clone(), counters.clone(), shutdown.clone())));
        }
        let queues: Arc<[mpsc::Sender<Bytes>]> = queues.into();
        let filter: Arc<Mutex<Option<Filter>>> = Arc::default();
        let (inbox, drafts) = mpsc::channel(INBOX);
        let prefix = client.config().prefix().to_string();
        let follow = Follow {
            gate: Gate::new(args.min_interval),
            seen: Seen::default(),
            inbox,
            filter: filter.clone(),
            counters: counters.clone(),
            receivers: queues.len() as u64,
        };
        tasks.push(tokio::spawn(follow.run(client.subscribe_all(), shutdown)));
        let compose = Compose { client: client.clone(), prefix: prefix.clone(), note_timeout: delivery.timeout };
        tasks.push(tokio::spawn(compose.run(drafts, queues.clone(), counters.clone())));
        Ok(Some(Arc::new(Notifier {
            queues,
            counters,
            held: Mutex::new(HashMap::new()),
            prefix,
            filter,
            tasks: Mutex::new(tasks),
        })))
    }

    /// The alerts that hold now (called after every shared read): those new since the last
    /// call are raised, those gone are cleared. The first call raises every alert that holds.
    pub(crate) fn alerts(&self, now: &[Alert]) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let current: HashMap<(String, &'static str), String> =
            now.iter().map(|a| ((a.breaker.clone(), a.kind), a.message.clone())).collect();
        let at_ms = now_ms();
        for ((breaker, kind), message) in &current {
            if !held.contains_key(&(breaker.clone(), *kind)) {
                self.enqueue(&Document::alert("alert_raised", &self.prefix, breaker, kind, message, at_ms));
            }
        }
        for ((breaker, kind), message) in held.iter() {
            if !current.contains_key(&(breaker.clone(), *kind)) {
                self.enqueue(&Document::alert("alert_cleared", &self.prefix, breaker, kind, message, at_ms));
            }
        }
        *held = current;
    }

    /// Notifies only the breakers `keep` accepts (`serve --breakers`); the alerts passed to
    /// [`alerts`](Notifier::alerts) are taken as they come.
    pub(crate) fn only(&self, keep: impl Fn(&str) -> bool + Send + Sync + 'static) {
        *self.filter.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(keep));
    }

    /// Registers the notifier's counters (sent, failed, dropped, ...) in a scrape's registry,
    /// whose prefix is `redis_breaker`: `redis_breaker_console_notifications_sent_total`, ...
    pub(crate) fn register(&self, registry: &mut Registry) {
        let c = &self.counters;
        registry.register(
            "console_notifications_sent",
            "Notifications a receiver accepted (2xx), counted per receiver",
            c.sent.clone(),
        );
        registry.register(
            "console_notifications_failed",
            "Notifications given up: refused (4xx) or still failing after the retries, per receiver",
            c.failed.clone(),
        );
        registry.register(
            "console_notifications_dropped",
            "Notifications dropped because a receiver's queue was full, per receiver",
            c.dropped.clone(),
        );
        registry.register(
            "console_notifications_suppressed",
            "Transitions never notified: held back by the minimum interval and replaced by a later one",
            c.suppressed.clone(),
        );
        registry.register(
            "console_notifications_retries",
            "POSTs tried again after a connection error, a timeout, a 408, 429 or 5xx",
            c.retries.clone(),
        );
    }

    /// Waits until the notifier has stopped: after the shutdown signal, once every queue is
    /// delivered or [`DRAIN`] has passed.
    pub(crate) async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
    }

    fn enqueue(&self, doc: &Document) {
        fan_out(doc, &self.queues, &self.counters);
    }
}

/// Puts one document on every receiver's queue; a full queue drops it (counted).
fn fan_out(doc: &Document, queues: &[mpsc::Sender<Bytes>], counters: &Counters) {
    let body = match serde_json::to_vec(doc) {
        Ok(b) => Bytes::from(b),
        Err(e) => return tracing::error!(error = %e, "cannot encode a notification"),
    };
    for q in queues {
        if q.try_send(body.clone()).is_err() {
            counters.dropped.inc();
        }
    }
}

/// One receiver, from its URL.
struct Receiver {
    tls: bool,
    /// To connect to: a name or an address (an IPv6 one without brackets).
    host: String,
    port: u16,
    /// The Host header: the URL's authority.
    authority: String,
    /// The request target: path and query (the secret part).
    target: String,
    /// `scheme://host:port`: what logs and errors may show.
    shown: String,
}

impl Receiver {
    /// The receiver of `url`, or why it cannot be one (never quoting the URL: its path and
    /// query may be a secret).
    fn parse(url: &str) -> Result<Receiver, String> {
        let uri: hyper::Uri = url.trim().parse().map_err(|e| format!("not an http:// or https:// URL ({e})"))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(_) | None => return Err("not an http:// or https:// URL".into()),
        };
        let Some(authority) = uri.authority() else { return Err("the URL has no host".into()) };
        if authority.as_str().contains('@') {
            return Err("a user or password in the URL is not supported".into());
        }
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = match authority.port() {
            Some(p) => p.as_u16(),
            None if tls => 443,
            None => 80,
        };
        if port == 0 {
            return Err("the URL's port is 0".into());
        }
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let target = if target.starts_with('/') { target } else { format!("/{target}") };
        let scheme = if tls { "https" } else { "http" };
        let shown = format!("{scheme}://{}:{port}", authority.host());
        Ok(Receiver { tls, host, port, authority: authority.as_str().to_string(), target, shown })
    }
}

/// How POSTs are made and retried.
struct Delivery {
    attempts: u32,
    timeout: Duration,
    backoff: Duration,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// TLS with the system's trusted roots (and $SSL_CERT_FILE / $SSL_CERT_DIR), on ring.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
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

/// A receiver's task: delivers its queue in order until the shutdown signal, then what is
/// queued for at most [`DRAIN`].
async fn deliver_all(
    r: Arc<Receiver>,
    mut rx: mpsc::Receiver<Bytes>,
    delivery: Arc<Delivery>,
    counters: Counters,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut stopping = shutdown.clone();
    let deadline = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN).await;
    };
    let work = async {
        loop {
            let body = tokio::select! {
                biased;
                body = rx.recv() => match body {
                    Some(body) => body,
                    None => return,
                },
                _ = shutdown.wait_for(|s| *s) => match rx.try_recv() {
                    Ok(body) => body,
                    Err(_) => return,
                },
            };
            deliver(&r, body, &delivery, &counters).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = deadline => {
            let left = rx.len() as u64;
            if left > 0 {
                tracing::warn!(receiver = %r.shown, left, "stopped with notifications still queued");
            }
        }
    }
}

/// What one POST came back with.
struct Answer {
    status: StatusCode,
    retry_after: Option<Duration>,
}

/// Delivers one document to one receiver: retried after a connection error, a timeout, a 408,
/// 429 or 5xx; given up after the last attempt or at once on another status.
async fn deliver(r: &Receiver, body: Bytes, delivery: &Delivery, counters: &Counters) {
    for attempt in 1..=delivery.attempts {
        let tried = tokio::time::timeout(delivery.timeout, post(r, body.clone(), delivery.tls.as_ref())).await;
        let (why, retry_after) = match tried {
            Ok(Ok(a)) if a.status.is_success() => {
                counters.sent.inc();
                return;
            }
            Ok(Ok(a)) if retryable(a.status) => (format!("answered {}", a.status), a.retry_after),
            Ok(Ok(a)) => {
                counters.failed.inc();
                tracing::error!(receiver = %r.shown, status = %a.status, "a receiver refused a notification; not retried");
                return;
            }
            Ok(Err(e)) => (e, None),
            Err(_) => (format!("no answer within {}", redis_breaker::duration::format(delivery.timeout)), None),
        };
        if attempt == delivery.attempts {
            counters.failed.inc();
            tracing::error!(receiver = %r.shown, attempts = attempt, last = %why, "gave up a notification");
            return;
        }
        counters.retries.inc();
        let wait =
            backoff(delivery.backoff, attempt).max(retry_after.map_or(Duration::ZERO, |d| d.min(RETRY_AFTER_MAX)));
        tracing::info!(receiver = %r.shown, attempt, error = %why, wait_ms = wait.as_millis() as u64, "a notification will be retried");
        tokio::time::sleep(wait).await;
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// The wait before attempt `after + 1`: `base` doubled per attempt, capped, with jitter (between
/// half and all of it) so that receivers coming back are not hit by every console at once.
fn backoff(base: Duration, after: u32) -> Duration {
    let full = base.saturating_mul(1u32 << after.saturating_sub(1).min(16)).min(BACKOFF_MAX);
    full.mul_f64(0.5 + 0.5 * unit_random())
}

/// A number in [0, 1) that differs from call to call (std's per-instance random hash keys).
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One POST on a connection of its own.
async fn post(r: &Receiver, body: Bytes, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Answer, String> {
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

/// The JSON document POSTed: Slack's `text` and the facts as fields.
#[derive(Debug, serde::Serialize)]
struct Document {
    text: String,
    /// `transition`, `alert_raised` or `alert_cleared`.
    kind: &'static str,
    prefix: String,
    breaker: String,
    from: Option<&'static str>,
    to: Option<&'static str>,
    reason: Option<String>,
    epoch: Option<u64>,
    incarnation: Option<u64>,
    note: Option<String>,
    origin: Option<String>,
    /// This console's clock when it learnt of it, ms since the Unix epoch.
    at_ms: u64,
    /// Transitions of this breaker not sent since the last one that was (minimum interval).
    suppressed: u64,
    alert: Option<&'static str>,
    message: Option<String>,
}

impl Document {
    fn transition(prefix: &str, d: &Draft, note: Option<String>) -> Document {
        let e = &d.event;
        let from = e.from.map_or("corrupt", State::as_str);
        let mut text = format!(
            "redis-breaker: {} {from} → {} ({}, epoch {})",
            slack(&e.name),
            e.to.as_str(),
            slack(&e.reason),
            e.epoch
        );
        if let Some(note) = &note {
            text.push_str(&format!(", note: {}", slack(note)));
        }
        if d.suppressed > 0 {
            let s = if d.suppressed == 1 { "" } else { "s" };
            text.push_str(&format!("; {} earlier transition{s} not sent (minimum interval)", d.suppressed));
        }
        Document {
            text,
            kind: "transition",
            prefix: prefix.to_string(),
            breaker: e.name.clone(),
            from: e.from.map(State::as_str),
            to: Some(e.to.as_str()),
            reason: Some(e.reason.clone()),
            epoch: Some(e.epoch),
            incarnation: Some(e.incarnation),
            note,
            origin: e.origin.clone(),
            at_ms: d.at_ms,
            suppressed: d.suppressed,
            alert: None,
            message: None,
        }
    }

    fn alert(
        kind: &'static str,
        prefix: &str,
        breaker: &str,
        alert: &'static str,
        message: &str,
        at_ms: u64,
    ) -> Document {
        let text = if kind == "alert_raised" {
            format!("redis-breaker: alert {alert} on {}: {}", slack(breaker), slack(message))
        } else {
            format!("redis-breaker: alert {alert} on {} cleared", slack(breaker))
        };
        Document {
            text,
            kind,
            prefix: prefix.to_string(),
            breaker: breaker.to_string(),
            from: None,
            to: None,
            reason: None,
            epoch: None,
            incarnation: None,
            note: None,
            origin: None,
            at_ms,
            suppressed: 0,
            alert: Some(alert),
            message: Some(message.to_string()),
        }
    }
}

/// Text for Slack's `text`: `&`, `<` and `>` escaped as Slack requires (so that no name or note
/// can make a mention such as `<!channel>` or a link), and on one line.
fn slack(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// One fleet transition: the facts of a library [`Event`] that a notification carries.
#[derive(Debug, Clone)]
struct Transition {
    name: String,
    from: Option<State>,
    to: State,
    reason: String,
    epoch: u64,
    incarnation: u64,
    origin: Option<String>,
}

impl From<Event> for Transition {
    fn from(e: Event) -> Transition {
        Transition {
            name: e.name,
            from: e.from,
            to: e.to,
            reason: e.reason,
            epoch: e.epoch,
            incarnation: e.incarnation,
            origin: e.origin,
        }
    }
}

/// A transition on its way to the receivers.
#[derive(Debug)]
struct Draft {
    event: Transition,
    suppressed: u64,
    at_ms: u64,
}

/// The task that follows the fleet's transitions.
struct Follow {
    gate: Gate,
    seen: Seen,
    inbox: mpsc::Sender<Draft>,
    filter: Arc<Mutex<Option<Filter>>>,
    counters: Counters,
    receivers: u64,
}

impl Follow {
    async fn run(mut self, mut events: Subscription, mut shutdown: watch::Receiver<bool>) {
        loop {
            let due = self.gate.next_due();
            let event = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                () = sleep_until(due) => {
                    for d in self.gate.flush(Instant::now()) {
                        self.pass(d);
                    }
                    continue;
                }
                e = events.recv() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            // Own*, StoreDown/Up and ShadowRejected are this process's view, not the fleet's.
            if event.kind != EventKind::Transition || !self.wanted(&event.name) {
                continue;
            }
            let event = Transition::from(event);
            if !self.seen.first(&event) {
                continue;
            }
            if let Some(d) = self.gate.admit(event, Instant::now(), &self.counters) {
                self.pass(d);
            }
        }
    }

    fn wanted(&self, name: &str) -> bool {
        self.filter.lock().unwrap_or_else(PoisonError::into_inner).as_ref().is_none_or(|keep| keep(name))
    }

    fn pass(&self, d: Draft) {
        if self.inbox.try_send(d).is_err() {
            self.counters.dropped.inc_by(self.receivers);
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The transitions already passed on, by breaker, incarnation, epoch and state entered: each
/// fleet transition once, however many times it is heard.
#[derive(Default)]
struct Seen {
    set: HashSet<(String, u64, u64, &'static str)>,
    order: VecDeque<(String, u64, u64, &'static str)>,
}

impl Seen {
    /// True the first time `e`'s transition is seen (among the last [`SEEN`]).
    fn first(&mut self, e: &Transition) -> bool {
        let key = (e.name.clone(), e.incarnation, e.epoch, e.to.as_str());
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        if self.order.len() > SEEN
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

/// The minimum interval per breaker.
struct Gate {
    interval: Duration,
    breakers: HashMap<String, Held>,
}

struct Held {
    /// When the last notification of this breaker was passed on.
    sent: Instant,
    /// Transitions held back since and replaced by a later one.
    suppressed: u64,
    /// The last transition held back, sent when the interval ends.
    pending: Option<Draft>,
}

/// Breakers remembered before the ones whose interval has passed are forgotten.
const GATE_KEPT: usize = 1024;

impl Gate {
    fn new(interval: Duration) -> Gate {
        Gate { interval, breakers: HashMap::new() }
    }

    /// `event` to send now, or `None` when it is held back until the breaker's interval ends.
    fn admit(&mut self, event: Transition, now: Instant, counters: &Counters) -> Option<Draft> {
        let draft = Draft { event, suppressed: 0, at_ms: now_ms() };
        if self.interval.is_zero() {
            return Some(draft);
        }
        if self.breakers.len() >= GATE_KEPT {
            let interval = self.interval;
            self.breakers.retain(|_, h| h.pending.is_some() || now < h.sent + interval);
        }
        let name = draft.event.name.clone();
        let mut suppressed = 0;
        if let Some(h) = self.breakers.get_mut(&name) {
            if h.pending.take().is_some() {
                h.suppressed += 1;
                counters.suppressed.inc();
            }
            if now < h.sent + self.interval {
                h.pending = Some(draft);
                return None;
            }
            suppressed = h.suppressed;
        }
        self.breakers.insert(name, Held { sent: now, suppressed: 0, pending: None });
        Some(Draft { suppressed, ..draft })
    }

    /// When the next held-back transition is due.
    fn next_due(&self) -> Option<Instant> {
        self.breakers.values().filter(|h| h.pending.is_some()).map(|h| h.sent + self.interval).min()
    }

    /// The held-back transitions whose interval has ended: each breaker's last one, saying how
    /// many before it were not sent.
    fn flush(&mut self, now: Instant) -> Vec<Draft> {
        let mut out = Vec::new();
        for h in self.breakers.values_mut() {
            if now >= h.sent + self.interval
                && let Some(d) = h.pending.take()
            {
                out.push(Draft { suppressed: h.suppressed, ..d });
                h.sent = now;
                h.suppressed = 0;
            }
        }
        out
    }
}

/// The task that makes each transition's document (reading a forced state's note) and puts
/// it on every receiver's queue.
struct Compose {
    client: Client,
    prefix: String,
    note_timeout: Duration,
}

impl Compose {
    async fn run(self, mut drafts: mpsc::Receiver<Draft>, queues: Arc<[mpsc::Sender<Bytes>]>, counters: Counters) {
        while let Some(d) = drafts.recv().await {
            let note = if matches!(d.event.to, State::ForcedOpen | State::ForcedClosed) {
                tokio::time::timeout(self.note_timeout, self.note(&d.event)).await.ok().flatten()
            } else {
                None
            };
            fan_out(&Document::transition(&self.prefix, &d, note), &queues, &counters);
        }
    }

    /// The operator's note of the transition `e`: the newest history entry's, when it is this
    /// transition.
    async fn note(&self, e: &Transition) -> Option<String> {
        let breaker = self.client.breaker(&e.name, redis_breaker::Config::default()).ok()?;
        let newest = breaker.history(1).await.ok()?.into_iter().next()?;
        if newest.epoch == e.epoch && newest.to == e.to.as_str() { newest.note.filter(|n| !n.is_empty()) } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_path_or_query() {
        let r = Receiver::parse("https://hooks.example.com/services/T000/B000/SECRET?x=1").unwrap();
        assert!(r.tls);
        assert_eq!((r.host.as_str(), r.port), ("hooks.example.com", 443));
        assert_eq!(r.target, "/services/T000/B000/SECRET?x=1");
        assert_eq!(r.shown, "https://hooks.example.com:443");
        let r = Receiver::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (r.host.as_str(), r.port, r.target.as_str(), r.shown.as_str()),
            ("::1", 8080, "/", "http://[::1]:8080")
        );
        for (bad, why) in [
            ("ftp://example.com/SECRET", "not an http:// or https:// URL"),
            ("hooks.example.com/SECRET", "not an http:// or https:// URL"),
            ("https://user:SECRET@example.com/", "a user or password"),
            ("http://example.com:0/SECRET", "port is 0"),
            ("http://exa mple.com/SECRET", "not an http:// or https:// URL"),
        ] {
            let e = Receiver::parse(bad).err().unwrap_or_else(|| panic!("{bad} is refused"));
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("SECRET"), "{bad}: {e}");
        }
    }

    #[test]
    fn slack_text_cannot_mention_or_link() {
        assert_eq!(slack("<!channel>&<https://evil|x>\nnext"), "&lt;!channel&gt;&amp;&lt;https://evil|x&gt; next");
    }

    #[test]
    fn retries_on_the_statuses_that_may_pass_later() {
        for s in [500, 502, 503, 429, 408] {
            assert!(retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 403, 404, 410, 301] {
            assert!(!retryable(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        let base = Duration::from_secs(1);
        for after in 1..=3u32 {
            let full = base * (1 << (after - 1));
            let b = backoff(base, after);
            assert!(b >= full / 2 && b <= full, "{after}: {b:?}");
        }
        assert!(backoff(base, 40) <= BACKOFF_MAX);
    }

    fn transition(name: &str, epoch: u64, to: State) -> Transition {
        Transition {
            name: name.into(),
            from: Some(State::Closed),
            to,
            reason: "test".into(),
            epoch,
            incarnation: 7,
            origin: None,
        }
    }

    #[test]
    fn each_fleet_transition_passes_once() {
        let mut seen = Seen::default();
        assert!(seen.first(&transition("a", 1, State::Open)));
        assert!(!seen.first(&transition("a", 1, State::Open)), "the same transition heard twice");
        assert!(seen.first(&transition("a", 2, State::HalfOpen)));
        assert!(seen.first(&transition("b", 1, State::Open)));
        for epoch in 10..10 + SEEN as u64 {
            seen.first(&transition("c", epoch, State::Open));
        }
        assert_eq!(seen.set.len(), SEEN, "bounded");
    }

    #[test]
    fn a_flapping_breaker_sends_once_per_interval_then_its_last_state() {
        let counters = Counters::default();
        let mut gate = Gate::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let sent = gate.admit(transition("a", 1, State::Open), at(0), &counters).expect("the first is sent");
        assert_eq!(sent.suppressed, 0);
        assert!(gate.admit(transition("b", 1, State::Open), at(1), &counters).is_some(), "per breaker");
        assert!(gate.admit(transition("a", 2, State::HalfOpen), at(1), &counters).is_none());
        assert!(gate.admit(transition("a", 3, State::Closed), at(2), &counters).is_none());
        assert_eq!(counters.suppressed.get(), 1, "the half-open was replaced by the close");
        assert_eq!(gate.next_due(), Some(at(10)));
        assert!(gate.flush(at(5)).is_empty());
        let last = gate.flush(at(10));
        assert_eq!(last.len(), 1);
        assert_eq!((last[0].event.epoch, last[0].suppressed), (3, 1), "the last state, and how many were not sent");
        assert_eq!(gate.next_due(), None);
        assert!(gate.admit(transition("a", 4, State::Open), at(15), &counters).is_none(), "a new interval");
        let after = gate.admit(transition("a", 5, State::HalfOpen), at(21), &counters).expect("due");
        assert_eq!((after.event.epoch, after.suppressed), (5, 1));
        assert_eq!(counters.suppressed.get(), 2);
        let mut off = Gate::new(Duration::ZERO);
        for epoch in 1..5 {
            assert!(off.admit(transition("a", epoch, State::Open), at(0), &counters).is_some());
        }
    }

    fn notifier(queue: usize) -> (Notifier, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(queue);
        let n = Notifier {
            queues: vec![tx].into(),
            counters: Counters::default(),
            held: Mutex::new(HashMap::new()),
            prefix: "breaker".into(),
            filter: Arc::default(),
            tasks: Mutex::new(Vec::new()),
        };
        (n, rx)
    }

    fn alert(breaker: &str, kind: &'static str) -> Alert {
        Alert { breaker: breaker.into(), kind, message: format!("{kind} on {breaker}") }
    }

    fn docs(rx: &mut mpsc::Receiver<Bytes>) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|b| serde_json::from_slice(&b).unwrap()).collect()
    }

    #[test]
    fn alerts_are_sent_when_raised_and_when_cleared_only() {
        let (n, mut rx) = notifier(10);
        n.alerts(&[alert("a", "flapping")]);
        n.alerts(&[alert("a", "flapping")]);
        n.alerts(&[alert("a", "flapping"), alert("<!here>", "open_too_long")]);
        n.alerts(&[alert("<!here>", "open_too_long")]);
        let got: Vec<(String, String, String)> = docs(&mut rx)
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().into(),
                    d["breaker"].as_str().unwrap().into(),
                    d["alert"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want = [
            ("alert_raised", "a", "flapping"),
            ("alert_raised", "<!here>", "open_too_long"),
            ("alert_cleared", "a", "flapping"),
        ];
        assert_eq!(got, want.map(|(k, b, a)| (k.to_string(), b.to_string(), a.to_string())));
        n.alerts(&[]);
        let cleared = docs(&mut rx);
        assert_eq!(cleared[0]["text"], "redis-breaker: alert open_too_long on &lt;!here&gt; cleared");
        assert_eq!(cleared[0]["message"], "open_too_long on <!here>", "the fields are the facts, unescaped");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (n, mut rx) = notifier(2);
        n.alerts(&[alert("a", "flapping"), alert("b", "flapping"), alert("c", "flapping")]);
        assert_eq!((docs(&mut rx).len(), n.counters.dropped.get()), (2, 1));
    }

    /// A loopback receiver that answers each connection with the next status of `statuses`
    /// (the last one repeated; 0 = accept and never answer), counting the requests.
    async fn receiver(statuses: Vec<u16>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/SECRET", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let i = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let status = statuses[i.min(statuses.len() - 1)];
                tokio::spawn(async move {
                    let mut buf = vec![0; 65536];
                    let _ = s.read(&mut buf).await;
                    if status == 0 {
                        return std::future::pending::<()>().await;
                    }
                    let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    fn delivery(attempts: u32) -> Delivery {
        Delivery { attempts, timeout: Duration::from_millis(300), backoff: Duration::from_millis(10), tls: None }
    }

    #[tokio::test]
    async fn delivery_retries_then_succeeds_gives_up_after_n_and_not_on_a_4xx() {
        for (statuses, attempts, (sent, failed, retries), tried) in [
            (vec![500, 503, 200], 5, (1, 0, 2), 3),
            (vec![500], 3, (0, 1, 2), 3),
            (vec![429, 200], 2, (1, 0, 1), 2),
            (vec![404], 5, (0, 1, 0), 1),
            (vec![0], 2, (0, 1, 1), 2),
        ] {
            let (url, count) = receiver(statuses.clone()).await;
            let counters = Counters::default();
            deliver(&Receiver::parse(&url).unwrap(), Bytes::from_static(b"{}"), &delivery(attempts), &counters).await;
            let got = (counters.sent.get(), counters.failed.get(), counters.retries.get());
            assert_eq!(got, (sent, failed, retries), "{statuses:?}");
            assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), tried, "{statuses:?}");
        }
    }
}
