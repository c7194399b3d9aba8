//! [`Breaker`]: the handle a service calls through. This file holds the handle, its state, and
//! the operator's calls; the call path is in `permit.rs`, the choice between Redis, the
//! in-process breaker and the degraded mode in `route.rs`.

use crate::client_config::Degraded;
use crate::config::{Config, MAX_DURATION};
use crate::error::{ConfigError, StoreError};
use crate::events::{Event, EventKind, Subscription, Wire};
use crate::health::{Health, Snapshot, StoreStatus, mode_name};
use crate::meters::Meters;
use crate::name::Keys;
use crate::pending::Pending;
use crate::protocol::{ControlOp, Op, Params, Record, RecordOutcome, Reply, Verdict};
use crate::registry::Handle;
use crate::route::Store;
use crate::shared::Shared;
use crate::snapshot::{SnapshotCell, Source};
use crate::state::State;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) keys: Keys,
    pub(crate) config: Config,
    pub(crate) params: Params,
    pub(crate) snapshot: SnapshotCell,
    pub(crate) pending: Pending,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config_matches: AtomicBool,
    /// False until the in-process breaker has been started from the snapshot since the last
    /// reply from Redis (degraded `Local` continues from what the process knew).
    pub(crate) in_process_seeded: AtomicBool,
    pub(crate) reason: Mutex<String>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) meters: Meters,
}

/// A named breaker whose state is shared by every process that names it. Cheap to clone.
///
/// Get one from [`Client::breaker`](crate::Client::breaker).
#[derive(Clone)]
pub struct Breaker {
    pub(crate) inner: Arc<Inner>,
    /// Keeps the client's background tasks (flush, events) alive while this handle is.
    _client: Arc<Handle<Inner>>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("name", &self.inner.name).field("state", &self.state()).finish()
    }
}

impl Inner {
    pub(crate) fn new(name: &str, keys: Keys, config: Config, shared: Arc<Shared>) -> Arc<Inner> {
        Arc::new(Inner {
            name: name.to_string(),
            keys,
            params: Params::new(&config),
            config,
            snapshot: SnapshotCell::new(shared.base),
            pending: Pending::default(),
            shared,
            config_matches: AtomicBool::new(true),
            in_process_seeded: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            events: broadcast::channel(64).0,
            meters: Meters::new(name),
        })
    }

    /// Applies an event from the subscription, received at `at`, and hands it to subscribers.
    pub(crate) fn on_event(&self, wire: &Wire, at: Instant) {
        let Some(event) = wire.event(&self.shared.id) else { return };
        let reply = Reply {
            verdict: Verdict::Ok,
            state: event.to,
            incarnation: event.incarnation,
            epoch: event.epoch,
            failures: 0,
            fseq: wire.fseq.unwrap_or(0),
            remaining_ms: u64::try_from(wire.retry_after_ms).ok(),
            stored_config: String::new(),
            reason: event.reason.clone(),
        };
        self.snapshot.apply(&reply, Source::Event(at), self.shared.cache_ttl());
        self.meters.transition(event.from, event.to);
        let _ = self.events.send(event);
    }

    /// Tells subscribers that Redis went down or came back for this process.
    pub(crate) fn store_event(&self, up: bool, mode: Degraded) {
        let (state, view, _) = self.snapshot.view();
        let (kind, reason) = if up {
            (EventKind::StoreUp, "redis answers again: it decides this breaker's calls".to_string())
        } else {
            (
                EventKind::StoreDown,
                format!("redis is unreachable: calls are decided by the degraded mode ({})", mode_name(mode)),
            )
        };
        let _ = self.events.send(Event {
            kind,
            name: self.name.clone(),
            from: Some(state),
            to: state,
            incarnation: view.incarnation,
            epoch: view.epoch,
            retry_after: None,
            reason,
            origin: None,
            caused_here: true,
        });
    }
}

impl Breaker {
    pub(crate) fn new(inner: Arc<Inner>, client: Arc<Handle<Inner>>) -> Breaker {
        Breaker { inner, _client: client }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The breaker's config.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Transitions of this breaker as they happen, in any process (through the client's
    /// subscription to `<prefix>:events`), or in this one while it decides without Redis.
    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.inner.events.subscribe() }
    }

    /// The state as this process last saw it; no Redis command.
    pub fn state(&self) -> State {
        self.inner.snapshot.view().0
    }

    /// The local snapshot; no Redis command.
    pub fn snapshot(&self) -> Snapshot {
        let inner = &*self.inner;
        let (state, view, fresh) = inner.snapshot.view();
        Snapshot {
            name: inner.name.clone(),
            state,
            incarnation: view.incarnation,
            epoch: view.epoch,
            failures: view.failures,
            fresh,
            reason: inner.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        }
    }

    /// Sends the batched counts now and refreshes the snapshot from Redis.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be reached; the counts are kept for the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if matches!(self.store(), Store::InMemory) {
            return Ok(());
        }
        let record = Record {
            outcome: RecordOutcome::None,
            incarnation: 0,
            epoch: 0,
            probe: String::new(),
            slow: false,
            timed_out: false,
            fseq: 0,
            batch: self.inner.pending.take(),
        };
        self.run(&Op::Record(record)).await.map(drop)
    }

    /// Refreshes the snapshot from Redis (flushing pending counts) and reports health.
    ///
    /// # Errors
    /// Never for an in-memory client; otherwise the [`StoreError`] of the refresh. A breaker
    /// whose Redis is down reports `store: RedisDown` instead of failing.
    pub async fn health(&self) -> Result<Health, StoreError> {
        let store = match self.store() {
            Store::InMemory => StoreStatus::InMemory,
            _ => match self.flush().await {
                Ok(()) => StoreStatus::Redis,
                Err(e) if e.is_outage() || matches!(self.store(), Store::Down(_)) => StoreStatus::RedisDown,
                Err(e) => return Err(e),
            },
        };
        Ok(Health {
            snapshot: self.snapshot(),
            store,
            degraded_mode: mode_name(self.inner.shared.config.degraded),
            config_matches: self.inner.config_matches.load(Ordering::Relaxed),
            config_fingerprint: self.inner.params.fingerprint.clone(),
            events_subscribed: self.inner.shared.subscribed.load(Ordering::Acquire),
            client_id: self.inner.shared.id.clone(),
        })
    }

    pub(crate) async fn control(&self, op: ControlOp, duration: Option<Duration>) -> Result<Snapshot, StoreError> {
        if let Some(d) = duration.filter(|d| *d > MAX_DURATION) {
            return Err(StoreError::Invalid(ConfigError::Field {
                field: "duration",
                reason: format!(
                    "must be at most {} (2^43 ms), got {}s",
                    crate::duration::format(MAX_DURATION),
                    d.as_secs()
                ),
            }));
        }
        let duration_ms = duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self.run(&Op::Control { op, duration_ms }).await?;
        Ok(self.snapshot())
    }

    /// Reads everything Redis holds about this breaker (state, probes, metrics, TTLs) in one
    /// read-only script. For an in-memory client, the local machine's view.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn status(&self) -> Result<crate::status::Status, StoreError> {
        Ok(crate::status::Status::from_raw(&self.inner.name, self.read_status().await?))
    }

    /// Opens the breaker for every process: for `duration`, after which it behaves as an
    /// expired open (half-open probes), or until [`reset`](Breaker::reset) when `None`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not apply it (nothing changed, or for a timeout, maybe).
    pub async fn force_open(&self, duration: Option<Duration>) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::ForceOpen, duration).await
    }

    /// Closes the breaker for every process; it records metrics but never trips. After
    /// `duration` it is closed; with `None` it lasts until [`reset`](Breaker::reset).
    ///
    /// # Errors
    /// As [`force_open`](Breaker::force_open).
    pub async fn force_close(&self, duration: Option<Duration>) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::ForceClose, duration).await
    }

    /// Returns the breaker to closed with failures, trips, probes and window cleared (metrics
    /// are kept).
    ///
    /// # Errors
    /// As [`force_open`](Breaker::force_open).
    pub async fn reset(&self) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::Reset, None).await
    }
}
