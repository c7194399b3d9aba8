//! [`Breaker`]: the handle a service calls through, and the [`Permit`] of one call.

use crate::cache::{Local, Pending, SnapshotCell, Source, View};
use crate::config::{Config, Degraded, MAX_DURATION};
use crate::error::{ConfigError, Error, StoreError, retry_text};
use crate::events::{Event, EventKind, Subscription, Wire, local_event};
use crate::machine::Machine;
use crate::meters::Meters;
use crate::name::Keys;
use crate::protocol::{Batch, ControlOp, Op, Params, Record, RecordOutcome, Reply, Verdict};
use crate::registry::Handle;
use crate::shared::Shared;
use crate::state::State;
use crate::store::RedisStore;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How a finished call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The downstream worked.
    Success,
    /// The downstream failed: counts toward the trip rules.
    Failure,
    /// Says nothing about the downstream's health (e.g. a 404): counted in metrics only.
    Ignore,
}

/// A call the breaker turned away; returned by [`Breaker::acquire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker is {state}; {}", retry_text(*.retry_after))]
pub struct Rejected {
    /// The state that rejected the call.
    pub state: State,
    /// How long until a call may be let through; `None` when forced open until reset.
    pub retry_after: Option<Duration>,
}

impl<E> From<Rejected> for Error<E> {
    fn from(r: Rejected) -> Self {
        Error::Rejected { state: r.state, retry_after: r.retry_after }
    }
}

/// What a process knows of a breaker, from its local snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The breaker's name.
    pub name: String,
    /// The state when last seen.
    pub state: State,
    /// Changes whenever the stored state was lost and recreated.
    pub incarnation: u64,
    /// +1 on every transition.
    pub epoch: u64,
    /// Failures counted toward the consecutive rule in this closed epoch.
    pub failures: u64,
    /// Whether the snapshot may still decide calls without asking Redis.
    pub fresh: bool,
    /// Why the breaker is in its state, as Redis last said.
    pub reason: String,
}

/// Where a process decides a breaker's calls right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StoreStatus {
    /// Redis answers and decides.
    Redis,
    /// Redis is treated as down: calls follow the degraded mode.
    RedisDown,
    /// The client is in-memory ([`Client::in_memory`](crate::Client::in_memory)).
    InMemory,
}

/// A breaker's health as this process sees it; [`Breaker::health`] refreshes it from Redis.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    /// The snapshot after the refresh.
    pub snapshot: Snapshot,
    /// Where calls are decided.
    pub store: StoreStatus,
    /// The degraded mode used while Redis is down.
    pub degraded_mode: &'static str,
    /// False when the last writer of the state used a different config (a rolling deploy).
    pub config_matches: bool,
    /// This process's config fingerprint.
    pub config_fingerprint: String,
    /// Whether the client's subscription to transitions is live.
    pub events_subscribed: bool,
    /// This client's id ([`Client::id`](crate::Client::id)).
    pub client_id: String,
}

pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) keys: Keys,
    pub(crate) config: Config,
    pub(crate) params: Params,
    pub(crate) snapshot: SnapshotCell,
    pub(crate) pending: Pending,
    pub(crate) shared: Arc<Shared>,
    config_matches: AtomicBool,
    /// False until the in-process breaker has been started from the snapshot since the last
    /// reply from Redis (degraded `Local` continues from what the process knew).
    local_seeded: AtomicBool,
    reason: Mutex<String>,
    events: broadcast::Sender<Event>,
    meters: Meters,
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

/// How a permit was granted: it decides where its outcome goes.
#[derive(Debug, Clone)]
enum Grant {
    /// Closed (from the snapshot or from Redis): a healthy success is batched.
    Closed(View),
    /// A half-open probe leased in Redis.
    Probe { view: View, id: String },
    /// Decided by the in-process breaker (in-memory client, or degraded `Local`).
    Local { view: View, probe: String },
    /// Allowed by `Degraded::FailOpen`: nothing to record.
    Free,
}

/// Permission for one call. Report how it went with [`success`](Permit::success),
/// [`failure`](Permit::failure) or [`ignore`](Permit::ignore); dropping it records nothing and
/// frees a half-open probe lease.
#[derive(Debug)]
#[must_use = "a permit should be finished with success(), failure() or ignore()"]
pub struct Permit {
    breaker: Breaker,
    grant: Option<Grant>,
}

impl Permit {
    /// True when this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        match &self.grant {
            Some(Grant::Probe { .. }) => true,
            Some(Grant::Local { probe, .. }) => !probe.is_empty(),
            _ => false,
        }
    }

    /// Reports a success.
    pub async fn success(mut self) {
        self.finish(Outcome::Success, false, false).await;
    }

    /// Reports a failure; it is recorded before this returns.
    pub async fn failure(mut self) {
        self.finish(Outcome::Failure, false, false).await;
    }

    /// Reports an outcome that says nothing about the downstream's health.
    pub async fn ignore(mut self) {
        self.finish(Outcome::Ignore, false, false).await;
    }

    /// Gives the permit back without an outcome, and waits until its probe lease (if it holds
    /// one) is freed in Redis. Dropping a permit does the same in the background.
    pub async fn release(mut self) {
        if let Some(record) = self.grant.take().and_then(|g| self.breaker.release_record(g)) {
            self.breaker.send_record(record).await;
        }
    }

    async fn finish(&mut self, outcome: Outcome, slow: bool, timed_out: bool) {
        if let Some(grant) = self.grant.take() {
            self.breaker.finish(grant, outcome, slow, timed_out).await;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            self.breaker.release(grant);
        }
    }
}

/// The grant of one `execute`: borrowed, so the hot path touches no reference count. Dropped
/// unfinished (the call was cancelled or panicked), it releases its probe lease like a permit.
struct CallGuard<'b> {
    breaker: &'b Breaker,
    grant: Option<Grant>,
}

impl CallGuard<'_> {
    async fn finish(mut self, outcome: Outcome, slow: bool, timed_out: bool) {
        if let Some(grant) = self.grant.take() {
            self.breaker.finish(grant, outcome, slow, timed_out).await;
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            self.breaker.release(grant);
        }
    }
}

/// Runs `fut` with a deadline. The timer is armed only if the first poll does not finish the
/// call, so a call that completes at once costs no timer registration.
async fn with_deadline<F: Future>(fut: F, limit: Duration) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut sleep = std::pin::pin!(None::<tokio::time::Sleep>);
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(cx) {
            return std::task::Poll::Ready(Some(v));
        }
        if sleep.is_none() {
            sleep.set(Some(tokio::time::sleep(limit)));
        }
        match sleep.as_mut().as_pin_mut().map(|s| s.poll(cx)) {
            Some(std::task::Poll::Ready(())) => std::task::Poll::Ready(None),
            _ => std::task::Poll::Pending,
        }
    })
    .await
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
            local_seeded: AtomicBool::new(false),
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

    /// Runs `f` through the breaker: `Ok` counts as a success, `Err` as a failure.
    ///
    /// # Errors
    /// [`Error::Rejected`] when the breaker is open (`f` is not called), [`Error::Inner`] with
    /// `f`'s error, [`Error::Timeout`] when `f` took longer than `call_timeout`.
    pub async fn execute<T, E, F, Fut>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.execute_with(|r: &Result<T, E>| if r.is_ok() { Outcome::Success } else { Outcome::Failure }, f).await
    }

    /// Runs `f` through the breaker; `classify` decides how its result counts (for example, a
    /// 404 is [`Outcome::Ignore`] and a 503 is [`Outcome::Failure`]).
    ///
    /// # Errors
    /// As [`execute`](Breaker::execute).
    pub async fn execute_with<T, E, F, Fut, C>(&self, classify: C, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Outcome,
    {
        use futures_util::FutureExt;
        let guard = CallGuard { breaker: self, grant: Some(self.grant().await?) };
        let config = &self.inner.config;
        let started = config.slow_call_rate.is_some().then(Instant::now);
        // A panic inside the call is the downstream's client failing: it counts as a failure
        // (and frees a probe), then keeps unwinding.
        let call = std::panic::AssertUnwindSafe(f()).catch_unwind();
        match with_deadline(call, config.call_timeout).await {
            Some(Ok(result)) => {
                let slow = started.is_some_and(|s| s.elapsed() >= config.slow_call_duration);
                guard.finish(classify(&result), slow, false).await;
                result.map_err(Error::Inner)
            }
            Some(Err(panic)) => {
                guard.finish(Outcome::Failure, false, false).await;
                std::panic::resume_unwind(panic)
            }
            None => {
                guard.finish(Outcome::Failure, config.slow_call_rate.is_some(), true).await;
                Err(Error::Timeout(config.call_timeout))
            }
        }
    }

    /// Asks for permission to make one call, for callers that cannot wrap the call in a closure.
    ///
    /// # Errors
    /// [`Rejected`] when the breaker turns the call away.
    pub async fn acquire(&self) -> Result<Permit, Rejected> {
        let grant = self.grant().await?;
        Ok(Permit { breaker: self.clone(), grant: Some(grant) })
    }

    async fn grant(&self) -> Result<Grant, Rejected> {
        match self.inner.snapshot.decide(Instant::now()) {
            Local::Allow(view) => Ok(Grant::Closed(view)),
            Local::Reject { state, retry_after } => Err(self.reject(state, retry_after)),
            Local::Miss => match self.stale_while_refreshing() {
                Some(view) => Ok(Grant::Closed(view)),
                None => self.grant_single_flight().await,
            },
        }
    }

    /// A snapshot that cannot decide (cold, expired, marked stale after a Redis restart):
    /// one caller asks Redis for the whole process while the others wait for its reply (at
    /// most `op_timeout`) and decide from the snapshot it brings. A caller that still cannot
    /// decide (a half-open probe of its own) asks Redis itself.
    async fn grant_single_flight(&self) -> Result<Grant, Rejected> {
        let inner = &*self.inner;
        if self.redis_up().is_none() || tokio::runtime::Handle::try_current().is_err() {
            return self.grant_slow().await;
        }
        if inner.snapshot.claim_refresh() {
            let _claim = RefreshClaim(&inner.snapshot);
            return self.grant_slow().await;
        }
        inner.snapshot.wait_for_refresh(inner.shared.config.op_timeout).await;
        match inner.snapshot.decide(Instant::now()) {
            Local::Allow(view) => Ok(Grant::Closed(view)),
            Local::Reject { state, retry_after } => Err(self.reject(state, retry_after)),
            Local::Miss => self.grant_slow().await,
        }
    }

    /// Single flight: when a closed snapshot has just expired, one task refreshes it from Redis
    /// while every caller keeps deciding from it. Not while Redis is down (then the degraded
    /// mode decides) nor without a runtime to refresh on.
    fn stale_while_refreshing(&self) -> Option<View> {
        let inner = &*self.inner;
        let redis = inner.shared.redis.as_ref()?;
        if redis.is_down() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (view, claimed) = inner.snapshot.stale_closed(Instant::now(), inner.shared.cache_ttl())?;
        if claimed {
            let breaker = self.clone();
            runtime.spawn(async move {
                let _ = breaker.flush().await;
                breaker.inner.snapshot.refreshed();
            });
        }
        Some(view)
    }

    /// Frees the probe lease of a grant that ends with no outcome; records nothing.
    fn release(&self, grant: Grant) {
        if let Some(record) = self.release_record(grant)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // Without a runtime the lease simply expires after probe_lease.
            let breaker = self.clone();
            handle.spawn(async move { breaker.send_record(record).await });
        }
    }

    /// The record that frees a grant's Redis probe lease, if it holds one; a local lease is
    /// freed here and now.
    fn release_record(&self, grant: Grant) -> Option<Record> {
        let (view, probe, local) = match grant {
            Grant::Probe { view, id } => (view, id, false),
            Grant::Local { view, probe } if !probe.is_empty() => (view, probe, true),
            _ => return None,
        };
        if local {
            self.run_local(&Op::Record(local_record(RecordOutcome::Release, &view, probe, false, false)));
            return None;
        }
        Some(self.record_args(RecordOutcome::Release, &view, probe, false, false))
    }

    fn reject(&self, state: State, retry_after: Option<Duration>) -> Rejected {
        self.inner.meters.rejected();
        self.inner.pending.rejected();
        Rejected { state, retry_after }
    }

    async fn grant_slow(&self) -> Result<Grant, Rejected> {
        let id = format!("{:016x}", rand::random::<u64>());
        if let Some(redis) = self.redis_up() {
            let op = Op::Acquire { permit: id.clone(), batch: self.inner.pending.take() };
            // Until the reply is read, the acquire may have leased a probe for `id` that nobody
            // would free: a timeout, or this future dropped, releases it (a no-op otherwise).
            let mut unanswered = UnansweredAcquire { breaker: self, id: Some(id.clone()) };
            let result = self.try_redis(redis, &op).await;
            if matches!(&result, Ok(_) | Err(StoreError::Refused { .. } | StoreError::Invalid(_))) {
                unanswered.id = None;
            }
            drop(unanswered);
            match result {
                Ok(reply) => {
                    let view = view_of(&reply);
                    return match reply.verdict {
                        Verdict::Probe => Ok(Grant::Probe { view, id }),
                        Verdict::Rejected => {
                            Err(self.reject(reply.state, reply.remaining_ms.map(Duration::from_millis)))
                        }
                        _ => Ok(Grant::Closed(view)),
                    };
                }
                Err(e) => {
                    tracing::debug!(breaker = %self.inner.name, error = %e, "redis-breaker: deciding without redis")
                }
            }
        }
        match self.degraded_mode() {
            Degraded::FailOpen => Ok(Grant::Free),
            Degraded::FailClosed => Err(self.reject(State::Open, Some(FAIL_CLOSED_RETRY))),
            _ => {
                self.seed_local();
                let reply = self.run_local(&Op::Acquire { permit: id.clone(), batch: Batch::default() });
                let view = view_of(&reply);
                match reply.verdict {
                    Verdict::Rejected => Err(self.reject(reply.state, reply.remaining_ms.map(Duration::from_millis))),
                    Verdict::Probe => Ok(Grant::Local { view, probe: id }),
                    _ => Ok(Grant::Local { view, probe: String::new() }),
                }
            }
        }
    }

    /// Starts the in-process breaker of a Redis client from the snapshot, once after each reply
    /// from Redis: a breaker the process saw open stays open until the deadline it saw.
    fn seed_local(&self) {
        let inner = &*self.inner;
        if inner.shared.redis.is_none() || inner.local_seeded.swap(true, Ordering::AcqRel) {
            return;
        }
        let (state, view, left) = inner.snapshot.with_deadline(Instant::now());
        let now = inner.shared.local.clock.now_ms();
        let open_until = left.map_or(0, |d| now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4).max(1));
        inner.shared.local.seed(&inner.name, Machine::seeded(state, view.failures, open_until, now));
    }

    fn degraded_mode(&self) -> Degraded {
        if self.inner.shared.redis.is_none() { Degraded::Local } else { self.inner.shared.config.degraded }
    }

    /// The Redis store, unless there is none or it is treated as down.
    fn redis_up(&self) -> Option<&RedisStore> {
        self.inner.shared.redis.as_ref().filter(|r| !r.is_down())
    }

    /// Runs `op` on Redis; the reply refreshes the snapshot. When Redis could not be reached
    /// the batch the op carried is kept for the next call. It is not kept when the request may
    /// have been applied (a timeout; a reply that could not be read) nor when Redis refused it
    /// (the same batch would be refused again, for ever).
    async fn try_redis(&self, redis: &RedisStore, op: &Op) -> Result<Reply, StoreError> {
        let inner = &*self.inner;
        let sent = Instant::now();
        let result = redis.run(&inner.keys, &inner.params, op, None, rand::random()).await;
        match &result {
            Ok(reply) => self.absorb(reply, sent),
            Err(StoreError::Unreachable(_)) => {
                if let Some(batch) = op.batch() {
                    inner.pending.restore(batch);
                }
            }
            Err(e @ (StoreError::Refused { .. } | StoreError::Protocol { .. })) => {
                if op.batch().is_some_and(|b| *b != Batch::default()) {
                    tracing::warn!(breaker = %inner.name, error = %e, "batched counts dropped: redis refused them");
                }
            }
            Err(_) => {}
        }
        result
    }

    pub(crate) fn run_local(&self, op: &Op) -> Reply {
        let inner = &*self.inner;
        let (reply, transitions) = inner.shared.local.run(&inner.name, &inner.params, op, rand::random());
        // The snapshot shows what decides the calls (for `state()`, `snapshot()`, `health()`), but
        // is never fresh: the next call asks the local machine, or Redis once it is back.
        inner.snapshot.apply(&reply, Source::Local, Duration::ZERO);
        let last = transitions.len().saturating_sub(1);
        for (i, t) in transitions.iter().enumerate() {
            let remaining = if i == last { reply.remaining_ms } else { Some(0) };
            let event = local_event(&inner.name, &inner.shared.id, t, reply.incarnation, t.epoch, remaining);
            inner.meters.transition(event.from, event.to);
            let _ = inner.shared.all_events.send(event.clone());
            let _ = inner.events.send(event);
        }
        reply
    }

    /// Transitions of this breaker as they happen, in any process (through the client's
    /// subscription to `<prefix>:events`), or in this one while it decides without Redis.
    pub fn subscribe(&self) -> Subscription {
        Subscription { rx: self.inner.events.subscribe() }
    }

    fn absorb(&self, reply: &Reply, sent: Instant) {
        let inner = &*self.inner;
        inner.snapshot.apply(reply, Source::Reply(sent), inner.shared.cache_ttl());
        inner.local_seeded.store(false, Ordering::Release);
        inner.meters.state(reply.state);
        let matches = reply.stored_config.is_empty() || reply.stored_config == inner.params.fingerprint;
        if inner.config_matches.swap(matches, Ordering::Relaxed) && !matches {
            tracing::warn!(
                breaker = %inner.name,
                ours = %inner.params.fingerprint,
                stored = %reply.stored_config,
                "redis-breaker: another process wrote this breaker with a different config"
            );
        }
        let mut reason = inner.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *reason != reply.reason {
            reason.clone_from(&reply.reason);
        }
    }

    fn record_args(&self, outcome: RecordOutcome, view: &View, probe: String, slow: bool, timed_out: bool) -> Record {
        Record {
            outcome,
            incarnation: view.incarnation,
            epoch: view.epoch,
            probe,
            slow,
            timed_out,
            fseq: view.fseq,
            batch: self.inner.pending.take(),
        }
    }

    async fn finish(&self, grant: Grant, outcome: Outcome, slow: bool, timed_out: bool) {
        self.inner.meters.outcome(outcome, timed_out);
        let kind = match outcome {
            Outcome::Success => RecordOutcome::Success,
            Outcome::Failure => RecordOutcome::Failure,
            Outcome::Ignore => RecordOutcome::Ignore,
        };
        match grant {
            Grant::Free => self.count_loose(outcome),
            Grant::Closed(_) if outcome == Outcome::Ignore => self.inner.pending.ignored(),
            Grant::Closed(view) if outcome == Outcome::Success && view.failures == 0 => {
                self.inner.pending.success(&view, slow);
            }
            Grant::Closed(view) => {
                self.deliver(self.record_args(kind, &view, String::new(), slow, timed_out)).await;
            }
            Grant::Probe { view, id } => self.deliver(self.record_args(kind, &view, id, slow, timed_out)).await,
            Grant::Local { view, probe } => {
                // The pending batch stays pending: it goes to Redis when Redis is back.
                self.run_local(&Op::Record(local_record(kind, &view, probe, slow, timed_out)));
                self.count_loose(outcome);
            }
        }
    }

    /// Sends an outcome on a task of its own and waits for it: a caller that stops waiting
    /// (a cancelled future) does not cancel the record, which is sent exactly once.
    async fn deliver(&self, record: Record) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let breaker = self.clone();
                let _ = runtime.spawn(async move { breaker.send_record(record).await }).await;
            }
            Err(_) => self.send_record(record).await,
        }
    }

    /// Counts the outcome of a call decided without Redis, for Redis's metrics once it is back.
    fn count_loose(&self, outcome: Outcome) {
        if self.inner.shared.redis.is_none() {
            return;
        }
        match outcome {
            Outcome::Ignore => self.inner.pending.ignored(),
            _ => self.inner.pending.loose(outcome == Outcome::Success),
        }
    }

    /// Sends a record to Redis; when Redis cannot take it, a batch it carried is kept for the
    /// next flush unless the request may have been applied (a timeout is never resent), and the
    /// outcome itself is counted for Redis's metrics (it moves no state: Redis did not see it).
    async fn send_record(&self, record: Record) {
        let outcome = match record.outcome {
            RecordOutcome::Success => Some(Outcome::Success),
            RecordOutcome::Failure => Some(Outcome::Failure),
            RecordOutcome::Ignore => Some(Outcome::Ignore),
            RecordOutcome::Release | RecordOutcome::None => None,
        };
        let op = Op::Record(record);
        let delivered = match self.redis_up() {
            Some(redis) => match self.try_redis(redis, &op).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(breaker = %self.inner.name, error = %e, "an outcome was not delivered");
                    // A timed-out record may have been applied: counting it again would count it twice.
                    matches!(e, StoreError::Timeout(_))
                }
            },
            None => {
                if let Some(batch) = op.batch() {
                    self.inner.pending.restore(batch);
                }
                false
            }
        };
        if let (false, Some(outcome)) = (delivered, outcome) {
            self.count_loose(outcome);
        }
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
        let Some(redis) = self.inner.shared.redis.as_ref() else { return Ok(()) };
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
        self.try_redis(redis, &Op::Record(record)).await.map(drop)
    }

    /// Refreshes the snapshot from Redis (flushing pending counts) and reports health.
    ///
    /// # Errors
    /// Never for an in-memory client; otherwise the [`StoreError`] of the refresh. A breaker
    /// whose Redis is down reports `store: RedisDown` instead of failing.
    pub async fn health(&self) -> Result<Health, StoreError> {
        let store = match &self.inner.shared.redis {
            None => StoreStatus::InMemory,
            Some(redis) => match self.flush().await {
                Ok(()) => StoreStatus::Redis,
                Err(e) if e.is_outage() || redis.is_down() => StoreStatus::RedisDown,
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

    async fn control(&self, op: ControlOp, duration: Option<Duration>) -> Result<Snapshot, StoreError> {
        if let Some(d) = duration.filter(|d| *d > MAX_DURATION) {
            return Err(StoreError::Invalid(ConfigError::Field {
                field: "duration",
                reason: format!(
                    "must be at most {} (2^43 ms), got {}s",
                    crate::duration::format_duration(MAX_DURATION),
                    d.as_secs()
                ),
            }));
        }
        let duration_ms = duration.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        let op = Op::Control { op, duration_ms };
        let inner = &*self.inner;
        match inner.shared.redis.as_ref() {
            None => {
                let reply = self.run_local(&op);
                self.absorb(&reply, Instant::now());
            }
            Some(redis) => drop(self.try_redis(redis, &op).await?),
        }
        Ok(self.snapshot())
    }

    /// Reads everything Redis holds about this breaker (state, probes, metrics, TTLs) in one
    /// read-only script. For an in-memory client, the local machine's view.
    ///
    /// # Errors
    /// [`StoreError`] when Redis could not be read.
    pub async fn status(&self) -> Result<crate::Status, StoreError> {
        let inner = &*self.inner;
        let raw = match inner.shared.redis.as_ref() {
            Some(redis) => redis.status(&inner.keys).await?,
            None => inner.shared.local.status(&inner.name),
        };
        Ok(crate::Status::from_raw(&inner.name, raw))
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

fn mode_name(mode: Degraded) -> &'static str {
    match mode {
        Degraded::FailOpen => "fail-open",
        Degraded::FailClosed => "fail-closed",
        _ => "local",
    }
}

/// What `Degraded::FailClosed` tells a rejected caller while Redis is down.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

/// The record of an outcome decided by the local machine: it carries no batch (the pending
/// counts stay pending for Redis).
fn local_record(outcome: RecordOutcome, view: &View, probe: String, slow: bool, timed_out: bool) -> Record {
    Record {
        outcome,
        incarnation: view.incarnation,
        epoch: view.epoch,
        probe,
        slow,
        timed_out,
        fseq: view.fseq,
        batch: Batch::default(),
    }
}

/// The claim of a breaker's one refresh; ended (and the waiters woken) when dropped, also when
/// the claiming caller is cancelled.
struct RefreshClaim<'s>(&'s SnapshotCell);

impl Drop for RefreshClaim<'_> {
    fn drop(&mut self) {
        self.0.refreshed();
    }
}

/// An acquire sent to Redis whose reply has not been read: dropped while it still holds the
/// permit id, it releases that id in the background (a probe lease the acquire may have taken).
struct UnansweredAcquire<'b> {
    breaker: &'b Breaker,
    id: Option<String>,
}

impl Drop for UnansweredAcquire<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let breaker = self.breaker.clone();
        // The permit's epoch is unknown; a lease still held is freed whatever epoch it names.
        let record = local_record(RecordOutcome::Release, &View::default(), id, false, false);
        runtime.spawn(async move { breaker.send_record(record).await });
    }
}

fn view_of(reply: &Reply) -> View {
    View { incarnation: reply.incarnation, epoch: reply.epoch, failures: reply.failures, fseq: reply.fseq }
}
