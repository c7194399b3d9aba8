//! [`Breaker::execute`] and [`Breaker::execute_with`]: one call run through the breaker with a
//! deadline, its ticket held by a guard that records the outcome, or, dropped unfinished (the
//! call was cancelled or panicked), gives the ticket back (see `outcome.rs`).

use crate::breaker::Breaker;
use crate::breaker::permit::{Grant, Ticket};
use crate::breaker::snapshot::Decision;
use crate::error::{Error, Rejected, TimedOut};
use crate::protocol::Outcome;
use std::future::Future;
use std::time::{Duration, Instant};

/// The ticket of one `execute`: borrowed, so the hot path touches no reference count. Dropped
/// unfinished (the call was cancelled or panicked), it releases its probe leases like a permit.
struct CallGuard<'b> {
    breaker: &'b Breaker,
    /// Taken when the call's outcome is recorded.
    ticket: Option<Ticket>,
}

impl CallGuard<'_> {
    /// Records the call's outcome (see `Breaker::finish`).
    async fn finish(mut self, outcome: Outcome, slow: bool, timed_out: bool) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.finish(ticket, outcome, slow, timed_out, String::new()).await;
        }
    }

    /// The common end of a call, without entering `finish`'s future: a success of a healthy
    /// closed breaker is one count (under a quorum, when it changes nothing in this process's
    /// own breaker either). Answers whether it was that.
    fn finish_healthy(&mut self, outcome: Outcome, slow: bool) -> bool {
        if outcome != Outcome::Success {
            return false;
        }
        let Some(view) = self.ticket.as_ref().and_then(Ticket::quiet_success) else { return false };
        let inner = &self.breaker.inner;
        inner.meters.outcome(outcome, false);
        inner.pending.success(&view, slow);
        if let Some(ticket) = self.ticket.take() {
            ticket.spend();
        }
        true
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.breaker.abandon(ticket);
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
        // this process's own breaker admits the call next (with no await before the guard
        // holds the ticket).
        let grant = match self.inner.snapshot.decide_now() {
            Decision::Allow(view) => Grant::Closed(view),
            Decision::Reject { state, until } if !self.inner.config.shadow => {
                return Err(self.reject(Rejected::until(state, until, false)).into());
            }
            Decision::Throttle { view, admitted, left } => {
                let rejected = self.throttle(admitted, left);
                if !self.inner.config.shadow {
                    return Err(rejected.into());
                }
                // Shadow mode: the call runs (one draw decided it, not a second in `grant`).
                self.inner.shadow_rejected(&rejected);
                Grant::Closed(view)
            }
            _ => self.grant().await?,
        };
        // Without a quorum there is no own breaker to ask: the ticket is the fleet's grant alone
        // (the common case, kept off `ticket`'s call).
        let ticket = if self.inner.own.is_none() { Ticket { grant, own: None } } else { self.ticket(grant)? };
        let mut guard = CallGuard { breaker: self, ticket: Some(ticket) };
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
}
