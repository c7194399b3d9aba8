//! What a script call carries after the common arguments: the [`Op`] (which script, and its own
//! arguments: a permit, a [`Record`], an operator's command) and the [`Batch`] of counts that
//! rides along; their encoding follows the tables `ACQUIRE`, `RECORD`, `CONTROL` and `BATCH` of
//! `args.rs`, which a test compares with it entry by entry.

use super::Params;
use super::args::Wire;

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

/// One script call: the operation and what it carries.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// `lua/acquire.lua`: decide one call and, when half-open, lease a probe for `permit`.
    Acquire {
        /// The permit id (unique per permit).
        permit: String,
        /// The counts gathered since the last script call.
        batch: Batch,
    },
    /// `lua/record.lua`: one call's outcome (or a flush of the batch alone).
    Record(Record),
    /// `lua/control.lua`: an operator's command.
    Control {
        /// Which command.
        op: ControlOp,
        /// How long a forced state lasts (0: until reset).
        duration_ms: u64,
        /// The operator's note for the history ('' for none).
        note: String,
    },
}

impl Op {
    /// The batch of counts the op carries, if any.
    pub(crate) fn batch(&self) -> Option<&Batch> {
        match self {
            Op::Acquire { batch, .. } => Some(batch),
            Op::Record(r) => Some(&r.batch),
            Op::Control { .. } => None,
        }
    }

    /// Appends the op's own arguments (from `OWN`) as its script reads them; `reporter` is the
    /// caller's identity for a quorum, which a record carries.
    pub(crate) fn write(&self, reporter: &str, out: &mut Vec<Vec<u8>>) {
        match self {
            Op::Acquire { permit, batch } => {
                permit.write(out);
                batch.write(out);
            }
            Op::Record(r) => r.write(reporter, out),
            Op::Control { op, duration_ms, note } => {
                op.as_str().write(out);
                duration_ms.write(out);
                note.write(out);
            }
        }
        // The batch's id goes last (see `parse_batch` in lua/lib/batch.lua).
        if let Some(b) = self.batch() {
            b.id().write(out);
        }
    }
}

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlOp {
    /// Reject every call (for a while, or until reset).
    ForceOpen,
    /// Allow every call (for a while, or until reset); never trip.
    ForceClose,
    /// Back to closed, counters, window and trips cleared.
    Reset,
}

impl ControlOp {
    /// The command as `lua/control.lua` takes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ControlOp::ForceOpen => "force_open",
            ControlOp::ForceClose => "force_close",
            ControlOp::Reset => "reset",
        }
    }
}

/// The outcome a record reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    /// The call succeeded.
    Success,
    /// The call failed.
    Failure,
    /// The call says nothing about the downstream's health: metrics only.
    Ignore,
    /// A permit dropped with no outcome: frees its probe lease, counts nothing.
    Release,
    /// No outcome: the record carries the batch alone (a flush).
    None,
}

impl RecordOutcome {
    /// The outcome as `lua/record.lua` takes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::Success => "success",
            RecordOutcome::Failure => "failure",
            RecordOutcome::Ignore => "ignore",
            RecordOutcome::Release => "release",
            RecordOutcome::None => "none",
        }
    }
}

/// Counts gathered locally and sent with the next script call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Batch {
    pub(crate) incarnation: u64,
    pub(crate) epoch: u64,
    pub(crate) fseq: u64,
    pub(crate) successes: u64,
    pub(crate) slow: u64,
    pub(crate) ignored: u64,
    pub(crate) rejected: u64,
    /// Successes of calls decided without Redis: metrics only.
    pub(crate) degraded_successes: u64,
    /// Failures of calls decided without Redis: metrics only.
    pub(crate) degraded_failures: u64,
    /// Calls a recovery ramp held back: metrics only.
    pub(crate) throttled: u64,
    /// The lane (see `src/breaker/pending.rs`) that sends this batch, a random non-zero number per lane;
    /// 0 with `seq` 0: the batch has no id.
    pub(crate) sender: u64,
    /// The batch's number in its lane (from 1); 0: no id. Sent as the batch id
    /// `<sender hex>:<seq>`, which the scripts remember so a batch sent again counts once.
    pub(crate) seq: u64,
    /// Sent before, its reply lost: the scripts check whether they counted it already (a
    /// first attempt cannot have been, and costs no read).
    pub(crate) again: bool,
}

impl Batch {
    /// The batch id the scripts take (`lua/lib/batch.lua`): `<sender hex>:<seq>`, with
    /// `:again` when it was sent before; empty for none.
    pub(crate) fn id(&self) -> String {
        match (self.seq, self.again) {
            (0, _) => String::new(),
            (seq, false) => format!("{:x}:{seq}", self.sender),
            (seq, true) => format!("{:x}:{seq}:again", self.sender),
        }
    }

    /// Appends the batch's counts (not its id, which goes last) in the order of `BATCH`.
    fn write(&self, out: &mut Vec<Vec<u8>>) {
        for n in [
            self.incarnation,
            self.epoch,
            self.fseq,
            self.successes,
            self.slow,
            self.ignored,
            self.rejected,
            self.degraded_successes,
            self.degraded_failures,
            self.throttled,
        ] {
            n.write(out);
        }
    }

    /// Whether the batch counts anything.
    pub(crate) fn has_counts(&self) -> bool {
        [self.successes, self.ignored, self.rejected, self.degraded_successes, self.degraded_failures, self.throttled]
            .iter()
            .any(|&n| n > 0)
    }
}

/// One call's outcome, as `lua/record.lua` takes it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// What the call did.
    pub(crate) outcome: RecordOutcome,
    /// The incarnation the permit was granted in.
    pub(crate) incarnation: u64,
    /// The epoch the permit was granted in.
    pub(crate) epoch: u64,
    /// The probe id, when the permit holds a half-open lease; empty otherwise.
    pub(crate) probe: String,
    /// The call took at least `slow_call_duration`.
    pub(crate) slow: bool,
    /// The call timed out (a failure).
    pub(crate) timed_out: bool,
    /// The fseq the permit's process had seen.
    pub(crate) fseq: u64,
    /// The counts gathered since the last script call.
    pub(crate) batch: Batch,
    /// A failure's one-line description, given by the caller (`Permit::failure_described`),
    /// for the history entry of a transition it causes; empty for none.
    pub(crate) description: String,
    /// The caller's report under the quorum rule.
    pub(crate) report: Report,
    /// With a quorum fraction: the caller recorded calls, and counts among the window's processes.
    pub(crate) active: bool,
    /// The consecutive failures the permit's process had seen (not sent): a failure that by this
    /// count trips nothing may go as `lua/count.lua` first ([`Record::only_counts`]).
    pub(crate) failures_seen: u64,
}

/// What a process tells the fleet about its own breaker under a quorum (`RECORD.report`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Report {
    /// Nothing.
    #[default]
    None,
    /// Its own breaker opened (or reopened): count it toward the quorum.
    Failing,
    /// Its own breaker closed again: it no longer counts.
    Recovered,
}

impl Report {
    /// The report as `lua/record.lua` takes it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Report::None => "",
            Report::Failing => "failing",
            Report::Recovered => "recovered",
        }
    }
}

impl Record {
    /// Appends the record's own arguments but the batch id, in the order of `RECORD`.
    fn write(&self, reporter: &str, out: &mut Vec<Vec<u8>>) {
        self.outcome.as_str().write(out);
        self.incarnation.write(out);
        self.epoch.write(out);
        self.probe.write(out);
        self.slow.write(out);
        self.timed_out.write(out);
        self.fseq.write(out);
        self.batch.write(out);
        self.description.write(out);
        self.report.as_str().write(out);
        self.active.write(out);
        reporter.write(out);
    }

    /// Whether this is, by what its process saw, a failure that only counts: a closed breaker's
    /// failure (no probe lease) that is neither slow nor timed out, with no report, no counts
    /// riding along, no window or quorum in `p` (so `active` says nothing), one failure short of the threshold at least, and
    /// neither its lane's first batch (whose field in the metrics hash is new) nor the first write
    /// of the state (incarnation 0: none seen): those are the record's to write.
    /// Where the scripts run as a library it goes first as `lua/count.lua` (two keys, the
    /// arguments of [`Record::write_count`]), which counts it exactly as `lua/record.lua`'s short
    /// path would, or answers that it must go as a record after all.
    pub(crate) fn only_counts(&self, p: &Params) -> bool {
        self.outcome == RecordOutcome::Failure
            && self.probe.is_empty()
            && !self.slow
            && !self.timed_out
            && self.report == Report::None
            && !self.batch.has_counts()
            && !self.batch.again
            && self.batch.seq != 1
            && self.incarnation != 0
            && p.failure_rate == 0.0
            && p.slow_rate == 0.0
            && p.quorum <= 1
            && p.fraction == 0.0
            && (p.failure_threshold == 0 || self.failures_seen.saturating_add(1) < p.failure_threshold)
    }

    /// The arguments of `lua/count.lua` (`COUNT`): the caller's clock (`None`: Redis's), its
    /// config id, the permit's incarnation and epoch, and the batch id.
    pub(crate) fn write_count(&self, now: Option<u64>, config_id: &str, out: &mut Vec<Vec<u8>>) {
        now.write(out);
        config_id.write(out);
        self.incarnation.write(out);
        self.epoch.write(out);
        self.batch.id().write(out);
    }

    /// A record with no outcome: it carries `batch` alone (a flush).
    pub(crate) fn flush(batch: Batch) -> Record {
        Record {
            outcome: RecordOutcome::None,
            incarnation: 0,
            epoch: 0,
            probe: String::new(),
            slow: false,
            timed_out: false,
            fseq: 0,
            batch,
            description: String::new(),
            report: Report::None,
            active: false,
            failures_seen: 0,
        }
    }

    /// The release of permit `id` by a caller that never learnt its epoch (an acquire whose
    /// reply was lost): a lease still held under that id is freed, whatever epoch it names.
    pub(crate) fn release_unanswered(id: String) -> Record {
        Record { outcome: RecordOutcome::Release, probe: id, ..Record::flush(Batch::default()) }
    }
}

#[cfg(test)]
mod tests {
    use super::super::args::{ACQUIRE, BATCH, CONTROL, COUNT, Own, RECORD};
    use super::*;

    /// `op` written, split by the rows of its table: (name, the values it spans).
    fn by_table(op: &Op, table: &[Own]) -> Vec<(&'static str, Vec<String>)> {
        let mut out = Vec::new();
        op.write("reporter-7", &mut out);
        let mut values = out.into_iter().map(|v| String::from_utf8(v).expect("text"));
        let rows = table.iter().map(|row| (row.name, values.by_ref().take(row.width).collect())).collect();
        assert_eq!(values.next(), None, "more arguments than the table names");
        rows
    }

    /// A batch whose every count differs.
    fn batch() -> Batch {
        Batch {
            incarnation: 201,
            epoch: 202,
            fseq: 203,
            successes: 204,
            slow: 205,
            ignored: 206,
            rejected: 207,
            degraded_successes: 208,
            degraded_failures: 209,
            throttled: 210,
            sender: 0xab,
            seq: 7,
            again: false,
        }
    }

    /// The batch's values by the names of `BATCH`.
    fn batch_values() -> Vec<String> {
        let b = batch();
        let by_name = |name: &str| match name {
            "incarnation" => b.incarnation,
            "epoch" => b.epoch,
            "fseq" => b.fseq,
            "successes" => b.successes,
            "slow" => b.slow,
            "ignored" => b.ignored,
            "rejected" => b.rejected,
            "degraded_successes" => b.degraded_successes,
            "degraded_failures" => b.degraded_failures,
            "throttled" => b.throttled,
            other => panic!("BATCH names {other}, which Batch does not have"),
        };
        BATCH.iter().map(|name| by_name(name).to_string()).collect()
    }

    /// One argument.
    fn one(v: &str) -> Vec<String> {
        vec![v.to_string()]
    }

    #[test]
    fn own_arguments_are_written_where_their_tables_name_them() {
        let acquire = Op::Acquire { permit: "permit-1".into(), batch: batch() };
        assert_eq!(
            by_table(&acquire, &ACQUIRE),
            [("permit", one("permit-1")), ("batch", batch_values()), ("batch_id", one("ab:7"))]
        );

        let record = Op::Record(Record {
            outcome: RecordOutcome::Failure,
            incarnation: 101,
            epoch: 102,
            probe: "probe-1".into(),
            slow: true,
            timed_out: false,
            fseq: 103,
            batch: batch(),
            description: "timed out".into(),
            report: Report::Failing,
            active: true,
            failures_seen: 4,
        });
        assert_eq!(
            by_table(&record, &RECORD),
            [
                ("outcome", one("failure")),
                ("incarnation", one("101")),
                ("epoch", one("102")),
                ("probe", one("probe-1")),
                ("slow", one("1")),
                ("timed_out", one("0")),
                ("fseq", one("103")),
                ("batch", batch_values()),
                ("description", one("timed out")),
                ("report", one("failing")),
                ("active", one("1")),
                ("reporter", one("reporter-7")),
                ("batch_id", one("ab:7")),
            ]
        );

        let Op::Record(r) = &record else { unreachable!() };
        let mut count = Vec::new();
        r.write_count(Some(1234), "id-9", &mut count);
        let count: Vec<String> = count.into_iter().map(|v| String::from_utf8(v).expect("text")).collect();
        let want = |name: &str| match name {
            "now" => "1234",
            "config_id" => "id-9",
            "incarnation" => "101",
            "epoch" => "102",
            "batch_id" => "ab:7",
            other => panic!("COUNT names {other}, which write_count does not write"),
        };
        assert_eq!(count, COUNT.iter().map(|row| want(row.name)).collect::<Vec<_>>());

        let control = Op::Control { op: ControlOp::ForceOpen, duration_ms: 1500, note: "deploy".into() };
        assert_eq!(
            by_table(&control, &CONTROL),
            [("op", one("force_open")), ("duration_ms", one("1500")), ("note", one("deploy"))]
        );
    }
}
