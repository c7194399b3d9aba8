//! Where a breaker's calls are decided: the client's store while it decides calls (Redis
//! answers), else the degraded mode (the in-process breaker of `Degraded::Local`, which also
//! serves `Client::in_memory`), with the replies of either written into the snapshot. The one
//! place that chooses between them; what the store is, it asks the store (`store/mod.rs`).

use crate::breaker::inner::Inner;
use crate::breaker::pending::{BATCH_MEMORY_MS, Fate};
use crate::breaker::snapshot::{Source, View};
use crate::config::client::Degraded;
use crate::error::StoreError;
use crate::machine::Machine;
use crate::protocol::{Batch, Op, Outcome, Record, RecordOutcome, Reply, Report, Transition};
use crate::store::Decided;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Inner {
    /// Everything the store holds about this breaker, for operators.
    pub(crate) async fn read_status(&self) -> Result<crate::status::Raw, StoreError> {
        self.shared.store.read(&self.keys).await
    }

    /// Starts the in-process breaker of a Redis client from the snapshot, once after each reply
    /// from Redis: a breaker the process saw open stays open until the deadline it saw.
    pub(crate) fn seed_in_process(&self) {
        let inner = self;
        if !self.shared.store.is_shared() || inner.in_process_seeded.swap(true, Ordering::AcqRel) {
            return;
        }
        let (state, view, left) = inner.snapshot.with_deadline(Instant::now());
        let now = inner.shared.in_process.clock.now_ms();
        let open_until = left.map_or(0, |d| now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 4).max(1));
        inner.shared.in_process.seed(&inner.name, Machine::seeded(state, view.failures, open_until, now));
    }

    /// What decides a call Redis cannot: the in-process machine for an in-memory client, else
    /// the client's degraded mode.
    pub(crate) fn degraded_mode(&self) -> Degraded {
        self.shared.store.fallback(self.shared.config.degraded)
    }

    /// Runs `op` on the client's store: Redis also while it is treated as down (the error
    /// reports the outage), or an in-memory client's machine. For flushes, operators' calls, and
    /// the records and acquires Redis decides; never decided by the degraded mode. The reply
    /// refreshes the snapshot. The batch the op carried is settled (see `Pending::settle`):
    /// applied when the store answered; when the answer was lost (a timeout, a dropped
    /// connection: it may have been applied) kept as it is, with its id, to be sent again until
    /// Redis answers, which counts it once; dropped when Redis refused it (the same batch would
    /// be refused again, for ever).
    pub(crate) async fn run(&self, op: &Op) -> Result<Reply, StoreError> {
        let inner = self;
        let sent = Instant::now();
        // Settled as unknown if this future is dropped before the reply is read.
        let in_flight = BatchInFlight::new(self, op);
        let result = inner.shared.store.run(&inner.keys, &inner.params, op, rand::random()).await;
        let fate = match &result {
            Ok(Decided::Shared(reply)) => {
                self.absorb(reply, sent);
                Fate::Applied
            }
            Ok(Decided::Here(reply, transitions)) => {
                self.decided_here(reply, transitions);
                self.absorb(reply, Instant::now());
                Fate::Applied
            }
            // The script ran: its reply could not be read.
            Err(StoreError::Protocol { .. }) => Fate::Applied,
            // A timeout or a dropped connection may have run it; refused credentials or a
            // connection never made did not, but sending it again under its id is as good.
            Err(e) if e.is_outage() => Fate::Unknown { resend_for: self.resend_for() },
            Err(e) => {
                if op.batch().is_some_and(Batch::has_counts) {
                    tracing::warn!(breaker = %inner.name, error = %e, "batched counts dropped: redis refused them");
                }
                Fate::Refused
            }
        };
        in_flight.settle(fate);
        result.map(Decided::into_reply)
    }

    /// How long a batch whose fate is unknown is sent again: a tenth less than the scripts
    /// remember its id (an hour, or `metrics_ttl` if shorter).
    fn resend_for(&self) -> Duration {
        Duration::from_millis(BATCH_MEMORY_MS.min(self.params.metrics_ttl) / 10 * 9)
    }

    /// Decides `op` by the in-process breaker (the degraded mode `Local`, or an in-memory
    /// client's acquires and records).
    pub(crate) fn run_in_process(&self, op: &Op) -> Reply {
        let inner = self;
        let (reply, transitions) = inner.shared.in_process.run(&inner.name, &inner.params, op, rand::random());
        if let Some(batch) = op.batch() {
            inner.pending.settle(batch, Fate::Applied);
        }
        self.decided_here(&reply, &transitions);
        reply
    }

    /// What this process's machine decided: the snapshot shows it (for `state()`, `snapshot()`,
    /// `health()`), but is never fresh: the next call asks the machine again, or Redis once it
    /// is back. Its transitions are announced here, where they were made.
    fn decided_here(&self, reply: &Reply, transitions: &[Transition]) {
        self.snapshot.apply(reply, Source::Local, Duration::ZERO);
        self.announce(transitions, reply.incarnation, (reply.remaining_ms, reply.ramp), false);
        self.fold_own();
    }

    pub(crate) fn absorb(&self, reply: &Reply, sent: Instant) {
        let inner = self;
        // The long bound is decided under the snapshot's lock (see `apply_reply`), and only for
        // a state whose transition was announced.
        let long = || inner.shared.reply_ttl(sent, &inner.name);
        inner.snapshot.apply_reply(reply, sent, long, inner.shared.cache_ttl());
        inner.fold_own();
        inner.in_process_seeded.store(false, Ordering::Release);
        inner.meters.state(reply.state);
        let matches = reply.stored_config.is_empty() || reply.stored_config == inner.params.fingerprint;
        if inner.config_matches.swap(matches, Ordering::Relaxed) && !matches {
            tracing::warn!(
                breaker = %inner.name,
                ours = %inner.params.fingerprint,
                stored = %reply.stored_config,
                "another process wrote this breaker with a different config"
            );
        }
        let mut reason = inner.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *reason != reply.reason {
            reason.clone_from(&reply.reason);
        }
    }

    /// The record of an outcome granted under `view`, carrying the pending batch and, under a
    /// quorum, `report` (or one waiting to reach Redis).
    pub(crate) fn record_args(
        &self,
        outcome: RecordOutcome,
        view: &View,
        probe: String,
        slow: bool,
        timed_out: bool,
        report: Report,
    ) -> Record {
        // An outcome's record takes a batch with an id of its own, even with no counts: if its
        // reply is lost, the outcome is counted under that id when the batch is sent again. A
        // release counts nothing and carries nothing.
        let batch = match outcome {
            RecordOutcome::Success | RecordOutcome::Failure | RecordOutcome::Ignore => self.pending.take_for_outcome(),
            RecordOutcome::Release => Batch::default(),
            RecordOutcome::None => self.take_pending(),
        };
        let mut record = view.record(outcome, probe, slow, timed_out, batch);
        record.active = self.active_due();
        // Under a quorum: the report this outcome made, else one that waits to reach Redis.
        record.report = if report == Report::None { self.deferred_report() } else { report };
        record
    }

    /// Sends a record to Redis. When its reply is lost, the outcome rides in its batch (see
    /// `run`), sent again until Redis has counted it once; a record with no batch id (every
    /// lane was busy) that timed out may have been applied and is not counted again. When Redis
    /// cannot take it, a batch it carried is kept for the next flush and the outcome itself is
    /// counted for Redis's metrics (it moves no state: Redis did not see it).
    pub(crate) async fn send_record(&self, record: Record) {
        let outcome = match record.outcome {
            RecordOutcome::Success => Some(Outcome::Success),
            RecordOutcome::Failure => Some(Outcome::Failure),
            RecordOutcome::Ignore => Some(Outcome::Ignore),
            RecordOutcome::Release | RecordOutcome::None => None,
        };
        let report = record.report;
        let with_id = record.batch.seq != 0;
        let op = Op::Record(record);
        let delivered = match self.shared.store.decides_calls() {
            true => {
                let sent = self.run(&op).await;
                self.report_sent(report, &sent);
                match sent {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::debug!(breaker = %self.name, error = %e, "an outcome was not delivered");
                        (with_id && e.is_outage()) || matches!(e, StoreError::Timeout(_))
                    }
                }
            }
            false => {
                if let Some(batch) = op.batch() {
                    self.pending.settle(batch, Fate::NotSent);
                }
                self.defer_report(report);
                false
            }
        };
        if let (false, Some(outcome)) = (delivered, outcome) {
            self.count_degraded(outcome);
        }
    }

    /// Under a quorum, what became of the report a script call carried: it reached Redis (which
    /// may need the newer truth: see `OwnBreaker::delivered`); Redis could not take it (down,
    /// timed out) and it waits for the next record or flush (sending it twice is harmless:
    /// adding or removing a reporter again changes nothing); or Redis refused it, and it is
    /// dropped (it would be refused again, and take every later record with it).
    pub(crate) fn report_sent<T>(&self, report: Report, sent: &Result<T, StoreError>) {
        match (sent, &self.own) {
            (Ok(_), Some(own)) => own.delivered(report),
            (Err(e), _) if e.is_outage() => self.defer_report(report),
            _ => {}
        }
    }

    /// Under a quorum, keeps a report that did not reach Redis for the next record or flush (an
    /// in-memory client's reports reach its in-process breaker: nothing waits).
    pub(crate) fn defer_report(&self, report: Report) {
        if let Some(own) = &self.own
            && report != Report::None
            && self.shared.store.is_shared()
        {
            own.defer(report);
        }
    }

    /// Under a quorum, the report waiting to reach Redis, if any.
    pub(crate) fn deferred_report(&self) -> Report {
        self.own.as_ref().map_or(Report::None, crate::quorum::OwnBreaker::take_deferred)
    }

    /// Counts the outcome of a call decided without Redis, for Redis's metrics once it is back.
    pub(crate) fn count_degraded(&self, outcome: Outcome) {
        if !self.shared.store.is_shared() {
            return;
        }
        match outcome {
            Outcome::Ignore => self.pending.ignored(),
            _ => self.pending.degraded(outcome == Outcome::Success),
        }
    }

    /// Decides one acquire for the permit `id`: Redis while it answers, else the degraded mode.
    /// Until Redis's reply is read, the acquire may have leased a probe for `id` that nobody
    /// would free: a timeout, or the caller's future dropped, releases it (a no-op otherwise).
    pub(crate) async fn acquire(self: &Arc<Self>, id: &str) -> Acquired {
        if self.shared.store.decides_calls() {
            let op = Op::Acquire { permit: id.to_string(), batch: self.take_pending() };
            let mut unanswered = UnansweredAcquire { inner: self, id: Some(id.to_string()) };
            let result = self.run(&op).await;
            if matches!(&result, Ok(_) | Err(StoreError::Refused { .. } | StoreError::Invalid(_))) {
                unanswered.id = None;
            }
            drop(unanswered);
            match result {
                Ok(reply) => return Acquired::Redis(reply),
                Err(e) => tracing::debug!(breaker = %self.name, error = %e, "deciding without redis"),
            }
        }
        match self.degraded_mode() {
            Degraded::FailOpen => Acquired::FailOpen,
            Degraded::FailClosed => Acquired::FailClosed,
            _ => {
                self.seed_in_process();
                Acquired::InProcess(
                    self.run_in_process(&Op::Acquire { permit: id.to_string(), batch: Batch::default() }),
                )
            }
        }
    }
}

/// How one acquire was decided.
pub(crate) enum Acquired {
    /// Redis answered.
    Redis(Reply),
    /// The in-process breaker answered (an in-memory client, or degraded `Local`).
    InProcess(Reply),
    /// Degraded `FailOpen`: allowed, nothing to record.
    FailOpen,
    /// Degraded `FailClosed`: rejected.
    FailClosed,
}

/// An acquire sent to Redis whose reply has not been read: dropped while it still holds the
/// permit id, it releases that id in the background (a probe lease the acquire may have taken).
struct UnansweredAcquire<'i> {
    inner: &'i Arc<Inner>,
    id: Option<String>,
}

impl Drop for UnansweredAcquire<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let inner = self.inner.clone();
        let record = Record::release_unanswered(id);
        runtime.spawn(async move { inner.send_record(record).await });
    }
}

/// The batch of a script call until the call settles it. Dropped unsettled (the caller's future
/// cancelled while the request may be on its way), the batch is in doubt: sent again later.
struct BatchInFlight<'i> {
    inner: &'i Inner,
    /// The batch as sent, and as it is kept if its fate is unknown: with the record's own
    /// outcome folded in (its counts, metrics only) when the record holds the batch's id.
    batch: Option<(Batch, Batch)>,
}

impl<'i> BatchInFlight<'i> {
    fn new(inner: &'i Inner, op: &Op) -> BatchInFlight<'i> {
        let batch = op.batch().filter(|b| b.seq != 0).map(|b| {
            let mut kept = *b;
            if let Op::Record(r) = op {
                match r.outcome {
                    RecordOutcome::Success => kept.degraded_successes = kept.degraded_successes.saturating_add(1),
                    RecordOutcome::Failure => kept.degraded_failures = kept.degraded_failures.saturating_add(1),
                    RecordOutcome::Ignore => kept.ignored = kept.ignored.saturating_add(1),
                    RecordOutcome::Release | RecordOutcome::None => {}
                }
            }
            (*b, kept)
        });
        BatchInFlight { inner, batch }
    }

    fn settle(mut self, fate: Fate) {
        if let Some((sent, kept)) = self.batch.take() {
            let b = if matches!(fate, Fate::Unknown { .. }) { kept } else { sent };
            self.inner.pending.settle(&b, fate);
        }
    }
}

impl Drop for BatchInFlight<'_> {
    fn drop(&mut self) {
        if let Some((_, kept)) = self.batch.take() {
            self.inner.pending.settle(&kept, Fate::Unknown { resend_for: self.inner.resend_for() });
        }
    }
}
