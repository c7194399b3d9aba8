//! The quorum ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum) above 1): each process
//! keeps its own breaker, the trip rules applied to this process's calls alone, by the Rust
//! machine in memory. When they hold, this process opens for itself only (its own backoff and
//! probes) and reports itself to the fleet (record.lua's `failing`), which opens once `quorum`
//! processes did; when its own probes succeed it closes and withdraws its report
//! (`recovered`). Once the fleet is open, or an operator forced it, the own breaker folds into
//! it: it starts again closed, and the fleet decides.
//!
//! The quorum touches the call path at two points, both on [`OwnBreaker`]: [`admit`] before a
//! call the fleet let through (an [`Admission`], or a rejection by the own breaker), and
//! [`observe`] after it (the [`Report`] the call's script call carries). An admission dropped
//! unobserved gives its own probe lease back by itself. The rest is the report's delivery, asked
//! through the same handle by the breaker's script calls and flushes: a report delivered,
//! deferred, taken for the next script call, due again, withdrawn at shutdown; and the fold.
//!
//! This file holds the handle; `admission.rs` what the two points answer; `reports.rs` the
//! report's bookkeeping.
//!
//! [`admit`]: OwnBreaker::admit
//! [`observe`]: OwnBreaker::observe

mod admission;
mod reports;

pub(crate) use admission::{Admission, Admit, Moved};

use crate::breaker::view::View;
use crate::clock::Clock;
use crate::machine::Machine;
use crate::protocol::{Batch, Op, Params, RecordOutcome, Reply, Report, Transition, Verdict};
use crate::state::State;
use reports::Reports;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The own breaker of one breaker in one process: the quorum's seam on the call path.
#[derive(Debug)]
pub(crate) struct OwnBreaker {
    /// Shared with the admissions of the calls in flight, which release into it when dropped.
    core: Arc<Core>,
}

/// The own breaker's state.
#[derive(Debug)]
struct Core {
    /// The breaker's config with no quorum: the rules this process applies to its own calls.
    params: Params,
    /// The client's clock (the in-process breaker's: fake in tests).
    clock: Arc<dyn Clock>,
    /// The machine and the report's bookkeeping.
    own: Mutex<Own>,
    /// True while the own machine is closed: the fold check on the call path reads no lock.
    closed: AtomicBool,
    /// Incarnations for the own machine (its state is never shared: any increasing number).
    incarnations: AtomicU64,
    /// Set once this process has said `failing` for this breaker (not cleared by a fold): what
    /// `Client::shutdown` withdraws from.
    said_failing: AtomicBool,
}

/// What the own breaker's lock guards: its machine, and the report's bookkeeping.
#[derive(Debug, Default)]
struct Own {
    /// The trip rules applied to this process's calls.
    machine: Machine,
    /// What the fleet has heard of them.
    reports: Reports,
}

impl Own {
    /// Whether the own breaker is tripped (open or half-open): this process reports itself
    /// failing then, unless it withdrew the report.
    fn tripped(&self) -> bool {
        self.machine.state() != State::Closed
    }
}

impl Core {
    /// The machine and the bookkeeping.
    fn lock(&self) -> MutexGuard<'_, Own> {
        // A poisoned lock only means a caller panicked mid-call; the machine is still whole.
        self.own.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The client's clock, in ms.
    fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Runs `op` on the own machine at `now_ms` (with a new incarnation, should it make one).
    fn run(&self, own: &mut Own, now_ms: u64, op: &Op) -> (Reply, Vec<Transition>) {
        let incarnation = self.incarnations.fetch_add(1, Ordering::Relaxed);
        let result = own.machine.run(&self.params, now_ms, rand::random(), incarnation, "", op);
        self.closed.store(result.0.state == State::Closed, Ordering::Release);
        result
    }

    /// See [`Admission::success_changes_nothing`] (for an admission that is no own probe).
    fn success_changes_nothing(&self) -> bool {
        !self.params.windowed() && self.lock().machine.closed_view().is_some_and(|v| v.failures == 0)
    }

    /// Records one outcome of a call let through under `view` (with its own probe lease
    /// `probe`); answers the report the fleet must hear with this outcome's record, at once,
    /// and the own breaker's transitions.
    fn record(
        &self,
        view: View,
        probe: String,
        outcome: RecordOutcome,
        slow: bool,
        timed_out: bool,
        now_ms: u64,
    ) -> (Report, Moved) {
        let mut own = self.lock();
        let record = view.record(outcome, probe, slow, timed_out, Batch::default());
        let (reply, transitions) = self.run(&mut own, now_ms, &Op::Record(record));
        let made = own.reports.made(transitions.last().map(|t| t.to), now_ms);
        if made == Report::Failing {
            self.said_failing.store(true, Ordering::Release);
        }
        let report = own.reports.for_record(made, outcome == RecordOutcome::Release);
        (report, Moved { transitions, incarnation: reply.incarnation, remaining_ms: reply.remaining_ms })
    }
}

impl OwnBreaker {
    /// The own breaker of a breaker with these `params`, on the client's `clock`.
    pub(crate) fn new(params: &Params, clock: Arc<dyn Clock>) -> OwnBreaker {
        OwnBreaker {
            core: Arc::new(Core {
                params: params.own_rules(),
                clock,
                own: Mutex::new(Own::default()),
                closed: AtomicBool::new(true),
                incarnations: AtomicU64::new(1),
                said_failing: AtomicBool::new(false),
            }),
        }
    }

    /// The first point: decides one call the fleet let through while its snapshot says `fleet`
    /// (only a closed fleet asks the own breaker). Answers the transitions it made too (to
    /// half-open, when the own backoff is over).
    pub(crate) fn admit(&self, fleet: State) -> (Admit, Moved) {
        if fleet != State::Closed {
            return (Admit::Fleet, Moved::default());
        }
        let core = &self.core;
        let mut own = core.lock();
        if let Some(view) = own.machine.closed_view() {
            return (Admit::Allowed(Admission::new(core.clone(), view, String::new())), Moved::default());
        }
        // A probe lease needs an id.
        let permit = format!("{:016x}", rand::random::<u64>());
        let op = Op::Acquire { permit: permit.clone(), batch: Batch::default() };
        let (reply, transitions) = core.run(&mut own, core.now_ms(), &op);
        let view = View::of(&reply);
        let admit = match reply.verdict {
            Verdict::Rejected => {
                Admit::Rejected { state: reply.state, retry_after: reply.remaining_ms.map(Duration::from_millis) }
            }
            Verdict::Probe => Admit::Allowed(Admission::new(core.clone(), view, permit)),
            _ => Admit::Allowed(Admission::new(core.clone(), view, String::new())),
        };
        (admit, Moved { transitions, incarnation: reply.incarnation, remaining_ms: reply.remaining_ms })
    }

    /// The second point: the own breaker hears how a call it admitted went. Answers the report
    /// the call's record carries to the fleet (the one this outcome made, else one waiting to
    /// reach Redis), and the own breaker's transitions.
    pub(crate) fn observe(
        &self,
        admission: Admission,
        outcome: RecordOutcome,
        slow: bool,
        timed_out: bool,
    ) -> (Report, Moved) {
        let now = self.core.now_ms();
        let (view, probe) = admission.spend();
        self.core.record(view, probe, outcome, slow, timed_out, now)
    }

    /// Whether the own breaker is closed (no lock).
    pub(crate) fn is_closed(&self) -> bool {
        self.core.closed.load(Ordering::Acquire)
    }

    /// The own breaker's state (this process reports itself failing while it is not closed).
    pub(crate) fn state(&self) -> State {
        self.core.lock().machine.state()
    }

    /// A report did not reach Redis (or may not have): what holds now waits for the next
    /// record or flush (see `Reports::defer`).
    pub(crate) fn defer(&self, report: Report) {
        if report == Report::None {
            return;
        }
        let mut own = self.core.lock();
        let tripped = own.tripped();
        own.reports.defer(report, tripped);
    }

    /// A report reached Redis; if an older one landed after a newer one, the truth waits for
    /// the next flush (see `Reports::delivered`).
    pub(crate) fn delivered(&self, report: Report) {
        if report == Report::None {
            return;
        }
        let mut own = self.core.lock();
        let tripped = own.tripped();
        own.reports.delivered(report, tripped);
    }

    /// Whether a report waits to reach Redis now: one that did not reach it yet, or the repeat,
    /// every quarter window, of this process's report while its own trip is in force (see
    /// `Reports::due`).
    pub(crate) fn report_due(&self) -> bool {
        let now = self.core.now_ms();
        let mut own = self.core.lock();
        let in_force = own.machine.trip_in_force(now);
        own.reports.due(now, in_force, self.core.params.window)
    }

    /// Whether a report waits to reach Redis (no repeat is made due: see `report_due`).
    pub(crate) fn has_waiting_report(&self) -> bool {
        self.core.lock().reports.waiting()
    }

    /// The report waiting to reach Redis, if any (taken: the caller sends it).
    pub(crate) fn take_deferred(&self) -> Report {
        self.core.lock().reports.take()
    }

    /// The process is leaving (`Client::shutdown`): answers whether it ever said `failing` for
    /// this breaker, and if so stops saying it (no repeat, nothing waiting) until its own
    /// breaker opens again. The caller then sends `recovered`, which removes the report.
    pub(crate) fn withdraw(&self) -> bool {
        if !self.core.said_failing.load(Ordering::Acquire) {
            return false;
        }
        self.core.lock().reports.withdraw();
        true
    }

    /// Starts the own breaker again, closed: the fleet is open (or forced), and decides (its
    /// report, if any, was folded into the fleet's trip). Answers the transition to announce
    /// when it was not closed.
    pub(crate) fn fold(&self) -> Moved {
        if self.is_closed() {
            return Moved::default();
        }
        let mut own = self.core.lock();
        let left = own.machine.state();
        if left == State::Closed {
            return Moved::default();
        }
        *own = Own::default();
        self.core.closed.store(true, Ordering::Release);
        let reason = "folded into the fleet's state".to_string();
        Moved {
            transitions: vec![Transition { from: left, to: State::Closed, epoch: 0, reason }],
            incarnation: 0,
            remaining_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, FakeClock};

    /// An own breaker that opens at one failure and closes at one success, with a window of
    /// 1s and a fixed backoff of 10s, on a clock the test moves.
    fn own() -> (OwnBreaker, FakeClock) {
        let config = Config::builder()
            .failure_threshold(1)
            .success_threshold(1)
            .quorum(2)
            .window(Duration::from_secs(1))
            .base_recovery(Duration::from_secs(10))
            .max_recovery(Duration::from_secs(10))
            .jitter(0.0)
            .build()
            .expect("valid");
        let clock = FakeClock::new(0);
        (OwnBreaker::new(&Params::new(&config), Arc::new(clock.clone())), clock)
    }

    /// Moves `clock` forward to `ms`.
    fn at(clock: &FakeClock, ms: u64) {
        clock.advance(Duration::from_millis(ms - clock.now_ms()));
    }

    fn admission(own: &OwnBreaker) -> Admission {
        match own.admit(State::Closed).0 {
            Admit::Allowed(admission) => admission,
            Admit::Rejected { state, .. } => panic!("rejected ({state:?})"),
            Admit::Fleet => panic!("the fleet decides"),
        }
    }

    fn outcome(own: &OwnBreaker, outcome: RecordOutcome) -> Report {
        let a = admission(own);
        own.observe(a, outcome, false, false).0
    }

    #[test]
    fn a_failing_report_is_said_again_while_the_trip_is_in_force_and_no_longer_after() {
        let (own, clock) = own();
        at(&clock, 1_000);
        assert_eq!(outcome(&own, RecordOutcome::Failure), Report::Failing);
        at(&clock, 1_100);
        assert!(!own.report_due(), "not due yet (a quarter window is 250ms)");
        at(&clock, 1_250);
        assert!(own.report_due());
        assert_eq!(own.take_deferred(), Report::Failing);
        at(&clock, 1_400);
        assert!(!own.report_due(), "just said");
        at(&clock, 10_999);
        assert!(own.report_due());
        assert_eq!(own.take_deferred(), Report::Failing);
        // The backoff ended at 11s and no call came to probe: nothing is said any more.
        at(&clock, 11_000);
        assert!(!own.report_due());
        at(&clock, 30_000);
        assert!(!own.report_due());
        assert_eq!(own.state(), State::Open, "still open for itself (and reporting) until a call probes");
    }

    #[test]
    fn a_report_that_failed_to_go_waits_as_what_holds_now() {
        let (own, clock) = own();
        at(&clock, 1_000);
        assert_eq!(outcome(&own, RecordOutcome::Failure), Report::Failing);
        // A repeat of `failing` is on its way when the own probe closes the breaker.
        at(&clock, 1_300);
        assert!(own.report_due());
        let repeat = own.take_deferred();
        at(&clock, 11_000);
        assert_eq!(outcome(&own, RecordOutcome::Success), Report::Recovered);
        // Both fail to reach Redis, the repeat first: `recovered` waits, not the stale `failing`.
        own.defer(repeat);
        own.defer(Report::Recovered);
        assert_eq!(own.take_deferred(), Report::Recovered);
        // In the other order too.
        own.defer(Report::Recovered);
        own.defer(repeat);
        assert_eq!(own.take_deferred(), Report::Recovered);
    }

    #[test]
    fn a_report_that_lands_after_a_newer_one_is_corrected_by_the_next_flush() {
        let (own, clock) = own();
        at(&clock, 1_000);
        assert_eq!(outcome(&own, RecordOutcome::Failure), Report::Failing);
        own.delivered(Report::Failing);
        assert!(!own.has_waiting_report(), "what Redis holds is what holds here");
        at(&clock, 11_000);
        assert_eq!(outcome(&own, RecordOutcome::Success), Report::Recovered);
        own.delivered(Report::Recovered);
        // A `failing` sent before the own breaker closed reached Redis after the `recovered`.
        own.delivered(Report::Failing);
        assert_eq!(own.take_deferred(), Report::Recovered);
    }

    #[test]
    fn a_dropped_admission_leaves_a_waiting_report_waiting() {
        let (own, clock) = own();
        at(&clock, 1_000);
        assert_eq!(outcome(&own, RecordOutcome::Failure), Report::Failing);
        own.defer(Report::Failing); // Redis did not take it
        at(&clock, 11_000);
        let probe = admission(&own);
        assert!(probe.is_probe());
        at(&clock, 11_001);
        drop(probe);
        assert_eq!(own.state(), State::HalfOpen, "the probe lease is free again");
        assert!(admission(&own).is_probe(), "and the next call takes it");
        assert_eq!(own.take_deferred(), Report::Failing, "still waiting for the next record or flush");
    }

    #[test]
    fn a_forgotten_admission_records_nothing() {
        let (own, _clock) = own();
        let a = admission(&own);
        assert!(a.success_changes_nothing());
        a.forget();
        assert_eq!(own.core.incarnations.load(Ordering::Relaxed), 1, "the machine never ran");
        drop(admission(&own));
        assert_eq!(own.core.incarnations.load(Ordering::Relaxed), 2, "a dropped one is released there");
    }
}
