//! How a call ends: its outcome recorded ([`Breaker::finish`]: under a quorum this process's own
//! breaker observes it first, the quorum's second point, and its report rides on the call's
//! record), or its ticket given back with no outcome (`release`, and `abandon` for an
//! `execute` cancelled or panicked).

use crate::breaker::Breaker;
use crate::breaker::permit::{Grant, Ticket};
use crate::protocol::{Batch, Op, Outcome, Record, RecordOutcome, Report};

impl Breaker {
    /// Records the outcome of a call let through with `ticket`: counted in the meters, heard by
    /// this process's own breaker (under a quorum), then batched (a healthy success, an ignored
    /// call, when no report must go) or sent at once, or given to the in-process breaker.
    pub(super) async fn finish(
        &self,
        ticket: Ticket,
        outcome: Outcome,
        slow: bool,
        timed_out: bool,
        description: String,
    ) {
        self.inner.meters.outcome(outcome, timed_out);
        let kind = match outcome {
            Outcome::Success => RecordOutcome::Success,
            Outcome::Failure => RecordOutcome::Failure,
            Outcome::Ignore => RecordOutcome::Ignore,
        };
        // What the own breaker reports rides on this outcome's record, sent now.
        let report = self.inner.observe(ticket.own, kind, slow, timed_out);
        let quiet = report == Report::None;
        match ticket.grant {
            Grant::Free => {
                self.inner.defer_report(report);
                self.inner.count_degraded(outcome);
            }
            Grant::Closed(_) if outcome == Outcome::Ignore && quiet => self.inner.pending.ignored(),
            Grant::Closed(view) if outcome == Outcome::Success && view.failures == 0 && quiet => {
                self.inner.pending.success(&view, slow);
            }
            Grant::Closed(view) => {
                let mut record = self.inner.record_args(kind, &view, String::new(), slow, timed_out, report);
                record.description = description;
                self.deliver(record).await;
            }
            Grant::Probe { view, id } => {
                let mut record = self.inner.record_args(kind, &view, id, slow, timed_out, report);
                record.description = description;
                self.deliver(record).await;
            }
            Grant::InProcess { view, probe } => {
                // The pending batch stays pending: it goes to Redis when Redis is back. A report
                // goes to the in-process breaker (an in-memory client's fleet is itself).
                let mut record = view.record(kind, probe, slow, timed_out, Batch::default());
                record.report = report;
                self.inner.run_in_process(&Op::Record(record));
                self.inner.defer_report(report);
                self.inner.count_degraded(outcome);
            }
        }
    }

    /// Sends an outcome on a task of its own and waits for it: a caller that stops waiting
    /// (a cancelled future) does not cancel the record, which is sent exactly once.
    async fn deliver(&self, record: Record) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let breaker = self.clone();
                let _ = runtime.spawn(async move { breaker.inner.send_record(record).await }).await;
            }
            Err(_) => self.inner.send_record(record).await,
        }
    }

    /// The ticket of an `execute` dropped without an outcome. While a panic unwinds (the
    /// protected call panicked: the downstream's client failed) it is recorded as a failure, in
    /// the background, and frees its probes; otherwise (a cancelled call) it is released and
    /// records nothing. Costs nothing on the path that finishes a call. (A
    /// [`Permit`](crate::Permit) dropped by a panic elsewhere only releases: its call may never
    /// have started.)
    pub(super) fn abandon(&self, ticket: Ticket) {
        if !std::thread::panicking() {
            return self.release(ticket);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let breaker = self.clone();
                runtime.spawn(async move {
                    breaker.finish(ticket, Outcome::Failure, false, false, String::new()).await;
                });
            }
            Err(_) => self.release(ticket),
        }
    }

    /// Frees the probe leases of a ticket that ends with no outcome (its own first, then the
    /// fleet's, in the background); records nothing.
    pub(super) fn release(&self, ticket: Ticket) {
        let Ticket { grant, own } = ticket;
        drop(own);
        if let Some(record) = self.release_record(grant)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // Without a runtime the lease simply expires after probe_lease.
            let breaker = self.clone();
            handle.spawn(async move { breaker.inner.send_record(record).await });
        }
    }

    /// The record that frees a grant's Redis probe lease, if it holds one; a lease of the
    /// in-process breaker is freed here and now.
    pub(super) fn release_record(&self, grant: Grant) -> Option<Record> {
        let (view, probe, in_process) = match grant {
            Grant::Probe { view, id } => (view, id, false),
            Grant::InProcess { view, probe } if !probe.is_empty() => (view, probe, true),
            _ => return None,
        };
        if in_process {
            self.inner.run_in_process(&Op::Record(view.record(
                RecordOutcome::Release,
                probe,
                false,
                false,
                Batch::default(),
            )));
            return None;
        }
        Some(self.inner.record_args(RecordOutcome::Release, &view, probe, false, false, Report::None))
    }
}
