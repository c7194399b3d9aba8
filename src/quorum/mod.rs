//! This process's own breaker under a quorum ([`ConfigBuilder::quorum`](crate::ConfigBuilder::quorum)
//! above 1): the trip rules applied to this process's calls alone, by the Rust machine in
//! memory. When they hold, this process opens for itself only (its own backoff and probes) and
//! reports itself to the fleet (record.lua's `failing`), which opens once `quorum` processes
//! did; when its own probes succeed it closes and withdraws its report (`recovered`). Once
//! the fleet is open, or an operator forced it, the own breaker folds into it: it starts again
//! closed, and the fleet decides.

use crate::breaker::snapshot::View;
use crate::machine::Machine;
use crate::protocol::{Batch, Op, Params, RecordOutcome, Report, Transition, Verdict};
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
    /// Set once this process has said `failing` for this breaker (not cleared by a fold): what
    /// `Client::shutdown` withdraws from.
    said_failing: AtomicBool,
}

#[derive(Debug, Default)]
struct Own {
    machine: Machine,
    /// When this process last reported itself failing (ms, the client's clock): it did when its
    /// own breaker opened, and says so again while it stays open. It reports itself for as long
    /// as its own breaker is not closed; closing withdraws the report.
    reported_at: u64,
    /// A report that has not reached Redis yet (Redis was down, or did not take it): it rides
    /// on the next record or flush. A newer report replaces it.
    unsent: Report,
    /// The process withdrew its report (`Client::shutdown`): it says `failing` again only when
    /// its own breaker opens again.
    withdrawn: bool,
}

impl Own {
    /// Whether this process reports itself failing: its own breaker is open or half-open, and
    /// it did not withdraw the report.
    fn reported(&self) -> bool {
        self.machine.state() != State::Closed && !self.withdrawn
    }

    /// The report that holds now: `failing` while this process reports itself, else `recovered`.
    fn truth(&self) -> Report {
        if self.reported() { Report::Failing } else { Report::Recovered }
    }
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
            said_failing: AtomicBool::new(false),
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
                own.reported_at = now_ms;
                own.withdrawn = false;
                self.said_failing.store(true, Ordering::Release);
                Report::Failing
            }
            Some(State::Closed) => Report::Recovered,
            _ => Report::None,
        };
        // A newer report replaces one still waiting to reach Redis; with none, the waiting one
        // rides on this outcome's record. A released grant sends no record: it keeps waiting.
        let report = if outcome == RecordOutcome::Release {
            if report != Report::None {
                own.unsent = report;
            }
            Report::None
        } else if report == Report::None {
            std::mem::take(&mut own.unsent)
        } else {
            own.unsent = Report::None;
            report
        };
        OwnOutcome { transitions, report, incarnation: reply.incarnation, remaining_ms: reply.remaining_ms }
    }

    /// A report did not reach Redis (or may not have): what waits for the next record or flush
    /// is what holds now, `failing` while this process reports itself and `recovered` once it
    /// no longer does, whichever report failed to go (saying either twice changes nothing).
    pub(crate) fn defer(&self, report: Report) {
        if report == Report::None {
            return;
        }
        let mut own = self.lock();
        own.unsent = own.truth();
    }

    /// A report reached Redis. Reports go from different tasks (a call's record, a flush), so
    /// one made before the own breaker moved may land after the report of that move: when
    /// what Redis now holds is not what holds here, the truth goes with the next flush.
    pub(crate) fn delivered(&self, report: Report) {
        if report == Report::None {
            return;
        }
        let mut own = self.lock();
        if own.unsent == Report::None && report != own.truth() {
            own.unsent = own.truth();
        }
    }

    /// Whether a report waits to reach Redis (at `now_ms`, the client's clock): one that did
    /// not reach it yet, or the repeat of this process's report while its own trip is in force
    /// (backing off, or probing). Redis counts a report for a window, and a process open for
    /// itself may wait longer than that for its next probe (its backoff grows to
    /// `max_recovery`): said again every quarter window, the report counts for as long as the
    /// process stays open and is alive, and stops counting within a window of the process going
    /// away, or of its backoff ending with no call to probe.
    pub(crate) fn report_waits(&self, now_ms: u64) -> bool {
        let mut own = self.lock();
        if own.unsent == Report::None
            && !own.withdrawn
            && own.machine.trip_in_force(now_ms)
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

    /// Whether a report waits to reach Redis (no repeat is made due: see `report_waits`).
    pub(crate) fn has_waiting_report(&self) -> bool {
        self.lock().unsent != Report::None
    }

    /// The process is leaving (`Client::shutdown`): answers whether it ever said `failing` for
    /// this breaker, and if so stops saying it (no repeat, nothing waiting) until its own
    /// breaker opens again. The caller then sends `recovered`, which removes the report.
    pub(crate) fn withdraw(&self) -> bool {
        if !self.said_failing.load(Ordering::Acquire) {
            return false;
        }
        let mut own = self.lock();
        own.withdrawn = true;
        own.unsent = Report::None;
        true
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

    /// The own breaker's state (this process reports itself failing while it is not closed).
    pub(crate) fn state(&self) -> State {
        self.lock().machine.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    /// An own breaker that opens at one failure and closes at one success, with a window of
    /// 1s and a fixed backoff of 10s.
    fn own() -> OwnBreaker {
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
        OwnBreaker::new(&Params::new(&config))
    }

    fn grant(own: &OwnBreaker, now: u64) -> OwnGrant {
        match own.acquire(|| now).0 {
            OwnDecision::Allow(grant) => grant,
            OwnDecision::Reject { state, .. } => panic!("rejected ({state:?}) at {now}"),
        }
    }

    fn outcome(own: &OwnBreaker, now: u64, outcome: RecordOutcome) -> Report {
        let g = grant(own, now);
        own.finish(g, outcome, false, false, now).report
    }

    #[test]
    fn a_failing_report_is_said_again_while_the_trip_is_in_force_and_no_longer_after() {
        let own = own();
        assert_eq!(outcome(&own, 1_000, RecordOutcome::Failure), Report::Failing);
        assert!(!own.report_waits(1_100), "not due yet (a quarter window is 250ms)");
        assert!(own.report_waits(1_250));
        assert_eq!(own.take_deferred(), Report::Failing);
        assert!(!own.report_waits(1_400), "just said");
        assert!(own.report_waits(10_999));
        assert_eq!(own.take_deferred(), Report::Failing);
        // The backoff ended at 11s and no call came to probe: nothing is said any more.
        assert!(!own.report_waits(11_000));
        assert!(!own.report_waits(30_000));
        assert_eq!(own.state(), State::Open, "still open for itself (and reporting) until a call probes");
    }

    #[test]
    fn a_report_that_failed_to_go_waits_as_what_holds_now() {
        let own = own();
        assert_eq!(outcome(&own, 1_000, RecordOutcome::Failure), Report::Failing);
        // A repeat of `failing` is on its way when the own probe closes the breaker.
        assert!(own.report_waits(1_300));
        let repeat = own.take_deferred();
        assert_eq!(outcome(&own, 11_000, RecordOutcome::Success), Report::Recovered);
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
        let own = own();
        assert_eq!(outcome(&own, 1_000, RecordOutcome::Failure), Report::Failing);
        own.delivered(Report::Failing);
        assert_eq!(own.lock().unsent, Report::None, "what Redis holds is what holds here");
        assert_eq!(outcome(&own, 11_000, RecordOutcome::Success), Report::Recovered);
        own.delivered(Report::Recovered);
        // A `failing` sent before the own breaker closed reached Redis after the `recovered`.
        own.delivered(Report::Failing);
        assert_eq!(own.take_deferred(), Report::Recovered);
    }

    #[test]
    fn a_released_grant_leaves_a_waiting_report_waiting() {
        let own = own();
        assert_eq!(outcome(&own, 1_000, RecordOutcome::Failure), Report::Failing);
        own.defer(Report::Failing); // Redis did not take it
        let probe = grant(&own, 11_000);
        let released = own.finish(probe, RecordOutcome::Release, false, false, 11_001);
        assert_eq!(released.report, Report::None);
        assert_eq!(own.take_deferred(), Report::Failing, "still waiting for the next record or flush");
    }
}
