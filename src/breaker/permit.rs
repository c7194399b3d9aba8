//! How one call gets permission: the fleet's [`Grant`] (from a fresh snapshot, from Redis with
//! one refresh per process at a time, or from the degraded mode), then under a quorum this
//! process's own admission (`Inner::admit`, the quorum's first point), held together as a
//! [`Ticket`]. [`Breaker::acquire`] hands a ticket to its caller as a [`Permit`]; `execute.rs`
//! runs a call with one, `outcome.rs` records how it went. Where a decision is made (Redis, the
//! in-process breaker, the degraded mode) is `route.rs`'s business.

use crate::breaker::Breaker;
use crate::breaker::route::Acquired;
use crate::breaker::snapshot::{Decision, SnapshotCell, View};
use crate::error::Rejected;
use crate::protocol::{Outcome, Reply, Verdict};
use crate::quorum::Admission;
use crate::state::State;
use crate::ticks::Deadline;
use std::time::{Duration, Instant};

/// How the fleet let a call through: it decides where its outcome goes.
#[derive(Debug, Clone)]
pub(super) enum Grant {
    /// Closed (from the snapshot or from Redis): a healthy success is batched.
    Closed(View),
    /// A half-open probe leased in Redis.
    Probe { view: View, id: String },
    /// Decided by the in-process breaker (in-memory client, or degraded `Local`).
    InProcess { view: View, probe: String },
    /// Allowed by `Degraded::FailOpen`: nothing to record.
    Free,
}

/// What let one call through: the fleet's grant and, under a quorum, this process's own
/// admission (dropped unobserved, it gives its own probe lease back by itself).
#[derive(Debug)]
pub(super) struct Ticket {
    /// The fleet's word.
    pub(super) grant: Grant,
    /// This process's own breaker's admission, under a quorum while the fleet is closed.
    pub(super) own: Option<Admission>,
}

impl Ticket {
    /// True when this call is a half-open probe, of the fleet or of this process's own breaker.
    fn is_probe(&self) -> bool {
        self.own.as_ref().is_some_and(Admission::is_probe)
            || match &self.grant {
                Grant::Probe { .. } => true,
                Grant::InProcess { probe, .. } => !probe.is_empty(),
                _ => false,
            }
    }

    /// The view of a call whose success would change nothing: granted by a closed breaker with
    /// no failure counted and, under a quorum, admitted by an own breaker that a success would
    /// not move either. Such a success is one batched count ([`spend`](Self::spend)).
    #[inline]
    pub(super) fn quiet_success(&self) -> Option<View> {
        match self.grant {
            Grant::Closed(view)
                if view.failures == 0 && self.own.as_ref().is_none_or(Admission::success_changes_nothing) =>
            {
                Some(view)
            }
            _ => None,
        }
    }

    /// Ends the ticket of a quiet success: nothing to record or give back anywhere.
    #[inline]
    pub(super) fn spend(self) {
        if let Some(own) = self.own {
            own.forget();
        }
    }
}

/// Permission for one call. Report how it went with [`success`](Permit::success),
/// [`failure`](Permit::failure) or [`ignore`](Permit::ignore); dropping it records nothing and
/// frees a half-open probe lease.
#[derive(Debug)]
#[must_use = "a permit should be finished with success(), failure() or ignore()"]
pub struct Permit {
    breaker: Breaker,
    /// Taken when the permit is finished or released.
    ticket: Option<Ticket>,
}

impl Permit {
    /// True when this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.ticket.as_ref().is_some_and(Ticket::is_probe)
    }

    /// True when this process alone let the call through, not the state the fleet shares in
    /// Redis: Redis could not be asked (the first call that meets an outage included, before the
    /// client counts Redis as down) and the degraded mode decided (the in-process breaker of
    /// [`Degraded::Local`](crate::Degraded::Local), or `FailOpen`); always, for an in-memory
    /// client. False when a snapshot of Redis's state or Redis itself granted it. For logs and
    /// metrics of calls made on the process's own judgement during an outage.
    pub fn is_local(&self) -> bool {
        self.ticket.as_ref().is_some_and(|t| matches!(t.grant, Grant::InProcess { .. } | Grant::Free))
    }

    /// Reports a success.
    pub async fn success(mut self) {
        self.finish(Outcome::Success, String::new()).await;
    }

    /// Reports a failure; it is recorded before this returns.
    pub async fn failure(mut self) {
        self.finish(Outcome::Failure, String::new()).await;
    }

    /// Reports a failure with a one-line description of it (e.g. `"503 from payments-api"`),
    /// which the breaker's [`history`](crate::Breaker::history) keeps when this failure opens
    /// the breaker. Opt-in because error messages can hold secrets: give only what operators
    /// may read. Control characters become spaces; at most 200 bytes are kept.
    pub async fn failure_described(mut self, description: &str) {
        self.finish(Outcome::Failure, one_line(description)).await;
    }

    /// Reports an outcome that says nothing about the downstream's health.
    pub async fn ignore(mut self) {
        self.finish(Outcome::Ignore, String::new()).await;
    }

    /// Gives the permit back without an outcome, and waits until its probe lease (if it holds
    /// one) is freed in Redis. Dropping a permit does the same in the background.
    pub async fn release(mut self) {
        let Some(Ticket { grant, own }) = self.ticket.take() else { return };
        drop(own); // its own probe lease first, as a dropped permit does
        if let Some(record) = self.breaker.release_record(grant) {
            self.breaker.inner.send_record(record).await;
        }
    }

    /// Records `outcome` (see `Breaker::finish`); the permit is spent.
    async fn finish(&mut self, outcome: Outcome, description: String) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.finish(ticket, outcome, false, false, description).await;
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
        if let Some(ticket) = self.ticket.take() {
            self.breaker.release(ticket);
        }
    }
}

impl Breaker {
    /// Asks for permission to make one call, for callers that cannot wrap the call in a closure.
    ///
    /// # Errors
    /// [`Rejected`] when the breaker turns the call away.
    pub async fn acquire(&self) -> Result<Permit, Rejected> {
        let ticket = self.ticket(self.grant().await?)?;
        Ok(Permit { breaker: self.clone(), ticket: Some(ticket) })
    }

    /// The ticket of a call the fleet granted: under a quorum, this process's own breaker
    /// admits the call too (the quorum's first point), or turns it away, and the fleet's grant
    /// is given back.
    pub(super) fn ticket(&self, grant: Grant) -> Result<Ticket, Rejected> {
        match self.inner.admit() {
            Ok(own) => Ok(Ticket { grant, own }),
            Err(rejected) => {
                self.release(Ticket { grant, own: None });
                Err(rejected)
            }
        }
    }

    /// The fleet's word on one call: from a fresh snapshot, else from Redis (see
    /// `grant_single_flight`) or the degraded mode; shadow mode turns a rejection into a grant.
    pub(super) async fn grant(&self) -> Result<Grant, Rejected> {
        let decided = match self.inner.snapshot.decide_now() {
            Decision::Allow(view) => return Ok(Grant::Closed(view)),
            Decision::Reject { state, until } => Err(self.reject(Rejected::until(state, until, false))),
            Decision::Throttle { admitted, left, .. } => Err(self.throttle(admitted, left)),
            Decision::Miss => match self.stale_while_refreshing() {
                Some(Ok(view)) => Ok(Grant::Closed(view)),
                Some(Err((admitted, left))) => Err(self.throttle(admitted, left)),
                None => self.grant_single_flight().await,
            },
        };
        match decided {
            // Shadow mode: the call runs; its outcome counts in metrics (its epoch is not the
            // open one's, so it moves no state).
            Err(rejected) if self.inner.config.shadow => {
                self.inner.shadow_rejected(&rejected);
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
            Decision::Reject { state, until } => Err(self.reject(Rejected::until(state, until, false))),
            Decision::Throttle { admitted, left, .. } => Err(self.throttle(admitted, left)),
            Decision::Miss => self.grant_slow().await,
        }
    }

    /// Single flight: when a closed snapshot has just expired, one task refreshes it from Redis
    /// while every caller keeps deciding from it. Not while Redis is down (then the degraded
    /// mode decides) nor without a runtime to refresh on.
    fn stale_while_refreshing(&self) -> Option<Result<View, crate::breaker::snapshot::Held>> {
        let inner = &*self.inner;
        if !self.inner.shared.store.decides_calls() {
            return None;
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (view, claimed, admitted) = inner.snapshot.stale_closed(Instant::now(), inner.shared.cache_ttl())?;
        if claimed {
            let breaker = self.clone();
            runtime.spawn(async move {
                let _ = breaker.flush().await;
                breaker.inner.snapshot.refreshed();
            });
        }
        Some(admitted.map(|()| view))
    }

    /// A rejection by the fleet's breaker, counted (not in shadow mode: the call runs).
    #[inline]
    pub(super) fn reject(&self, rejected: Rejected) -> Rejected {
        if !self.inner.config.shadow {
            self.inner.meters.rejected();
            self.inner.pending.rejected();
        }
        rejected
    }

    /// A call the breaker's recovery ramp held back, counted (not in shadow mode: the call runs).
    #[inline]
    pub(super) fn throttle(&self, admitted: f64, ramp_left: Duration) -> Rejected {
        if !self.inner.config.shadow {
            self.inner.meters.throttled();
            self.inner.pending.throttled();
        }
        Rejected::ramp(admitted, ramp_left)
    }

    /// The recovery ramp's draw for a call Redis (or the in-process breaker) let through while
    /// closed: `reply.ramp` was counted from `asked`.
    fn ramp_gate(&self, reply: &Reply, asked: Instant) -> Result<(), Rejected> {
        let Some(r) = reply.ramp.filter(|_| reply.state == State::Closed) else { return Ok(()) };
        let left = Duration::from_millis(r.left_ms).saturating_sub(asked.elapsed());
        let left_ns = u64::try_from(left.as_nanos()).unwrap_or(u64::MAX);
        if left_ns == 0 {
            return Ok(());
        }
        crate::ramp::draw(left_ns, crate::ramp::pack(r.len_ms, r.permille))
            .map_err(|admitted| self.throttle(admitted, left))
    }

    /// Asks Redis (or, while it cannot answer, the degraded mode) for the fleet's grant, with a
    /// new permit id for a probe lease.
    async fn grant_slow(&self) -> Result<Grant, Rejected> {
        let id = format!("{:016x}", rand::random::<u64>());
        // Redis counted the time left after this instant: counted from it, a deadline is never
        // later than Redis's.
        let asked = Instant::now();
        let remaining = |reply: &Reply| reply.remaining_ms.map(Duration::from_millis);
        match self.inner.acquire(&id).await {
            Acquired::Redis(reply) => match reply.verdict {
                Verdict::Probe => Ok(Grant::Probe { view: View::of(&reply), id }),
                Verdict::Rejected => {
                    let until = remaining(&reply).map(|d| Deadline::after(asked, d));
                    Err(self.reject(Rejected::until(reply.state, until, false)))
                }
                _ => {
                    self.ramp_gate(&reply, asked)?;
                    Ok(Grant::Closed(View::of(&reply)))
                }
            },
            // On the client's own clock, which may be a test's FakeClock: the time left as told.
            Acquired::InProcess(reply) => match reply.verdict {
                Verdict::Rejected => Err(self.reject(Rejected::after(reply.state, remaining(&reply), false))),
                Verdict::Probe => Ok(Grant::InProcess { view: View::of(&reply), probe: id }),
                _ => {
                    self.ramp_gate(&reply, asked)?;
                    Ok(Grant::InProcess { view: View::of(&reply), probe: String::new() })
                }
            },
            Acquired::FailOpen => Ok(Grant::Free),
            Acquired::FailClosed => Err(self.reject(Rejected::new(State::Open, Some(FAIL_CLOSED_RETRY)))),
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
