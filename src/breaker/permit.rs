//! The call path: [`Breaker::execute`] and [`Breaker::acquire`], the [`Permit`] of one call, and
//! how an outcome is recorded. Where a decision is made (Redis, the in-process breaker, the
//! degraded mode) is `route.rs`'s business.

use crate::breaker::Breaker;
use crate::breaker::route::Acquired;
use crate::breaker::snapshot::{Decision, SnapshotCell, View};
use crate::error::{Error, Rejected, TimedOut};
use crate::protocol::{Batch, Op, Outcome, Record, RecordOutcome, Reply, Report, Verdict};
use crate::quorum::{OwnDecision, OwnGrant};
use crate::state::State;
use std::future::Future;
use std::time::{Duration, Instant};

/// How a permit was granted: it decides where its outcome goes.
#[derive(Debug, Clone)]
enum Grant {
    /// Closed (from the snapshot or from Redis): a healthy success is batched.
    Closed(View),
    /// A half-open probe leased in Redis.
    Probe { view: View, id: String },
    /// Decided by the in-process breaker (in-memory client, or degraded `Local`).
    InProcess { view: View, probe: String },
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
    /// What this process's own breaker let through (under a quorum).
    own: Option<OwnGrant>,
}

impl Permit {
    /// True when this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        let own_probe = self.own.as_ref().is_some_and(OwnGrant::is_probe);
        own_probe
            || match &self.grant {
                Some(Grant::Probe { .. }) => true,
                Some(Grant::InProcess { probe, .. }) => !probe.is_empty(),
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

    /// Reports a failure with a one-line description of it (e.g. `"503 from payments-api"`),
    /// which the breaker's [`history`](crate::Breaker::history) keeps when this failure opens
    /// the breaker. Opt-in because error messages can hold secrets: give only what operators
    /// may read. Control characters become spaces; at most 200 bytes are kept.
    pub async fn failure_described(mut self, description: &str) {
        if let Some(grant) = self.grant.take() {
            let own = self.own.take();
            self.breaker.finish(grant, own, Outcome::Failure, false, false, one_line(description)).await;
        }
    }

    /// Reports an outcome that says nothing about the downstream's health.
    pub async fn ignore(mut self) {
        self.finish(Outcome::Ignore, false, false).await;
    }

    /// Gives the permit back without an outcome, and waits until its probe lease (if it holds
    /// one) is freed in Redis. Dropping a permit does the same in the background.
    pub async fn release(mut self) {
        self.breaker.release_own(self.own.take());
        if let Some(record) = self.grant.take().and_then(|g| self.breaker.release_record(g)) {
            self.breaker.inner.send_record(record).await;
        }
    }

    async fn finish(&mut self, outcome: Outcome, slow: bool, timed_out: bool) {
        if let Some(grant) = self.grant.take() {
            self.breaker.finish(grant, self.own.take(), outcome, slow, timed_out, String::new()).await;
        }
    }
}

/// The longest failure description kept.
const MAX_DESCRIPTION: usize = 200;

/// `text` on one line (control characters as spaces), cut to `MAX_DESCRIPTION` bytes at a
/// character boundary.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_DESCRIPTION));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if out.len() + c.len_utf8() > MAX_DESCRIPTION {
            break;
        }
        out.push(c);
    }
    out
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.breaker.release_own(self.own.take());
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
    own: Option<OwnGrant>,
}

impl CallGuard<'_> {
    async fn finish(mut self, outcome: Outcome, slow: bool, timed_out: bool) {
        if let Some(grant) = self.grant.take() {
            self.breaker.finish(grant, self.own.take(), outcome, slow, timed_out, String::new()).await;
        }
    }

    /// The common end of a call, without entering `finish`'s future: a success of a healthy
    /// closed breaker is one count (under a quorum, when it changes nothing in this process's
    /// own breaker either). Answers whether it was that.
    fn finish_healthy(&mut self, outcome: Outcome, slow: bool) -> bool {
        let own_unmoved = || match (&self.own, &self.breaker.inner.own) {
            (Some(grant), Some(own)) => own.success_changes_nothing(grant),
            _ => true,
        };
        match &self.grant {
            Some(Grant::Closed(view)) if outcome == Outcome::Success && view.failures == 0 && own_unmoved() => {
                let inner = &self.breaker.inner;
                inner.meters.outcome(outcome, false);
                inner.pending.success(view, slow);
                self.grant = None;
                self.own = None;
                true
            }
            _ => false,
        }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(grant) = self.grant.take() {
            self.breaker.abandon(grant, self.own.take());
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

impl Breaker {
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
        // A panic inside the call unwinds through `guard`, whose drop records it as a failure.
        // A fresh snapshot decides without entering `grant`'s (larger) future. Under a quorum,
        // this process's own breaker decides next (with no await before the guard holds it).
        let grant = match self.inner.snapshot.decide_now() {
            Decision::Allow(view) => Grant::Closed(view),
            Decision::Reject { state, retry_after } if !self.inner.config.shadow => {
                return Err(self.reject(state, retry_after).into());
            }
            _ => self.grant().await?,
        };
        let mut guard = CallGuard { breaker: self, grant: Some(grant), own: None };
        if self.inner.own.is_some() {
            // Rejected by its own breaker: the guard's drop gives the fleet's grant back.
            guard.own = self.own_grant()?;
        }
        let config = &self.inner.config;
        let started = config.slow_call_rate.is_some().then(Instant::now);
        match with_deadline(f(), config.call_timeout).await {
            Some(result) => {
                let slow = started.is_some_and(|s| s.elapsed() >= config.slow_call_duration);
                let outcome = classify(&result);
                if !guard.finish_healthy(outcome, slow) {
                    guard.finish(outcome, slow, false).await;
                }
                result.map_err(Error::Inner)
            }
            None => {
                guard.finish(Outcome::Failure, config.slow_call_rate.is_some(), true).await;
                Err(Error::Timeout(TimedOut::new(config.call_timeout)))
            }
        }
    }

    /// Asks for permission to make one call, for callers that cannot wrap the call in a closure.
    ///
    /// # Errors
    /// [`Rejected`] when the breaker turns the call away.
    pub async fn acquire(&self) -> Result<Permit, Rejected> {
        let grant = self.grant().await?;
        let mut permit = Permit { breaker: self.clone(), grant: Some(grant), own: None };
        if self.inner.own.is_some() {
            // Rejected by its own breaker: the permit's drop gives the fleet's grant back.
            permit.own = self.own_grant()?;
        }
        Ok(permit)
    }

    /// Under a quorum: what this process's own breaker says, while the fleet is closed (an
    /// open, half-open or forced fleet decides alone, and the own breaker folds into it).
    fn own_grant(&self) -> Result<Option<OwnGrant>, Rejected> {
        let Some(own) = &self.inner.own else { return Ok(None) };
        if self.inner.snapshot.state() != State::Closed {
            return Ok(None); // (the own breaker folded when the snapshot learnt that state)
        }
        let (decision, moved) = own.acquire(|| self.inner.shared.in_process.clock.now_ms());
        if let Some(o) = moved {
            self.inner.announce(&o.transitions, o.incarnation, o.remaining_ms, true);
        }
        match decision {
            OwnDecision::Allow(grant) => Ok(Some(grant)),
            OwnDecision::Reject { state, retry_after } if self.inner.config.shadow => {
                self.inner.shadow_rejected(state, retry_after);
                Ok(None)
            }
            OwnDecision::Reject { state, retry_after } => {
                self.inner.meters.rejected();
                self.inner.pending.rejected();
                Err(Rejected { state, retry_after, local: true })
            }
        }
    }

    /// Frees an own probe lease of a call that ends with no outcome.
    fn release_own(&self, own: Option<OwnGrant>) {
        if let (Some(grant), Some(breaker)) = (own, &self.inner.own) {
            let now = self.inner.shared.in_process.clock.now_ms();
            breaker.finish(grant, RecordOutcome::Release, false, false, now);
        }
    }

    async fn grant(&self) -> Result<Grant, Rejected> {
        let decided = match self.inner.snapshot.decide_now() {
            Decision::Allow(view) => return Ok(Grant::Closed(view)),
            Decision::Reject { state, retry_after } => Err(self.reject(state, retry_after)),
            Decision::Miss => match self.stale_while_refreshing() {
                Some(view) => Ok(Grant::Closed(view)),
                None => self.grant_single_flight().await,
            },
        };
        match decided {
            // Shadow mode: the call runs; its outcome counts in metrics (its epoch is not the
            // open one's, so it moves no state).
            Err(rejected) if self.inner.config.shadow => {
                self.inner.shadow_rejected(rejected.state, rejected.retry_after);
                Ok(Grant::Closed(self.inner.snapshot.view().1))
            }
            decided => decided,
        }
    }

    /// A snapshot that cannot decide (cold, expired, marked stale after a Redis restart):
    /// one caller asks Redis for the whole process while the others wait for its reply (at
    /// most `op_timeout`) and decide from the snapshot it brings. A caller that still cannot
    /// decide (a half-open probe of its own) asks Redis itself.
    async fn grant_single_flight(&self) -> Result<Grant, Rejected> {
        let inner = &*self.inner;
        if !self.inner.shared.store.decides_calls() || tokio::runtime::Handle::try_current().is_err() {
            return self.grant_slow().await;
        }
        if inner.snapshot.claim_refresh() {
            let _claim = RefreshClaim(&inner.snapshot);
            return self.grant_slow().await;
        }
        inner.snapshot.wait_for_refresh(inner.shared.config.op_timeout).await;
        match inner.snapshot.decide(Instant::now()) {
            Decision::Allow(view) => Ok(Grant::Closed(view)),
            Decision::Reject { state, retry_after } => Err(self.reject(state, retry_after)),
            Decision::Miss => self.grant_slow().await,
        }
    }

    /// Single flight: when a closed snapshot has just expired, one task refreshes it from Redis
    /// while every caller keeps deciding from it. Not while Redis is down (then the degraded
    /// mode decides) nor without a runtime to refresh on.
    fn stale_while_refreshing(&self) -> Option<View> {
        let inner = &*self.inner;
        if !self.inner.shared.store.decides_calls() {
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

    /// The grant of an `execute` dropped without an outcome. While a panic unwinds (the
    /// protected call panicked: the downstream's client failed) it is recorded as a failure, in
    /// the background, and frees its probe; otherwise (a cancelled call) it is released and
    /// records nothing. Costs nothing on the path that finishes a call. (A [`Permit`] dropped
    /// by a panic elsewhere only releases: its call may never have started.)
    fn abandon(&self, grant: Grant, own: Option<OwnGrant>) {
        if !std::thread::panicking() {
            self.release_own(own);
            return self.release(grant);
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let breaker = self.clone();
                runtime.spawn(async move {
                    breaker.finish(grant, own, Outcome::Failure, false, false, String::new()).await;
                });
            }
            Err(_) => {
                self.release_own(own);
                self.release(grant);
            }
        }
    }

    /// Frees the probe lease of a grant that ends with no outcome; records nothing.
    fn release(&self, grant: Grant) {
        if let Some(record) = self.release_record(grant)
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            // Without a runtime the lease simply expires after probe_lease.
            let breaker = self.clone();
            handle.spawn(async move { breaker.inner.send_record(record).await });
        }
    }

    /// The record that frees a grant's Redis probe lease, if it holds one; a local lease is
    /// freed here and now.
    fn release_record(&self, grant: Grant) -> Option<Record> {
        let (view, probe, local) = match grant {
            Grant::Probe { view, id } => (view, id, false),
            Grant::InProcess { view, probe } if !probe.is_empty() => (view, probe, true),
            _ => return None,
        };
        if local {
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

    fn reject(&self, state: State, retry_after: Option<Duration>) -> Rejected {
        if !self.inner.config.shadow {
            self.inner.meters.rejected();
            self.inner.pending.rejected();
        }
        Rejected { state, retry_after, local: false }
    }

    async fn grant_slow(&self) -> Result<Grant, Rejected> {
        let id = format!("{:016x}", rand::random::<u64>());
        let rejected = |reply: &Reply| self.reject(reply.state, reply.remaining_ms.map(Duration::from_millis));
        match self.inner.acquire(&id).await {
            Acquired::Redis(reply) => match reply.verdict {
                Verdict::Probe => Ok(Grant::Probe { view: view_of(&reply), id }),
                Verdict::Rejected => Err(rejected(&reply)),
                _ => Ok(Grant::Closed(view_of(&reply))),
            },
            Acquired::InProcess(reply) => match reply.verdict {
                Verdict::Rejected => Err(rejected(&reply)),
                Verdict::Probe => Ok(Grant::InProcess { view: view_of(&reply), probe: id }),
                _ => Ok(Grant::InProcess { view: view_of(&reply), probe: String::new() }),
            },
            Acquired::FailOpen => Ok(Grant::Free),
            Acquired::FailClosed => Err(self.reject(State::Open, Some(FAIL_CLOSED_RETRY))),
        }
    }

    async fn finish(
        &self,
        grant: Grant,
        own: Option<OwnGrant>,
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
        // Under a quorum, this process's own breaker hears the outcome first; what it reports
        // rides on this outcome's record, sent now.
        let report = match (own, &self.inner.own) {
            (Some(grant), Some(breaker)) => {
                let now = self.inner.shared.in_process.clock.now_ms();
                let o = breaker.finish(grant, kind, slow, timed_out, now);
                self.inner.announce(&o.transitions, o.incarnation, o.remaining_ms, true);
                o.report
            }
            _ => Report::None,
        };
        let quiet = report == Report::None;
        match grant {
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
}

/// What `Degraded::FailClosed` tells a rejected caller while Redis is down.
const FAIL_CLOSED_RETRY: Duration = Duration::from_secs(1);

/// The claim of a breaker's one refresh; ended (and the waiters woken) when dropped, also when
/// the claiming caller is cancelled.
struct RefreshClaim<'s>(&'s SnapshotCell);

impl Drop for RefreshClaim<'_> {
    fn drop(&mut self) {
        self.0.refreshed();
    }
}

fn view_of(reply: &Reply) -> View {
    View { incarnation: reply.incarnation, epoch: reply.epoch, failures: reply.failures, fseq: reply.fseq }
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_failure_description_is_one_line_of_at_most_200_bytes() {
        assert_eq!(one_line("503\nfrom\tupstream"), "503 from upstream");
        let long = "é".repeat(150);
        let cut = one_line(&long);
        assert_eq!(cut.len(), 200, "cut at a character boundary");
        assert!(long.starts_with(&cut));
    }
}
