//! The calling convention of the Lua scripts, shared by both sides of it: what a script call
//! carries (the caller's config as [`Params`], an [`Op`] with its [`Batch`] of counts) and what
//! it answers ([`Reply`], [`Verdict`]). `lua/lib/args.lua` documents the same arguments by
//! position; `store/scripts.rs` puts them on the wire and the Rust machine (`machine/`) takes them
//! as they are.

use crate::config::Config;
use crate::state::State;

/// Everything a script call needs from the caller's config, in script units (ms).
#[derive(Debug, Clone)]
pub(crate) struct Params {
    pub(crate) fingerprint: String,
    pub(crate) failure_threshold: u64,
    pub(crate) success_threshold: u64,
    pub(crate) max_probes: u64,
    pub(crate) base: u64,
    pub(crate) max: u64,
    pub(crate) multiplier: f64,
    pub(crate) jitter: f64,
    pub(crate) lease: u64,
    pub(crate) state_ttl: u64,
    pub(crate) metrics_ttl: u64,
    pub(crate) failure_rate: f64,
    pub(crate) slow_rate: f64,
    pub(crate) minimum_calls: u64,
    pub(crate) window: u64,
    pub(crate) failure_expiry: u64,
    pub(crate) quorum: u64,
    /// The quorum's fraction of the processes that recorded calls in the window (0: none).
    pub(crate) fraction: f64,
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Params {
    pub(crate) fn new(c: &Config) -> Params {
        Params {
            fingerprint: c.fingerprint(),
            failure_threshold: c.failure_threshold.into(),
            success_threshold: c.success_threshold.into(),
            max_probes: c.half_open_max_probes.into(),
            base: ms(c.base_recovery),
            max: ms(c.max_recovery),
            multiplier: c.multiplier,
            jitter: c.jitter,
            lease: ms(c.probe_lease),
            state_ttl: ms(c.state_ttl),
            metrics_ttl: ms(c.metrics_ttl),
            failure_rate: c.failure_rate.unwrap_or(0.0),
            slow_rate: c.slow_call_rate.unwrap_or(0.0),
            minimum_calls: c.minimum_calls.into(),
            window: ms(c.window),
            failure_expiry: ms(c.failure_expiry),
            quorum: c.quorum.into(),
            fraction: c.quorum_fraction.unwrap_or(0.0),
        }
    }

    /// Whether the fleet keeps a rolling window: a rate rule is on and the fleet's outcomes
    /// decide (no quorum; under one, each process keeps its own window).
    pub(crate) fn windowed(&self) -> bool {
        (self.failure_rate > 0.0 || self.slow_rate > 0.0) && !self.under_quorum()
    }

    /// Whether the fleet opens by a quorum of processes (`quorum` > 1 or a `quorum_fraction`).
    pub(crate) fn under_quorum(&self) -> bool {
        self.quorum > 1 || self.fraction > 0.0
    }

    /// The quorum rule as the state hash keeps it: `<quorum>` or `<quorum>:<fraction>`.
    pub(crate) fn quorum_text(&self) -> String {
        if self.fraction > 0.0 { format!("{}:{}", self.quorum, self.fraction) } else { self.quorum.to_string() }
    }

    /// The rules a process applies to its own calls under a quorum: the same, with no quorum.
    pub(crate) fn own_rules(&self) -> Params {
        Params { quorum: 1, fraction: 0.0, ..self.clone() }
    }
}

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
    Acquire { permit: String, batch: Batch },
    Record(Record),
    Control { op: ControlOp, duration_ms: u64, note: String },
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlOp {
    ForceOpen,
    ForceClose,
    Reset,
}

impl ControlOp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ControlOp::ForceOpen => "force_open",
            ControlOp::ForceClose => "force_close",
            ControlOp::Reset => "reset",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordOutcome {
    Success,
    Failure,
    Ignore,
    /// A permit dropped with no outcome: frees its probe lease, counts nothing.
    Release,
    /// No outcome: the record carries the batch alone (a flush).
    None,
}

impl RecordOutcome {
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

    /// Whether the batch counts anything.
    pub(crate) fn has_counts(&self) -> bool {
        [self.successes, self.ignored, self.rejected, self.degraded_successes, self.degraded_failures]
            .iter()
            .any(|&n| n > 0)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) outcome: RecordOutcome,
    pub(crate) incarnation: u64,
    pub(crate) epoch: u64,
    pub(crate) probe: String,
    pub(crate) slow: bool,
    pub(crate) timed_out: bool,
    pub(crate) fseq: u64,
    pub(crate) batch: Batch,
    /// A failure's one-line description, given by the caller (`Permit::failure_described`),
    /// for the history entry of a transition it causes; empty for none.
    pub(crate) description: String,
    /// The caller's report under the quorum rule.
    pub(crate) report: Report,
    /// With a quorum fraction: the caller recorded calls, and counts among the window's processes.
    pub(crate) active: bool,
}

/// What a process tells the fleet about its own breaker under a quorum (record.lua OWN+17).
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
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Report::None => "",
            Report::Failing => "failing",
            Report::Recovered => "recovered",
        }
    }
}

impl Record {
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
        }
    }

    /// The release of permit `id` by a caller that never learnt its epoch (an acquire whose
    /// reply was lost): a lease still held under that id is freed, whatever epoch it names.
    pub(crate) fn release_unanswered(id: String) -> Record {
        Record { outcome: RecordOutcome::Release, probe: id, ..Record::flush(Batch::default()) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    Probe,
    Rejected,
    Applied,
    Stale,
    Ok,
}

impl Verdict {
    pub(crate) fn parse(s: &str) -> Option<Verdict> {
        Some(match s {
            "allowed" => Verdict::Allowed,
            "probe" => Verdict::Probe,
            "rejected" => Verdict::Rejected,
            "applied" => Verdict::Applied,
            "stale" => Verdict::Stale,
            "ok" => Verdict::Ok,
            _ => return None,
        })
    }
}

/// A script's reply, whichever side ran it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub(crate) verdict: Verdict,
    pub(crate) state: State,
    pub(crate) incarnation: u64,
    pub(crate) epoch: u64,
    pub(crate) failures: u64,
    pub(crate) fseq: u64,
    /// Time to the state's next deadline, or `None` when it has none.
    pub(crate) remaining_ms: Option<u64>,
    pub(crate) stored_config: String,
    pub(crate) reason: String,
    /// False while the state's last transition was not announced on the events channel (its
    /// PUBLISH refused, or no channel): this call's own, or an earlier one's that the state hash
    /// remembers. Processes trust such a state for the short bound (`cache_ttl`) only.
    pub(crate) announced: bool,
}

/// A transition a call caused (published as an event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) epoch: u64,
    pub(crate) reason: String,
}
