//! [`Breaker`]: the handle a service calls through, and everything of one breaker in one
//! process. This file holds the handle and the operator's calls; `inner.rs` the state every
//! handle of a name shares; the call path in `permit.rs` (how a call gets permission, the
//! [`Permit`](permit::Permit)), `execute.rs` (`execute`) and `outcome.rs` (how a call ends);
//! `route.rs` the choice between Redis, the in-process breaker and the degraded mode,
//! `snapshot.rs` the snapshot the hot path reads (`seqlock.rs` its lock-free words, `view.rs`
//! what a call was let through under),
//! `pending.rs` the counts waiting for the next script call (`lanes.rs` the ids they go under),
//! `health.rs` what a process can report without a call.

mod execute;
pub(crate) mod health;
pub(crate) mod inner;
pub(crate) mod lanes;
mod outcome;
pub(crate) mod pending;
pub(crate) mod permit;
pub(crate) mod route;
mod seqlock;
pub(crate) mod snapshot;
pub(crate) mod view;

use crate::breaker::health::{Health, Snapshot};
use crate::breaker::inner::Inner;
use crate::client::registry::Handle;
use crate::config::{Config, MAX_DURATION};
use crate::error::{ConfigError, StoreError};
use crate::events::Subscription;
use crate::protocol::{ControlOp, Op, Record};
use crate::state::State;
use std::sync::Arc;

/// The longest operator's note kept with a forced state or reset.
const MAX_NOTE: usize = 200;
use std::sync::atomic::Ordering;
use std::time::Duration;

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
            announced: inner.snapshot.announced(),
            ramp: inner.snapshot.ramp(std::time::Instant::now()),
        }
    }

    /// Sends the batched counts now and refreshes the snapshot from Redis.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be reached; the counts are kept for the next flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        if !self.inner.shared.store.is_shared() {
            return Ok(());
        }
        let report = self.inner.deferred_report();
        let record = Record { active: self.inner.active_due(), report, ..Record::flush(self.inner.take_pending()) };
        let sent = self.inner.run(&Op::Record(record)).await;
        self.inner.report_sent(report, &sent);
        sent.map(drop)
    }

    /// `flush` on an owned handle (a future that borrows nothing, for a flush round).
    pub(crate) async fn flush_owned(self) -> Result<(), StoreError> {
        self.flush().await
    }

    /// Refreshes the snapshot from Redis (flushing pending counts) and reports health.
    ///
    /// # Errors
    /// Never for an in-memory client; otherwise the [`StoreError`] of the refresh. A breaker
    /// whose Redis is down reports `store: RedisDown` instead of failing.
    pub async fn health(&self) -> Result<Health, StoreError> {
        let store = self.inner.shared.store.status_after(self.flush().await)?;
        let own_state = self.inner.own.as_ref().map(crate::quorum::OwnBreaker::state);
        Ok(Health {
            snapshot: self.snapshot(),
            store,
            degraded_mode: self.inner.shared.config.degraded.as_str(),
            config_matches: self.inner.config_matches.load(Ordering::Relaxed),
            config_fingerprint: self.inner.params.fingerprint.clone(),
            events_subscribed: self.inner.shared.events_reach(&self.inner.name),
            client_id: self.inner.shared.id.clone(),
            shadow: self.inner.config.shadow,
            scripts: self.inner.shared.store.script_mode(),
            quorum: self.inner.config.quorum,
            quorum_fraction: self.inner.config.quorum_fraction,
            own_state,
            reporting: own_state.is_some_and(|state| state != State::Closed),
        })
    }

    pub(crate) async fn control(
        &self,
        op: ControlOp,
        duration: Option<Duration>,
        note: &str,
    ) -> Result<Snapshot, StoreError> {
        if note.len() > MAX_NOTE || note.chars().any(char::is_control) {
            return Err(StoreError::Invalid(ConfigError::Field {
                field: "note",
                reason: format!("must be at most {MAX_NOTE} bytes on one line, got {} bytes", note.len()),
            }));
        }
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
        let reply = self.inner.run(&Op::Control { op, duration_ms, note: note.to_string() }).await?;
        // What this write did: the reply's, not a snapshot an event may have replaced meanwhile.
        let snapshot = Snapshot { announced: reply.announced, ..self.snapshot() };
        if let Some(warning) = snapshot.unannounced_warning() {
            tracing::warn!(breaker = %self.inner.name, op = op.as_str(), "{warning}");
        }
        Ok(snapshot)
    }

    /// The breaker's last transitions, newest first (at most `count`; Redis keeps about 100):
    /// when, from and to which state, why, the epoch and trips, which client caused it, and an
    /// operator's note. Empty for an in-memory client.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn history(&self, count: usize) -> Result<Vec<crate::status::HistoryEntry>, StoreError> {
        self.inner.shared.store.history(&self.inner.keys, count).await
    }

    /// Reads everything Redis holds about this breaker (state, probes, metrics, TTLs) in one
    /// read-only script. For an in-memory client, the local machine's view.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn status(&self) -> Result<crate::status::Status, StoreError> {
        Ok(crate::status::Status::from_raw(&self.inner.name, self.inner.read_status().await?))
    }

    /// Opens the breaker for every process: for `duration`, after which it behaves as an
    /// expired open (half-open probes), or until [`reset`](Breaker::reset) when `None`.
    ///
    /// An operator's write is only worth something if the fleet hears of it: processes holding
    /// an older snapshot decide from it until it expires (up to `subscribed_cache_ttl`, 30s by
    /// default) unless the transition's event reaches them. So when this Redis user may not
    /// publish on the events channel (Redis 7's `acl-pubsub-default resetchannels`, `-publish`):
    /// - on Redis and Valkey >= 7.0, which tell it before anything is written
    ///   (`redis.acl_check_cmd`), the write is refused: [`StoreError::PublishDenied`], naming the
    ///   channel to grant, and nothing changes in Redis (no state, no history entry);
    /// - before 7.0, which tells it only when the PUBLISH fails, the write is made and the
    ///   returned [`Snapshot::announced`] is false: the breaker is open in Redis, every process
    ///   that asks Redis trusts that state for `cache_ttl` only, but one holding an older
    ///   snapshot keeps deciding from it until it expires. It is logged as a warning
    ///   ([`Snapshot::unannounced_warning`]); the CLI and the console say so and fail.
    ///
    /// The same holds for every operator's call below. A write that makes no transition (a
    /// reset of a closed breaker) publishes nothing and is never refused; transitions caused by
    /// calls (a trip) are never refused either: they are written and marked unannounced.
    ///
    /// # Errors
    /// [`StoreError::PublishDenied`] as above (nothing written); another [`StoreError`] when
    /// Redis could not apply it (nothing changed, or for a timeout, maybe).
    pub async fn force_open(&self, duration: Option<Duration>) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::ForceOpen, duration, "").await
    }

    /// [`force_open`](Breaker::force_open) with an operator's note, kept in the breaker's
    /// [`history`](Breaker::history) (e.g. "deploy 4711 rollback"; at most 200 bytes, one line).
    ///
    /// # Errors
    /// As [`force_open`](Breaker::force_open); [`StoreError::Invalid`] for a bad note.
    pub async fn force_open_noted(&self, duration: Option<Duration>, note: &str) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::ForceOpen, duration, note).await
    }

    /// Closes the breaker for every process; it records metrics but never trips. After
    /// `duration` it is closed; with `None` it lasts until [`reset`](Breaker::reset).
    ///
    /// Refused with [`StoreError::PublishDenied`] (nothing written) when Redis >= 7.0 tells that
    /// its event could not be published; before 7.0 made, and reported with
    /// [`Snapshot::announced`] false: see [`force_open`](Breaker::force_open).
    ///
    /// # Errors
    /// As [`force_open`](Breaker::force_open).
    pub async fn force_close(&self, duration: Option<Duration>) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::ForceClose, duration, "").await
    }

    /// [`force_close`](Breaker::force_close) with an operator's note for the history.
    ///
    /// # Errors
    /// As [`force_open_noted`](Breaker::force_open_noted).
    pub async fn force_close_noted(&self, duration: Option<Duration>, note: &str) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::ForceClose, duration, note).await
    }

    /// Returns the breaker to closed with failures, trips, probes and window cleared (metrics
    /// are kept).
    ///
    /// Refused with [`StoreError::PublishDenied`] (nothing written) when it would make a
    /// transition (the breaker is not closed) and Redis >= 7.0 tells that its event could not be
    /// published; before 7.0 made, and reported with [`Snapshot::announced`] false: see
    /// [`force_open`](Breaker::force_open). A reset of a closed breaker announces nothing and is
    /// never refused.
    ///
    /// # Errors
    /// As [`force_open`](Breaker::force_open).
    pub async fn reset(&self) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::Reset, None, "").await
    }

    /// [`reset`](Breaker::reset) with an operator's note for the history.
    ///
    /// # Errors
    /// As [`force_open_noted`](Breaker::force_open_noted).
    pub async fn reset_noted(&self, note: &str) -> Result<Snapshot, StoreError> {
        self.control(ControlOp::Reset, None, note).await
    }
}
