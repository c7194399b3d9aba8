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
//!
//! By concern: [`receiver`] checks a URL, [`follow`] follows the fleet's transitions (dedup,
//! minimum interval), [`document`] composes what is POSTed, [`delivery`] queues and retries,
//! and [`post`] makes one POST (HTTP or HTTPS).

mod delivery;
mod document;
mod follow;
mod post;
mod receiver;
#[cfg(test)]
mod tests;

use super::alerts::{Alert, now_ms};
use delivery::{Delivery, deliver_all, drained};
use document::{Compose, Document};
use follow::{Follow, Gate, Seen, Transition};
use hyper::body::Bytes;
use post::tls_connector;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use receiver::Receiver;
use redis_breaker::status::Status;
use redis_breaker::{Client, State};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

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
    /// Each breaker's (incarnation, epoch, state) at the last shared read: `None` before the
    /// first.
    states: Mutex<Option<States>>,
    /// Transitions the shared reads found, to the task that follows the events.
    found: mpsc::UnboundedSender<Transition>,
}

type Filter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Each breaker's (incarnation, epoch, state), by name.
type States = HashMap<String, (u64, u64, State)>;

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
        // An empty $REDIS_BREAKER_NOTIFY (or extra spaces in it) names no receiver.
        let urls: Vec<&String> = args.urls.iter().filter(|u| !u.trim().is_empty()).collect();
        if urls.is_empty() {
            return Ok(None);
        }
        let mut receivers = Vec::new();
        for (i, url) in urls.into_iter().enumerate() {
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
        // True after the shutdown signal once every transition is composed and queued.
        let (composed_tx, composed) = watch::channel(false);
        for r in receivers {
            let (tx, rx) = mpsc::channel(args.queue as usize);
            queues.push(tx);
            tracing::info!(receiver = %r.shown, "notifications go to this receiver");
            tasks.push(tokio::spawn(deliver_all(
                r,
                rx,
                delivery.clone(),
                counters.clone(),
                shutdown.clone(),
                composed.clone(),
            )));
        }
        let queues: Arc<[mpsc::Sender<Bytes>]> = queues.into();
        let filter: Arc<Mutex<Option<Filter>>> = Arc::default();
        let (inbox, drafts) = mpsc::channel(INBOX);
        let (found, reads) = mpsc::unbounded_channel();
        let prefix = client.config().prefix().to_string();
        let follow = Follow {
            gate: Gate::new(args.min_interval),
            seen: Seen::default(),
            inbox,
            filter: filter.clone(),
            counters: counters.clone(),
            receivers: queues.len() as u64,
            found: VecDeque::new(),
            latest: HashMap::new(),
        };
        let shutdown_copy = shutdown.clone();
        tasks.push(tokio::spawn(follow.run(client.subscribe_all(), reads, shutdown)));
        let compose = Compose { client: client.clone(), prefix: prefix.clone(), note_timeout: delivery.timeout };
        let composing = compose.run(drafts, queues.clone(), counters.clone());
        let mut stopping = shutdown_copy;
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                // Ends after the shutdown signal, once Follow has passed on what it held back.
                () = composing => {}
                () = drained(&mut stopping) => {}
            }
            let _ = stopping.wait_for(|s| *s).await;
            let _ = composed_tx.send(true);
        }));
        Ok(Some(Arc::new(Notifier {
            queues,
            counters,
            held: Mutex::new(HashMap::new()),
            prefix,
            filter,
            tasks: Mutex::new(tasks),
            states: Mutex::new(None),
            found,
        })))
    }

    /// The breakers' states at a shared read (called after every successful one): a breaker
    /// whose epoch (or incarnation) moved since the last read made a transition, which is
    /// notified if no event tells it within [`MISSED_AFTER`](follow::MISSED_AFTER) (the
    /// subscription was down). Only its last state is known: transitions in between are not
    /// notified. The first read only learns the states.
    pub(crate) fn states<'a>(&self, statuses: impl IntoIterator<Item = &'a Status>) {
        let mut last = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now = HashMap::new();
        for s in statuses {
            now.insert(s.name.clone(), (s.incarnation, s.epoch, s.state));
            let Some(&(was_incarnation, was_epoch, was_state)) = last.as_ref().and_then(|before| before.get(&s.name))
            else {
                continue;
            };
            if (was_incarnation, was_epoch) == (s.incarnation, s.epoch) {
                continue;
            }
            let _ = self.found.send(Transition {
                name: s.name.clone(),
                from: (was_incarnation == s.incarnation).then_some(was_state),
                to: s.state,
                reason: s.reason.clone(),
                epoch: s.epoch,
                incarnation: s.incarnation,
                origin: None,
            });
        }
        *last = Some(now);
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
    /// delivered or [`DRAIN`](delivery::DRAIN) has passed.
    pub(crate) async fn stopped(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for t in tasks {
            let _ = t.await;
        }
    }

    fn enqueue(&self, doc: &Document) {
        doc.fan_out(&self.queues, &self.counters);
    }
}
