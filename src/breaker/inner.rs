//! [`Inner`]: the state of one breaker in one process — its config, snapshot, pending counts,
//! subscribers, meters and, under a quorum, this process's own breaker — how events from other
//! processes reach it, and where the call path meets the quorum (`admit` before a call,
//! `observe` after it). Every `Breaker` handle of the name shares one.

use crate::breaker::pending::Pending;
use crate::breaker::snapshot::{SnapshotCell, Source};
use crate::client::shared::Shared;
use crate::config::Config;
use crate::config::client::Degraded;
use crate::error::{Rejected, StoreError};
use crate::events::{Event, EventKind, Wire, log_transition};
use crate::meters::Meters;
use crate::name::Keys;
use crate::protocol::Batch;
use crate::protocol::{Op, Params, Record, RecordOutcome, Reply, Report, Transition, Verdict};
use crate::quorum::{Admission, Admit, Moved, OwnBreaker};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;

/// One breaker's state in this process.
pub(crate) struct Inner {
    pub(crate) name: String,
    pub(crate) keys: Keys,
    pub(crate) config: Config,
    pub(crate) params: Params,
    pub(crate) snapshot: SnapshotCell,
    pub(crate) pending: Pending,
    /// Nanoseconds since the client's base when a script call last took `pending`.
    pending_sent: AtomicU64,
    /// With a quorum fraction: nanoseconds since the client's base when a record last said
    /// this process is active (0: never).
    active_sent: AtomicU64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) config_matches: AtomicBool,
    /// False until the in-process breaker has been started from the snapshot since the last
    /// reply from Redis (degraded `Local` continues from what the process knew).
    pub(crate) in_process_seeded: AtomicBool,
    /// The epoch whose shadow rejections were last reported (shadow mode: once per epoch).
    shadow_epoch: std::sync::atomic::AtomicU64,
    pub(crate) reason: Mutex<String>,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) meters: Meters,
    /// This process's own breaker, under a quorum (`Config::quorum` > 1).
    pub(crate) own: Option<OwnBreaker>,
}

impl Inner {
    pub(crate) fn new(name: &str, keys: Keys, config: Config, shared: Arc<Shared>) -> Arc<Inner> {
        let params = Params::new(&config);
        Arc::new(Inner {
            name: name.to_string(),
            keys,
            own: params.under_quorum().then(|| OwnBreaker::new(&params, shared.in_process.clock.clone())),
            params,
            config,
            snapshot: SnapshotCell::new(shared.base),
            pending: Pending::default(),
            pending_sent: AtomicU64::new(0),
            active_sent: AtomicU64::new(0),
            shared,
            config_matches: AtomicBool::new(true),
            in_process_seeded: AtomicBool::new(false),
            shadow_epoch: std::sync::atomic::AtomicU64::new(u64::MAX),
            reason: Mutex::new(String::new()),
            events: broadcast::channel(64).0,
            meters: Meters::new(name),
        })
    }

    /// Takes the pending counts for a script call.
    pub(crate) fn take_pending(&self) -> Batch {
        self.pending_sent.store(self.shared.nanos_since_base(Instant::now()), Ordering::Relaxed);
        self.pending.take()
    }

    /// With a quorum fraction: whether the next record says this process is active (about ten
    /// times per window: the processes key keeps each for a window).
    pub(crate) fn active_due(&self) -> bool {
        let now = self.shared.nanos_since_base(Instant::now()).max(1);
        let last = self.active_sent.load(Ordering::Relaxed);
        self.active_due_at(now, last)
            && self.active_sent.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// `active_due` at `now` (ns since the base) when it was last sent at `last` (0: never).
    fn active_due_at(&self, now: u64, last: u64) -> bool {
        let every = self.params.window.saturating_mul(1_000_000) / 10;
        self.params.fraction > 0.0 && (last == 0 || now.saturating_sub(last) >= every)
    }

    /// Whether the background flush sends this breaker's counts now: successes a rolling
    /// window needs (every flush), a process's word that it is active (quorum fraction), or
    /// counts that only feed metrics and have waited
    /// `metrics_interval` since a script call last took the pending counts.
    pub(crate) fn flush_due(&self, now: Instant) -> bool {
        // Under a quorum, a report that did not reach Redis goes with the next flush round, and
        // so does the repeat of the report of a process that stays open for itself.
        if self.own.as_ref().is_some_and(OwnBreaker::report_due) {
            return true;
        }
        if self.pending.is_empty() {
            return false;
        }
        if self.params.windowed() && self.pending.has_successes() {
            return true;
        }
        // With a quorum fraction, a process with calls to report says it is active about ten
        // times per window, whatever metrics_interval is.
        if self.active_due_at(self.shared.nanos_since_base(now).max(1), self.active_sent.load(Ordering::Relaxed)) {
            return true;
        }
        let waited = self.shared.nanos_since_base(now).saturating_sub(self.pending_sent.load(Ordering::Relaxed));
        waited >= u64::try_from(self.shared.metrics_interval().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether something waits to reach Redis: batched counts, or under a quorum a report.
    pub(crate) fn has_unsent(&self) -> bool {
        !self.pending.is_empty() || self.own.as_ref().is_some_and(OwnBreaker::has_waiting_report)
    }

    /// Whether this breaker may leave the client's registry (called under the registry's lock
    /// with no handle left): nothing waiting to reach Redis, no subscriber, a snapshot that
    /// decides nothing any more, Redis deciding (an in-process machine of the degraded mode
    /// keeps its breaker), and under a quorum this process's own breaker closed (an own
    /// breaker open or probing lives only here: made again, it would start closed and call the
    /// downstream during its own backoff).
    pub(crate) fn idle(&self, now: Instant) -> bool {
        self.shared.store.decides_calls()
            && !self.has_unsent()
            && self.own.as_ref().is_none_or(OwnBreaker::is_closed)
            && self.events.receiver_count() == 0
            && self.snapshot.unused_at(now, self.shared.cache_ttl())
    }

    /// Under a quorum, when this process said `failing` for this breaker: withdraws its report
    /// (`Client::shutdown`), with the pending counts. A report Redis could not take waits as
    /// `recovered` for the next flush.
    pub(crate) async fn withdraw_report(&self) -> Result<(), StoreError> {
        let Some(own) = &self.own else { return Ok(()) };
        if !self.shared.store.is_shared() || !own.withdraw() {
            return Ok(());
        }
        let report = Report::Recovered;
        let record = Record { report, ..Record::flush(self.take_pending()) };
        let sent = self.run(&Op::Record(record)).await;
        self.report_sent(report, &sent);
        sent.map(drop)
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
            announced: true,
            ramp: wire.ramp(),
        };
        self.snapshot.apply(&reply, Source::Event(at), self.shared.cache_ttl());
        self.meters.transition(event.from, event.to);
        log_transition(&event);
        let _ = self.events.send(event);
        self.fold_own();
    }

    /// Tells subscribers that Redis went down or came back for this process.
    pub(crate) fn store_event(&self, up: bool, mode: Degraded) {
        let (state, view, _) = self.snapshot.view();
        let (kind, reason) = if up {
            (EventKind::StoreUp, "redis answers again: it decides this breaker's calls".to_string())
        } else {
            (EventKind::StoreDown, format!("redis is unreachable: calls are decided by the degraded mode ({})", mode))
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
            ramp: None,
        });
    }

    /// Announces transitions made in this process: by the in-process breaker (`own` false: the
    /// breaker's state while it decides) or by this process's own breaker under a quorum (`own`
    /// true: `EventKind::Own*`). Each is logged and sent to subscribers; only the last knows
    /// the time left to its deadline and the recovery ramp it began, earlier ones say 0 ("ask").
    /// Meters: the transitions, or the `redis_breaker_own_open` gauge.
    pub(crate) fn announce(
        &self,
        transitions: &[Transition],
        incarnation: u64,
        (remaining, ramp): (Option<u64>, Option<crate::protocol::Ramp>),
        own: bool,
    ) {
        let last = transitions.len().saturating_sub(1);
        for (i, t) in transitions.iter().enumerate() {
            let remaining = if i == last { remaining } else { Some(0) };
            let event = if own {
                crate::events::own_event(&self.name, &self.shared.id, t, incarnation, remaining)
            } else {
                self.meters.transition(Some(t.from), t.to);
                let event =
                    crate::events::in_process_event(&self.name, &self.shared.id, t, incarnation, t.epoch, remaining);
                crate::events::Event { ramp: ramp.filter(|_| i == last).map(|r| crate::Ramp::of(&r)), ..event }
            };
            log_transition(&event);
            let _ = self.shared.all_events.send(event.clone());
            let _ = self.events.send(event);
        }
        if let (true, Some(t)) = (own, transitions.last()) {
            self.meters.own_open(t.to != crate::state::State::Closed);
        }
    }

    /// Announces the transitions of this process's own breaker, if it moved.
    fn announce_own(&self, moved: &Moved) {
        if !moved.transitions.is_empty() {
            self.announce(&moved.transitions, moved.incarnation, (moved.remaining_ms, None), true);
        }
    }

    /// The quorum's first point, after the fleet let a call through: under a quorum, this
    /// process's own breaker admits it (`Some` admission, which goes with the call), or turns
    /// it away (shadow mode: it runs, reported once per epoch). An open, half-open or forced
    /// fleet decides alone (`None`).
    pub(crate) fn admit(&self) -> Result<Option<Admission>, Rejected> {
        let Some(own) = &self.own else { return Ok(None) };
        let (admit, moved) = own.admit(self.snapshot.state());
        self.announce_own(&moved);
        match admit {
            Admit::Fleet => Ok(None),
            Admit::Allowed(admission) => Ok(Some(admission)),
            Admit::Rejected { state, retry_after } if self.config.shadow => {
                self.shadow_rejected(&Rejected::after(state, retry_after, true));
                Ok(None)
            }
            Admit::Rejected { state, retry_after } => {
                self.meters.rejected();
                self.pending.rejected();
                Err(Rejected::after(state, retry_after, true))
            }
        }
    }

    /// The quorum's second point: this process's own breaker hears how a call it admitted
    /// went, before the call's record is made. Answers the report that record carries to the
    /// fleet (`Report::None` without an admission).
    pub(crate) fn observe(
        &self,
        admission: Option<Admission>,
        outcome: RecordOutcome,
        slow: bool,
        timed_out: bool,
    ) -> Report {
        let (Some(admission), Some(own)) = (admission, &self.own) else { return Report::None };
        let (report, moved) = own.observe(admission, outcome, slow, timed_out);
        self.announce_own(&moved);
        report
    }

    /// Under a quorum, once the snapshot shows the fleet open, half-open or forced: this
    /// process's own breaker starts again closed (its report, if any, was folded into the
    /// fleet's trip), and the fleet decides. Called wherever the snapshot learns a state (a
    /// reply, an event, the in-process breaker), so a process folds whether or not it makes
    /// calls.
    pub(crate) fn fold_own(&self) {
        let Some(own) = &self.own else { return };
        if self.snapshot.state() == crate::state::State::Closed {
            return;
        }
        self.announce_own(&own.fold());
    }

    /// Shadow mode: a call this breaker would have rejected ran. Counted each time; logged and
    /// sent to subscribers once per epoch (the time left is read only then).
    pub(crate) fn shadow_rejected(&self, rejected: &Rejected) {
        let state = rejected.state;
        self.meters.shadow_rejected();
        let (_, view, _) = self.snapshot.view();
        if self.shadow_epoch.swap(view.epoch, Ordering::AcqRel) == view.epoch {
            return;
        }
        let reason = match rejected.admitted() {
            Some(admitted) => format!(
                "shadow mode: the breaker's recovery ramp admits {:.1}% and would have held calls back; they ran",
                admitted * 100.0
            ),
            None => format!("shadow mode: the breaker is {state} and would have rejected calls; they ran"),
        };
        tracing::warn!(breaker = %self.name, %state, epoch = view.epoch, "{reason}");
        let _ = self.events.send(Event {
            kind: EventKind::ShadowRejected,
            name: self.name.clone(),
            from: Some(state),
            to: state,
            incarnation: view.incarnation,
            epoch: view.epoch,
            retry_after: rejected.retry_after(),
            reason,
            origin: None,
            caused_here: true,
            ramp: None,
        });
    }
}
