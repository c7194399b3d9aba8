//! [`View`]: what a call was let through under — the (incarnation, epoch, failures, fseq) of
//! the breaker that decided it (the fleet's snapshot, the in-process breaker, or this process's
//! own breaker) — and the record of its outcome, which Redis judges against it.

use crate::protocol::{Batch, Record, RecordOutcome, Reply, Report};

/// The fields of a snapshot a permit carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct View {
    pub(crate) incarnation: u64,
    pub(crate) epoch: u64,
    pub(crate) failures: u64,
    pub(crate) fseq: u64,
}

impl View {
    /// The view a script's (or a machine's) reply gives.
    pub(crate) fn of(reply: &Reply) -> View {
        View { incarnation: reply.incarnation, epoch: reply.epoch, failures: reply.failures, fseq: reply.fseq }
    }

    /// The record of an outcome of a call granted under this view; `batch` rides along.
    pub(crate) fn record(
        &self,
        outcome: RecordOutcome,
        probe: String,
        slow: bool,
        timed_out: bool,
        batch: Batch,
    ) -> Record {
        Record {
            outcome,
            incarnation: self.incarnation,
            epoch: self.epoch,
            probe,
            slow,
            timed_out,
            fseq: self.fseq,
            batch,
            description: String::new(),
            report: Report::None,
            active: false,
            failures_seen: self.failures,
        }
    }
}
