//! The snapshot of one breaker that each process keeps, read lock-free on every call: what it
//! decides, which update replaces it, and the single flight that refreshes it.
//!
//! Its words are a seqlock over atomics (`seqlock.rs`): readers never block, never allocate and
//! retry only when a writer (a script reply, rare) raced them. Deadlines are monotonic instants
//! of this process, computed from the *remaining* time Redis returned, counted from when the
//! request was sent, so no clock is ever compared with Redis's.

use crate::breaker::seqlock::{SeqLock, Words};
pub(crate) use crate::breaker::view::View;
use crate::protocol::Reply;
use crate::state::State;
use crate::ticks::{Deadline, TimeBase, nanos};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a fresh snapshot decides, or that it is not fresh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// Closed or forced closed: allowed without asking Redis.
    Allow(View),
    /// Closed, held back by its recovery ramp, which admits `admitted` of the calls now and has
    /// `left` to run; `view` is what a call it let through would carry (shadow mode runs it).
    Throttle { view: View, admitted: f64, left: Duration },
    /// Open, forced open, or half-open with every probe out: rejected without asking Redis,
    /// until the state's deadline (`None`: forced open until reset). An instant, not the time
    /// left: the precise clock is read only if the rejection is asked how long is left.
    Reject { state: State, until: Option<Deadline> },
    /// Not fresh: ask Redis.
    Miss,
}

const NO_DEADLINE: u64 = u64::MAX;

/// A call a recovery ramp held back: the fraction it admits now, and its time left.
pub(crate) type Held = (f64, Duration);

/// Where a snapshot update comes from, and when: it decides whether the update replaces what
/// the process holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source {
    /// The reply to a request sent at this instant: it reflects Redis at some time after it.
    Reply(Instant),
    /// An event received at this instant: it reflects Redis at some time before it.
    Event(Instant),
    /// The in-process breaker decided (in-memory client, degraded `Local`): shown by `state()`
    /// and `snapshot()`, never fresh, so every call still asks the deciding machine (or Redis,
    /// once it is back), and replaced by the next reply from Redis.
    Local,
}

/// The snapshot of one breaker in this process.
#[derive(Debug)]
pub(crate) struct SnapshotCell {
    time: TimeBase,
    /// State, view, freshness (ns since `base`) and deadline (ns since `base`, or
    /// `NO_DEADLINE`); written under `writer` only.
    words: SeqLock,
    /// False when Redis said the state's last transition was not announced (see
    /// [`Reply::announced`]); read for `Breaker::snapshot`, not on the hot path.
    announced: AtomicBool,
    /// Nanoseconds since `base` of the latest instant the held snapshot is known to reflect
    /// (a reply's send time, an event's arrival); written under `writer` only.
    known_at: AtomicU64,
    writer: Mutex<()>,
    /// Set while one task asks Redis for this breaker on behalf of the process (single flight).
    refreshing: AtomicBool,
    /// Wakes the callers that wait for that task.
    refreshed: tokio::sync::Notify,
}

impl SnapshotCell {
    pub(crate) fn new(base: Instant) -> SnapshotCell {
        SnapshotCell {
            time: TimeBase::new(base),
            words: SeqLock::new(&Words {
                state: State::Closed,
                view: View::default(),
                fresh_until: 0,
                deadline: NO_DEADLINE,
                ramp: 0,
            }),
            announced: AtomicBool::new(true),
            known_at: AtomicU64::new(0),
            writer: Mutex::new(()),
            refreshing: AtomicBool::new(false),
            refreshed: tokio::sync::Notify::new(),
        }
    }

    fn since_base(&self, at: Instant) -> u64 {
        self.time.since(at)
    }

    /// Decides from the snapshot if it is fresh now, on the coarse clock (the hot path). A
    /// rejection carries the deadline itself, never a time left read on the coarse clock,
    /// which may lag the precise one by milliseconds under load.
    #[inline]
    pub(crate) fn decide_now(&self) -> Decision {
        self.decide_at(self.time.coarse_now())
    }

    /// Decides from the snapshot if it is fresh at `now`.
    pub(crate) fn decide(&self, now: Instant) -> Decision {
        self.decide_at(self.since_base(now))
    }

    #[inline]
    fn decide_at(&self, now: u64) -> Decision {
        let Words { state, view, fresh_until, deadline, ramp } = self.words.read();
        if now >= fresh_until {
            return Decision::Miss;
        }
        match state {
            // Closed with a recovery ramp that runs: one draw decides.
            State::Closed if ramp != 0 && deadline > now => match crate::ramp::draw(deadline - now, ramp) {
                Ok(()) => Decision::Allow(view),
                Err(admitted) => Decision::Throttle { view, admitted, left: Duration::from_nanos(deadline - now) },
            },
            State::Closed | State::ForcedClosed => Decision::Allow(view),
            _ => Decision::Reject { state, until: (deadline != NO_DEADLINE).then(|| self.time.deadline(deadline)) },
        }
    }

    /// An expired snapshot that may still allow calls while one task refreshes it: closed,
    /// expired less than `grace` ago. The caller that gets `claimed` must start the refresh
    /// and call [`refreshed`](Self::refreshed) when it ends.
    pub(crate) fn stale_closed(&self, now: Instant, grace: Duration) -> Option<(View, bool, Result<(), Held>)> {
        let Words { state, view, fresh_until, deadline, ramp } = self.words.read();
        let now = self.since_base(now);
        let allowed = state.allows_calls() && fresh_until > 0 && now < fresh_until.saturating_add(nanos(grace));
        if !allowed {
            return None;
        }
        let claimed = self.refreshing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok();
        let admitted = if state == State::Closed && ramp != 0 && deadline > now {
            crate::ramp::draw(deadline - now, ramp).map_err(|a| (a, Duration::from_nanos(deadline - now)))
        } else {
            Ok(())
        };
        Some((view, claimed, admitted))
    }

    /// The recovery ramp of a closed snapshot, as it stands at `now` (`None`: none runs).
    pub(crate) fn ramp(&self, now: Instant) -> Option<crate::Ramp> {
        let Words { state, deadline, ramp, .. } = self.words.read();
        let now = self.since_base(now);
        (state == State::Closed && deadline > now && deadline != NO_DEADLINE).then(|| {
            crate::Ramp::new(
                Duration::from_nanos(deadline - now),
                Duration::from_millis(ramp >> 10),
                u16::try_from(ramp & 1023).unwrap_or(1000),
            )
        })
    }

    /// Ends a refresh claimed by [`stale_closed`](Self::stale_closed) or
    /// [`claim_refresh`](Self::claim_refresh), and wakes the callers waiting for it.
    pub(crate) fn refreshed(&self) {
        self.refreshing.store(false, Ordering::Release);
        self.refreshed.notify_waiters();
    }

    /// Claims the one refresh of this breaker; `false` when another task holds it.
    pub(crate) fn claim_refresh(&self) -> bool {
        self.refreshing.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Waits (at most `limit`) for the refresh another task is making.
    pub(crate) async fn wait_for_refresh(&self, limit: Duration) {
        let notified = self.refreshed.notified();
        if self.refreshing.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(limit, notified).await;
        }
    }

    /// The state as last seen, fresh or not (one atomic load).
    pub(crate) fn state(&self) -> State {
        self.words.state()
    }

    /// Whether the state last applied was announced on the events channel (Redis said so, or
    /// it came as an event); false when its transition's event was refused.
    pub(crate) fn announced(&self) -> bool {
        self.announced.load(Ordering::Acquire)
    }

    /// The snapshot as it stands, fresh or not.
    pub(crate) fn view(&self) -> (State, View, bool) {
        let Words { state, view, fresh_until, .. } = self.words.read();
        (state, view, self.since_base(Instant::now()) < fresh_until)
    }

    /// The snapshot with the time left to its deadline at `now` (`None`: no deadline).
    pub(crate) fn with_deadline(&self, now: Instant) -> (State, View, Option<Duration>) {
        let Words { state, view, deadline, .. } = self.words.read();
        // A closed state's deadline is its ramp's end (see `ramp`), not a deadline of the state.
        let left = (deadline != NO_DEADLINE && state != State::Closed)
            .then(|| Duration::from_nanos(deadline.saturating_sub(self.since_base(now))));
        (state, view, left)
    }

    /// Whether the snapshot can no longer decide any call at `now`, not even as a stale closed
    /// one within `grace`, and no task is refreshing it.
    pub(crate) fn unused_at(&self, now: Instant, grace: Duration) -> bool {
        let fresh_until = self.words.read().fresh_until;
        self.since_base(now) >= fresh_until.saturating_add(nanos(grace)) && !self.refreshing.load(Ordering::Acquire)
    }

    /// Makes the next call ask Redis (the event subscription dropped: events may be lost).
    pub(crate) fn mark_stale(&self) {
        let _guard = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.words.write(&Words { fresh_until: 0, ..self.words.read() });
    }

    /// Applies what Redis said, unless what the process holds is known to be newer.
    ///
    /// Redis is the truth: a reply to a request sent after everything the held snapshot
    /// reflects replaces it, whatever its epoch (Redis restarted from an older RDB, a lagging
    /// replica promoted, a forged event). A reply that raced a newer update (its request was
    /// sent before that update arrived), or an event (it may have been published before what
    /// is held), replaces it only when its (incarnation, epoch, fseq) is not older; an
    /// incarnation is Redis's clock when the state was created, so a larger one is newer.
    pub(crate) fn apply(&self, reply: &Reply, source: Source, cache_ttl: Duration) {
        self.apply_with(reply, source, || cache_ttl);
    }

    /// Applies the reply to a request sent at `sent`: fresh for `long()` when the state's last
    /// transition was announced, else for `short` (a process that holds a state nobody
    /// announced would not hear of the next transition either, if it is not announced).
    ///
    /// `long` is asked under the writer lock, as the update is written. A subscription that
    /// drops is recorded as lost first, then every snapshot is marked stale under this lock: so
    /// either `long` sees the loss (and grants the short bound), or the mark comes after this
    /// update and makes it stale. Asked before the lock, a long bound decided just before a
    /// drop could be written just after the mark, and outlive the drop.
    pub(crate) fn apply_reply(&self, reply: &Reply, sent: Instant, long: impl FnOnce() -> Duration, short: Duration) {
        self.apply_with(reply, Source::Reply(sent), || if reply.announced { long() } else { short });
    }

    /// Applies `reply` from `source` (see `apply`), fresh for `ttl()` unless it came from the
    /// in-process breaker.
    fn apply_with(&self, reply: &Reply, source: Source, ttl: impl FnOnce() -> Duration) {
        let _guard = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Words { state: held_state, view: held, fresh_until: held_fresh_until, .. } = self.words.read();
        let known_at = self.known_at.load(Ordering::Relaxed);
        let (at, after_everything_held) = match source {
            Source::Reply(sent) => (self.since_base(sent), self.since_base(sent) >= known_at),
            Source::Event(received) => (self.since_base(received), false),
            Source::Local => (self.since_base(Instant::now()), true),
        };
        let not_older = (reply.incarnation, reply.epoch, reply.fseq) >= (held.incarnation, held.epoch, held.fseq);
        if !after_everything_held && !not_older {
            return;
        }
        // An event that says what the process already holds (its own transition, announced
        // after the reply brought it) teaches nothing: it must not cut a reply's longer bound.
        if matches!(source, Source::Event(_))
            && held_state == reply.state
            && (reply.incarnation, reply.epoch, reply.fseq) == (held.incarnation, held.epoch, held.fseq)
            && self.since_base(Instant::now()) < held_fresh_until
        {
            return;
        }
        let sent = at;
        let deadline = reply.remaining_ms.map_or(NO_DEADLINE, |ms| sent.saturating_add(ms.saturating_mul(1_000_000)));
        // A closed state keeps its recovery ramp's end where others keep their deadline: it
        // bounds no freshness (the draw reads it on every call).
        let (fresh_bound, deadline, ramp) = match (reply.state, reply.ramp) {
            (State::Closed, Some(r)) => (
                NO_DEADLINE,
                sent.saturating_add(r.left_ms.saturating_mul(1_000_000)),
                crate::ramp::pack(r.len_ms, r.permille),
            ),
            (State::Closed, None) => (NO_DEADLINE, NO_DEADLINE, 0),
            _ => (deadline, deadline, 0),
        };
        let fresh_until = match source {
            Source::Local => 0,
            _ => {
                self.known_at.store(known_at.max(at), Ordering::Relaxed);
                let until = sent.saturating_add(nanos(ttl())).min(fresh_bound);
                // Fresh for no time at all (cache_ttl zero, a half-open probe free to take):
                // never fresh, whatever the lag of the coarse clock that decides calls.
                if until <= sent { 0 } else { until }
            }
        };
        self.words.write(&Words { state: reply.state, view: View::of(reply), fresh_until, deadline, ramp });
        self.announced.store(reply.announced, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Rejected;
    use crate::protocol::Verdict;
    use std::sync::Arc;

    fn reply(state: State, incarnation: u64, epoch: u64, fseq: u64, remaining_ms: Option<u64>) -> Reply {
        Reply {
            verdict: Verdict::Ok,
            state,
            incarnation,
            epoch,
            failures: epoch * 2,
            fseq,
            remaining_ms,
            stored_config: String::new(),
            reason: String::new(),
            announced: true,
            ramp: None,
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_fresh_snapshot_decides_and_an_expired_one_misses() {
        let base = Instant::now();
        let cell = SnapshotCell::new(base);
        assert_eq!(cell.decide(base), Decision::Miss, "a cold snapshot asks Redis");
        cell.apply(&reply(State::Closed, 7, 1, 0, None), Source::Reply(base), TTL);
        assert!(matches!(cell.decide(base), Decision::Allow(View { incarnation: 7, epoch: 1, .. })));
        cell.apply(&reply(State::Open, 7, 2, 0, Some(500)), Source::Reply(base), TTL);
        match cell.decide(base + Duration::from_millis(100)) {
            Decision::Reject { state: State::Open, until: Some(at) } => {
                assert_eq!(at.left(base + Duration::from_millis(100)), Duration::from_millis(400))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(cell.decide(base + Duration::from_millis(500)), Decision::Miss, "fresh until the deadline");
        cell.mark_stale();
        assert_eq!(cell.decide(base), Decision::Miss);
    }

    #[test]
    fn a_reply_sent_after_what_is_held_replaces_it_whatever_its_epoch() {
        let base = Instant::now();
        let cell = SnapshotCell::new(base);
        cell.apply(&reply(State::Open, 7, 9, 0, Some(30_000)), Source::Reply(base), TTL);
        // Redis restored to an older epoch: a later request's reply is the truth.
        let later = base + Duration::from_millis(1);
        cell.apply(&reply(State::Closed, 7, 3, 0, None), Source::Reply(later), TTL);
        assert_eq!(cell.view().0, State::Closed);
        assert_eq!(cell.view().1.epoch, 3);
        assert!(matches!(cell.decide(later), Decision::Allow(_)), "and it is fresh again");
    }

    #[test]
    fn a_reply_that_raced_a_newer_event_does_not_overwrite_it() {
        let base = Instant::now();
        let cell = SnapshotCell::new(base);
        let sent = base;
        let event_at = base + Duration::from_millis(5);
        cell.apply(&reply(State::Open, 7, 1, 0, Some(30_000)), Source::Event(event_at), TTL);
        // An acquire sent before the event arrived, answered from the state before the trip.
        cell.apply(&reply(State::Closed, 0, 0, 0, None), Source::Reply(sent), TTL);
        assert_eq!(cell.view().0, State::Open);
        // An older event is ignored; a newer one applies.
        cell.apply(&reply(State::Closed, 7, 0, 0, None), Source::Event(event_at), TTL);
        assert_eq!(cell.view().0, State::Open);
        cell.apply(&reply(State::HalfOpen, 7, 2, 0, Some(0)), Source::Event(event_at), TTL);
        assert_eq!(cell.view().0, State::HalfOpen);
    }

    #[test]
    fn an_event_of_what_is_held_does_not_cut_a_replys_longer_bound() {
        let base = Instant::now();
        let cell = SnapshotCell::new(base);
        let now = Instant::now();
        cell.apply(&reply(State::ForcedOpen, 7, 2, 0, None), Source::Reply(now), TTL);
        // The process's own transition, announced after the reply brought it: nothing new.
        cell.apply(&reply(State::ForcedOpen, 7, 2, 0, None), Source::Event(now), Duration::from_millis(1));
        assert!(
            matches!(cell.decide(now + Duration::from_secs(1)), Decision::Reject { .. }),
            "still the reply's bound"
        );
        // A newer event applies, with the event's (short) bound.
        cell.apply(&reply(State::Closed, 7, 3, 0, None), Source::Event(now), Duration::from_millis(1));
        assert_eq!(cell.view().0, State::Closed);
        assert_eq!(
            cell.decide(now + Duration::from_secs(1)),
            Decision::Miss,
            "an event is trusted for the short bound"
        );
    }

    /// Regression (4920fec, issue 25): a rejection decided on the coarse clock told 1.0006s for
    /// a 1s wait; the coarse clock lags the precise one by 2.4-6.4ms under load. The time left
    /// is read when asked, after the decision: a reading taken at the decision (stale), or on
    /// the coarse clock, is longer than the time left and fails here.
    #[test]
    fn the_coarse_clock_makes_no_zero_lifetime_fresh_and_a_rejection_overstates_no_deadline() {
        let cell = SnapshotCell::new(Instant::now());
        cell.apply(&reply(State::Closed, 7, 1, 0, None), Source::Reply(Instant::now()), Duration::ZERO);
        assert_eq!(cell.decide_now(), Decision::Miss, "cache_ttl zero asks Redis on every call");
        cell.apply(&reply(State::HalfOpen, 7, 2, 0, Some(0)), Source::Reply(Instant::now()), TTL);
        assert_eq!(cell.decide_now(), Decision::Miss, "a half-open probe free to take is asked of Redis");
        for _ in 0..1000 {
            let sent = Instant::now();
            cell.apply(&reply(State::Open, 7, 3, 0, Some(100)), Source::Reply(sent), TTL);
            let rejected = match cell.decide_now() {
                Decision::Reject { state, until } => Rejected::until(state, until, false),
                other => panic!("{other:?}"),
            };
            let before = sent.elapsed();
            let left = rejected.retry_after().expect("a deadline");
            assert!(left <= Duration::from_millis(100) - before, "{left:?} told {before:?} after the reply");
        }
    }

    #[test]
    fn an_in_process_decision_shows_but_is_never_fresh() {
        let base = Instant::now();
        let cell = SnapshotCell::new(base);
        cell.apply(&reply(State::Open, 1, 1, 0, Some(30_000)), Source::Local, TTL);
        assert_eq!(cell.view().0, State::Open);
        assert_eq!(cell.decide(Instant::now()), Decision::Miss);
        assert!(cell.stale_closed(Instant::now(), TTL).is_none());
    }

    #[test]
    fn a_state_nobody_announced_is_trusted_for_the_short_bound_only() {
        let cell = SnapshotCell::new(Instant::now());
        let short = Duration::from_millis(20);
        let sent = Instant::now();
        let announced = reply(State::Closed, 7, 1, 0, None);
        cell.apply_reply(&announced, sent, || TTL, short);
        assert!(matches!(cell.decide(sent + Duration::from_secs(1)), Decision::Allow(_)), "announced: the long bound");
        assert!(cell.announced());
        let unannounced = Reply { announced: false, ..reply(State::ForcedClosed, 7, 2, 0, None) };
        cell.apply_reply(&unannounced, sent, || panic!("the long bound is not even asked"), short);
        assert!(matches!(cell.decide(sent + Duration::from_millis(10)), Decision::Allow(_)));
        assert_eq!(cell.decide(sent + Duration::from_millis(20)), Decision::Miss, "unannounced: the short bound");
        assert!(!cell.announced());
    }

    /// Suspicion (issue 22, item 11): a reply's long bound, decided just before the event
    /// subscription dropped, written just after the drop marked every snapshot stale, would
    /// outlive the drop. The bound is decided under the writer lock, which `mark_stale` takes.
    #[test]
    fn a_drop_while_a_long_bound_is_decided_leaves_the_snapshot_stale() {
        let cell = Arc::new(SnapshotCell::new(Instant::now()));
        let sent = Instant::now();
        let mut drop_task = None;
        let long = || {
            // The subscription drops now: its task marks every snapshot stale.
            let cell = cell.clone();
            drop_task = Some(std::thread::spawn(move || cell.mark_stale()));
            std::thread::sleep(Duration::from_millis(100));
            TTL
        };
        cell.apply_reply(&reply(State::Closed, 7, 1, 0, None), sent, long, Duration::from_millis(1));
        drop_task.expect("the long bound was asked").join().expect("mark_stale");
        assert_eq!(cell.decide(Instant::now()), Decision::Miss, "the drop's mark outlives the reply's long bound");
    }
}
