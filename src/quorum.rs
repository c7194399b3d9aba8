//! This process's own breaker under a quorum ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum)
//! above 1): the trip rules applied to this process's calls alone, by the Rust machine in
//! memory. When they hold, this process opens for itself only (its own backoff and probes) and
//! reports itself to the fleet (record.lua's `failing`), which opens once `quorum` processes
//! did; when its own probes succeed it closes and withdraws its report (`recovered`). Once
//! the fleet is open, or an operator forced it, the own breaker folds into it: it starts again
//! closed, and the fleet decides.

use crate::machine::Machine;
use crate::protocol::{Batch, Op, Params, RecordOutcome, Report, Transition, Verdict};
use crate::snapshot::View;
use crate::state::State;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The own breaker of one breaker in one process.
#[derive(Debug)]
pub(crate) struct OwnBreaker {
    /// The breaker's config with no quorum: the rules this process applies to its own calls.
    params: Params,
    machine: Mutex<Own>,
    /// True while the own machine is closed: the fold check on the call path reads no lock.
    closed: AtomicBool,
    /// Incarnations for the own machine (its state is never shared: any increasing number).
    incarnations: AtomicU64,
}

#[derive(Debug, Default)]
struct Own {
    machine: Machine,
    /// This process reported itself failing to the fleet and has not withdrawn it.
    reported: bool,
    /// When it last said so (ms, the client's clock): said again while it stays open.
    reported_at: u64,
    /// A report that has not reached Redis yet (Redis was down, or did not take it): it rides
    /// on the next record or flush. A newer report replaces it.
    unsent: Report,
}

/// What one call holds of the own breaker: the view it was let through under, and its own
/// probe lease (empty when it is not an own probe).
#[derive(Debug, Clone)]
pub(crate) struct OwnGrant {
    view: View,
    probe: String,
}

/// The own breaker's answer to one call.
pub(crate) enum OwnDecision {
    Allow(OwnGrant),
    Reject { state: State, retry_after: Option<Duration> },
}

/// What recording an outcome did to the own breaker: its transitions, and the report the
/// fleet must hear (with this outcome's record, at once).
pub(crate) struct OwnOutcome {
    pub(crate) transitions: Vec<Transition>,
    pub(crate) report: Report,
    pub(crate) incarnation: u64,
    pub(crate) remaining_ms: Option<u64>,
}

impl OwnGrant {
    pub(crate) fn is_probe(&self) -> bool {
        !self.probe.is_empty()
    }
}

impl OwnBreaker {
    pub(crate) fn new(params: &Params) -> OwnBreaker {
        OwnBreaker {
            params: params.own_rules(),
            machine: Mutex::new(Own::default()),
            closed: AtomicBool::new(true),
            incarnations: AtomicU64::new(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Own> {
        // A poisoned lock only means a caller panicked mid-call; the machine is still whole.
        self.machine.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn run(&self, own: &mut Own, now_ms: u64, op: &Op) -> (crate::protocol::Reply, Vec<Transition>) {
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let result = own.machine.run(&self.params, now_ms, rand::random(), incarnation, "", op);
        self.closed.store(result.0.state == State::Closed, Ordering::Release);
        result
    }

    /// Whether the own breaker is closed (no lock).
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Decides one call of this process; answers the transitions it made too (to half-open,
    /// when the own backoff is over), if any.
    pub(crate) fn acquire(&self, now_ms: impl FnOnce() -> u64) -> (OwnDecision, Option<OwnOutcome>) {
        let mut own = self.lock();
        if let Some(view) = own.machine.closed_view() {
            return (OwnDecision::Allow(OwnGrant { view, probe: String::new() }), None);
        }
        // A probe lease needs an id.
        let permit = format!("{:016x}", rand::random::<u64>());
        let op = Op::Acquire { permit: permit.clone(), batch: Batch::default() };
        let (reply, transitions) = self.run(&mut own, now_ms(), &op);
        let view =
            View { incarnation: reply.incarnation, epoch: reply.epoch, failures: reply.failures, fseq: reply.fseq };
        let decision = match reply.verdict {
            Verdict::Rejected => {
                OwnDecision::Reject { state: reply.state, retry_after: reply.remaining_ms.map(Duration::from_millis) }
            }
            Verdict::Probe => OwnDecision::Allow(OwnGrant { view, probe: permit }),
            _ => OwnDecision::Allow(OwnGrant { view, probe: String::new() }),
        };
        let moved = (!transitions.is_empty()).then_some(OwnOutcome {
            transitions,
            report: Report::None,
            incarnation: reply.incarnation,
            remaining_ms: reply.remaining_ms,
        });
        (decision, moved)
    }

    /// Whether a success under `grant` would change nothing: the own breaker is closed with no
    /// failure counted and keeps no window (the healthy path records nothing then).
    pub(crate) fn success_changes_nothing(&self, grant: &OwnGrant) -> bool {
        if grant.is_probe() || self.params.windowed() {
            return false;
        }
        self.lock().machine.closed_view().is_some_and(|v| v.failures == 0)
    }

    /// Records one outcome of a call let through under `grant`; says what the fleet must hear.
    pub(crate) fn finish(
        &self,
        grant: OwnGrant,
        outcome: RecordOutcome,
        slow: bool,
        timed_out: bool,
        now_ms: u64,
    ) -> OwnOutcome {
        let mut own = self.lock();
        let record = grant.view.record(outcome, grant.probe, slow, timed_out, Batch::default());
        let (reply, transitions) = self.run(&mut own, now_ms, &Op::Record(record));
        let report = match transitions.last().map(|t| t.to) {
            Some(State::Open) => {
                own.reported = true;
                own.reported_at = now_ms;
                Report::Failing
            }
            Some(State::Closed) if own.reported => {
                own.reported = false;
                Report::Recovered
            }
            _ => Report::None,
        };
        // A newer report replaces one still waiting to reach Redis; with none, the waiting one
        // rides on this outcome's record if it is sent.
        let report = if report == Report::None { std::mem::take(&mut own.unsent) } else { report };
        own.unsent = Report::None;
        OwnOutcome { transitions, report, incarnation: reply.incarnation, remaining_ms: reply.remaining_ms }
    }

    /// Keeps a report that did not reach Redis for the next record or flush, unless a newer
    /// one is already waiting.
    pub(crate) fn defer(&self, report: Report) {
        let mut own = self.lock();
        if own.unsent == Report::None {
            own.unsent = report;
        }
    }

    /// Whether a report waits to reach Redis (at `now_ms`, the client's clock): one that did
    /// not reach it yet, or the repeat of this process's report while it stays open for itself.
    /// Redis counts a report for a window, and a process open for itself may wait longer than
    /// that for its next probe (its backoff grows to `max_recovery`): said again every quarter
    /// window, the report counts for as long as the process stays open and is alive, and stops
    /// counting within a window of the process going away.
    pub(crate) fn report_waits(&self, now_ms: u64) -> bool {
        let mut own = self.lock();
        if own.unsent == Report::None
            && own.reported
            && now_ms.saturating_sub(own.reported_at) >= self.params.window / 4
        {
            own.unsent = Report::Failing;
            own.reported_at = now_ms;
        }
        own.unsent != Report::None
    }

    /// The report waiting to reach Redis, if any (taken: the caller sends it).
    pub(crate) fn take_deferred(&self) -> Report {
        std::mem::take(&mut self.lock().unsent)
    }

    /// Starts the own breaker again, closed: the fleet is open (or forced), and decides. Answers
    /// the state it left when it was not closed.
    pub(crate) fn fold(&self) -> Option<State> {
        if self.is_closed() {
            return None;
        }
        let mut own = self.lock();
        let left = own.machine.state();
        if left == State::Closed {
            return None;
        }
        *own = Own::default();
        self.closed.store(true, Ordering::Release);
        Some(left)
    }

    /// The own breaker's state and whether this process counts as a failing reporter.
    pub(crate) fn state(&self) -> (State, bool) {
        let own = self.lock();
        (own.machine.state(), own.reported)
    }
}
