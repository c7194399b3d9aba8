//! [`Breaker::execute`] and [`Breaker::execute_with`]: one call run through the breaker with a
//! deadline, its ticket held by a guard that records the outcome, or, dropped unfinished (the
//! call was cancelled or panicked), gives the ticket back (see `outcome.rs`).

use crate::breaker::Breaker;
use crate::breaker::permit::{Grant, Ticket};
use crate::breaker::snapshot::Decision;
use crate::breaker::view::View;
use crate::error::{Error, Rejected, TimedOut};
use crate::protocol::Outcome;
use std::future::Future;
use std::time::{Duration, Instant};

/// The ticket of one `execute`: borrowed, so the hot path touches no reference count. Dropped
/// unfinished (the call was cancelled or panicked), it releases its probe leases like a permit.
struct CallGuard<'b> {
    breaker: &'b Breaker,
    held: Held,
}

/// What a call's guard holds until its outcome is recorded.
enum Held {
    /// The common case, a closed breaker's snapshot with no quorum, as its view alone: the
    /// [`Ticket`] it stands for is made only if the call ends otherwise than in a healthy
    /// success (moving a ticket in and out of the guard, and its drop glue, cost the hot path
    /// about a quarter of its time).
    Closed(View),
    /// Any other grant.
    Ticket(Ticket),
    /// The outcome was recorded.
    Spent,
}

impl CallGuard<'_> {
    /// The ticket the guard holds, taken.
    fn take(&mut self) -> Option<Ticket> {
        match std::mem::replace(&mut self.held, Held::Spent) {
            Held::Closed(view) => Some(Ticket { grant: Grant::Closed(view), own: None }),
            Held::Ticket(ticket) => Some(ticket),
            Held::Spent => None,
        }
    }

    /// Records the call's outcome (see `Breaker::finish`).
    async fn finish(mut self, outcome: Outcome, slow: bool, timed_out: bool) {
        if let Some(ticket) = self.take() {
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
        let view = match &self.held {
            Held::Closed(view) if view.failures == 0 => *view,
            Held::Ticket(ticket) => match ticket.quiet_success() {
                Some(view) => view,
                None => return false,
            },
            _ => return false,
        };
        let inner = &self.breaker.inner;
        inner.meters.outcome(outcome, false);
        inner.pending.success(&view, slow);
        if let Held::Ticket(ticket) = std::mem::replace(&mut self.held, Held::Spent) {
            ticket.spend();
        }
        true
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.take() {
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
    /// The guard of a call the fleet granted: under a quorum, this process's own breaker
    /// admits it too (or the fleet's grant is given back).
    fn guard(&self, grant: Grant) -> Result<CallGuard<'_>, Rejected> {
        let ticket = if self.inner.own.is_none() { Ticket { grant, own: None } } else { self.ticket(grant)? };
        Ok(CallGuard { breaker: self, held: Held::Ticket(ticket) })
    }

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
        let mut guard = match self.inner.snapshot.decide_now() {
            // The common case (no quorum: no own breaker to ask), kept off the ticket's path.
            Decision::Allow(view) if self.inner.own.is_none() => CallGuard { breaker: self, held: Held::Closed(view) },
            // Under a quorum: this process's own breaker admits the call too.
            Decision::Allow(view) => CallGuard { breaker: self, held: Held::Ticket(self.ticket(Grant::Closed(view))?) },
            Decision::Reject { state, until } if !self.inner.config.shadow => {
                return Err(self.reject(Rejected::until(state, until, false)).into());
            }
            Decision::Throttle { admitted, left_ns } => {
                let rejected = self.throttle(admitted, Duration::from_nanos(left_ns));
                if !self.inner.config.shadow {
                    return Err(rejected.into());
                }
                // Shadow mode: the call runs (one draw decided it, not a second in `grant`).
                self.inner.shadow_rejected(&rejected);
                self.guard(Grant::Closed(self.inner.snapshot.view().1))?
            }
            _ => {
                let grant = self.grant().await?;
                self.guard(grant)?
            }
        };
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
