//! The counts a process gathers between script calls (healthy successes, slow, ignored and
//! rejected calls, outcomes decided without Redis), taken by the next call that reaches Redis
//! under an id of one of the breaker's lanes (`lanes.rs`), which makes Redis count them once.

use crate::breaker::lanes::Lanes;
pub(crate) use crate::breaker::lanes::{BATCH_MEMORY_MS, Fate, LANES};
use crate::breaker::view::View;
use crate::protocol::Batch;
use std::sync::atomic::{AtomicU64, Ordering};

/// The stamp of a batch with no success yet; the largest integer a script argument may be.
const UNSTAMPED: u64 = (1 << 53) - 1;

/// Counts gathered since the last flush. Successes carry the oldest (epoch, fseq) they were
/// counted under, so a batch can never erase a failure recorded after its first success.
#[derive(Debug)]
pub(crate) struct Pending {
    successes: AtomicU64,
    slow: AtomicU64,
    ignored: AtomicU64,
    rejected: AtomicU64,
    degraded_successes: AtomicU64,
    degraded_failures: AtomicU64,
    throttled: AtomicU64,
    incarnation: AtomicU64,
    epoch: AtomicU64,
    fseq: AtomicU64,
    lanes: Lanes,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            successes: AtomicU64::new(0),
            slow: AtomicU64::new(0),
            ignored: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            degraded_successes: AtomicU64::new(0),
            degraded_failures: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            incarnation: AtomicU64::new(0),
            epoch: AtomicU64::new(UNSTAMPED),
            fseq: AtomicU64::new(UNSTAMPED),
            lanes: Lanes::default(),
        }
    }
}

impl Pending {
    pub(crate) fn success(&self, view: &View, slow: bool) {
        // Stamp before counting: a flush that takes this success also takes its stamp.
        if self.fseq.load(Ordering::Relaxed) > view.fseq {
            self.fseq.fetch_min(view.fseq, Ordering::AcqRel);
        }
        if self.epoch.load(Ordering::Relaxed) > view.epoch {
            self.epoch.fetch_min(view.epoch, Ordering::AcqRel);
            self.incarnation.store(view.incarnation, Ordering::Release);
        }
        if slow {
            self.slow.fetch_add(1, Ordering::AcqRel);
        }
        self.successes.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn ignored(&self) {
        self.ignored.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call a recovery ramp held back (metrics only).
    pub(crate) fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an outcome of a call decided without Redis (metrics only).
    pub(crate) fn degraded(&self, success: bool) {
        let counter = if success { &self.degraded_successes } else { &self.degraded_failures };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Nothing to send and nothing in a script call: no counts, no batch in flight or in doubt.
    pub(crate) fn is_empty(&self) -> bool {
        [
            &self.successes,
            &self.ignored,
            &self.rejected,
            &self.degraded_successes,
            &self.degraded_failures,
            &self.throttled,
        ]
        .iter()
        .all(|c| c.load(Ordering::Relaxed) == 0)
            && self.lanes.idle()
    }

    /// Whether a batch whose fate is unknown waits to be sent again.
    pub(crate) fn in_doubt(&self) -> bool {
        self.lanes.in_doubt()
    }

    /// Whether successes are waiting (a rolling window needs them soon).
    pub(crate) fn has_successes(&self) -> bool {
        self.successes.load(Ordering::Relaxed) > 0
    }

    /// The batch for a script call: one whose fate was unknown, as it was, else everything
    /// counted so far with a new id (no id when there is nothing to count). With every lane in
    /// a call, the counts stay here and the call carries none.
    pub(crate) fn take(&self) -> Batch {
        self.lanes.take(|| self.take_counts())
    }

    /// The batch for the record of an outcome: everything counted so far with a new id, even
    /// with no counts (the outcome's own counts go under that id). A batch in doubt is left to
    /// a flush (the outcome must not ride under an id Redis may already have applied).
    pub(crate) fn take_for_outcome(&self) -> Batch {
        self.lanes.take_for_outcome(|| self.take_counts())
    }

    /// What became of batch `b` (taken by `take` or `take_for_outcome`) in its script call.
    pub(crate) fn settle(&self, b: &Batch, fate: Fate) {
        let never_sent = if b.seq == 0 { fate == Fate::NotSent } else { self.lanes.settle(b, fate) };
        if never_sent {
            self.restore(b);
        }
    }

    /// Takes everything counted so far (no id).
    fn take_counts(&self) -> Batch {
        let successes = self.successes.swap(0, Ordering::AcqRel);
        let slow = self.slow.swap(0, Ordering::AcqRel).min(successes);
        let ignored = self.ignored.swap(0, Ordering::AcqRel);
        let rejected = self.rejected.swap(0, Ordering::AcqRel);
        let degraded_successes = self.degraded_successes.swap(0, Ordering::AcqRel);
        let degraded_failures = self.degraded_failures.swap(0, Ordering::AcqRel);
        let throttled = self.throttled.swap(0, Ordering::AcqRel);
        let incarnation = self.incarnation.load(Ordering::Acquire);
        let epoch = self.epoch.swap(UNSTAMPED, Ordering::AcqRel);
        let fseq = self.fseq.swap(UNSTAMPED, Ordering::AcqRel);
        // A stamp of UNSTAMPED means a success raced the swap: it then matches nothing (metrics only).
        let (epoch, fseq) = if successes == 0 { (0, 0) } else { (epoch, fseq) };
        Batch {
            incarnation,
            epoch,
            fseq,
            successes,
            slow,
            ignored,
            rejected,
            degraded_successes,
            degraded_failures,
            throttled,
            ..Batch::default()
        }
    }

    /// Puts back the counts of a batch that was never sent.
    fn restore(&self, b: &Batch) {
        if b.successes > 0 {
            self.fseq.fetch_min(b.fseq, Ordering::AcqRel);
            if self.epoch.fetch_min(b.epoch, Ordering::AcqRel) > b.epoch {
                self.incarnation.store(b.incarnation, Ordering::Release);
            }
        }
        self.successes.fetch_add(b.successes, Ordering::AcqRel);
        self.slow.fetch_add(b.slow, Ordering::AcqRel);
        self.ignored.fetch_add(b.ignored, Ordering::Relaxed);
        self.rejected.fetch_add(b.rejected, Ordering::Relaxed);
        self.degraded_successes.fetch_add(b.degraded_successes, Ordering::Relaxed);
        self.degraded_failures.fetch_add(b.degraded_failures, Ordering::Relaxed);
        self.throttled.fetch_add(b.throttled, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn view(epoch: u64, fseq: u64) -> View {
        View { incarnation: 7, epoch, failures: 0, fseq }
    }

    #[test]
    fn a_batch_carries_the_oldest_stamp_its_successes_saw() {
        let p = Pending::default();
        assert!(p.is_empty());
        p.success(&view(3, 10), false);
        p.success(&view(3, 8), true);
        p.success(&view(4, 12), false);
        p.ignored();
        p.rejected();
        p.degraded(true);
        p.degraded(false);
        let b = p.take();
        assert_eq!((b.successes, b.slow, b.ignored, b.rejected), (3, 1, 1, 1));
        assert_eq!((b.degraded_successes, b.degraded_failures), (1, 1));
        assert_eq!((b.incarnation, b.epoch, b.fseq), (7, 3, 8), "the oldest epoch and fseq");
        assert!(!p.is_empty(), "a batch in a script call is not settled yet");
        p.settle(&b, Fate::Applied);
        assert!(p.is_empty());
        let none = p.take();
        assert!(none.seq == 0 && !none.has_counts(), "nothing to count: no id, no lane");
    }

    const AN_HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn a_batch_whose_fate_is_unknown_is_sent_again_as_it_was_then_the_lane_moves_on() {
        let p = Pending::default();
        p.success(&view(1, 0), false);
        let first = p.take();
        assert_eq!(first.seq, 1);
        p.settle(&first, Fate::Unknown { resend_for: AN_HOUR });
        assert!(p.in_doubt() && !p.is_empty());
        p.success(&view(1, 0), false);
        p.success(&view(1, 0), false);
        let again = p.take();
        assert_eq!(again, Batch { again: true, ..first }, "the batch in doubt goes first, as it was (its id too)");
        // Meanwhile the new counts take another lane, under an id of their own.
        let other = p.take();
        assert_eq!(other.successes, 2);
        assert_ne!(other.sender, first.sender);
        p.settle(&other, Fate::Applied);
        // Lost again, then answered: the lane's next batch has the next number.
        p.settle(&again, Fate::Unknown { resend_for: AN_HOUR });
        let third = p.take();
        assert_eq!(third, again);
        p.settle(&third, Fate::Applied);
        assert!(p.is_empty());
        p.ignored();
        let next = p.take();
        assert_eq!((next.sender, next.seq, next.ignored), (first.sender, 2, 1), "the first free lane, numbered on");
    }

    #[test]
    fn a_refused_first_attempt_keeps_its_number_a_refused_resend_does_not() {
        let p = Pending::default();
        p.rejected();
        let b = p.take();
        p.settle(&b, Fate::Refused);
        p.rejected();
        let retry = p.take();
        assert_eq!((retry.sender, retry.seq, retry.rejected), (b.sender, b.seq, 1), "Redis never applied it");
        p.settle(&retry, Fate::Unknown { resend_for: AN_HOUR });
        let resent = p.take();
        p.settle(&resent, Fate::Refused);
        p.rejected();
        let next = p.take();
        assert_eq!((next.sender, next.seq), (b.sender, b.seq + 1), "a resend may have been applied before");
    }

    #[test]
    fn an_outcome_takes_a_new_id_never_the_batch_in_doubt() {
        let p = Pending::default();
        p.rejected();
        let doubt = p.take();
        p.settle(&doubt, Fate::Unknown { resend_for: AN_HOUR });
        let outcome = p.take_for_outcome();
        assert_ne!(outcome.sender, doubt.sender);
        assert!(outcome.seq > 0 && !outcome.has_counts(), "an id even with no counts: the outcome counts under it");
        // Every lane busy or in doubt: a record carries nothing, the counts wait.
        let (a, b) = (p.take_for_outcome(), p.take_for_outcome());
        assert!(a.seq > 0 && b.seq > 0);
        p.rejected();
        assert_eq!(p.take_for_outcome(), Batch::default());
        let resend = p.take();
        assert_eq!(resend, Batch { again: true, ..doubt }, "the lane in doubt is free for its own batch");
        assert_eq!(p.take(), Batch::default(), "every lane in a call");
        for b in [outcome, a, b, resend] {
            p.settle(&b, Fate::Applied);
        }
        assert_eq!(p.take().rejected, 1, "the counts that waited");
    }

    #[test]
    fn a_batch_never_sent_goes_back_to_the_counts_unless_it_was_sent_before() {
        let p = Pending::default();
        p.rejected();
        let b = p.take();
        p.settle(&b, Fate::NotSent);
        assert!(!p.in_doubt());
        let again = p.take();
        assert_eq!((again.seq, again.rejected), (b.seq, 1));
        p.settle(&again, Fate::Unknown { resend_for: AN_HOUR });
        let resent = p.take();
        p.settle(&resent, Fate::NotSent);
        assert!(p.in_doubt(), "sent before: it may have been applied, so it stays as it is");
    }

    #[test]
    fn a_batch_in_doubt_past_what_redis_remembers_is_dropped() {
        let p = Pending::default();
        p.rejected();
        let b = p.take();
        p.settle(&b, Fate::Unknown { resend_for: Duration::ZERO });
        p.ignored();
        let next = p.take();
        assert_eq!((next.rejected, next.ignored), (0, 1), "the old batch is gone, not sent twice");
        assert!(!p.in_doubt());
        assert_eq!((next.sender, next.seq), (b.sender, b.seq + 1), "its lane numbers on");
    }

    #[test]
    fn a_restored_batch_keeps_its_counts_and_its_older_stamp() {
        let p = Pending::default();
        p.success(&view(3, 5), false);
        let b = p.take();
        p.success(&view(4, 9), false);
        p.settle(&b, Fate::NotSent);
        let again = p.take();
        assert_eq!(again.successes, 2);
        assert_eq!((again.epoch, again.fseq), (3, 5));
        assert_eq!((again.sender, again.seq), (b.sender, b.seq), "a batch never sent keeps its lane's number");
    }

    #[test]
    fn concurrent_counting_and_taking_lose_and_double_nothing() {
        let p = Arc::new(Pending::default());
        let per_thread = 50_000u64;
        let counters: Vec<_> = (0..3)
            .map(|t| {
                let p = p.clone();
                std::thread::spawn(move || {
                    for i in 0..per_thread {
                        p.success(&view(1, t * per_thread + i), i % 3 == 0);
                        p.rejected();
                    }
                })
            })
            .collect();
        let taker = {
            let p = p.clone();
            std::thread::spawn(move || {
                let (mut successes, mut slow, mut rejected) = (0, 0, 0);
                for _ in 0..2_000 {
                    let b = p.take();
                    p.settle(&b, Fate::Applied);
                    assert!(b.slow <= b.successes);
                    successes += b.successes;
                    slow += b.slow;
                    rejected += b.rejected;
                    std::thread::yield_now();
                }
                (successes, slow, rejected)
            })
        };
        for c in counters {
            c.join().expect("counter");
        }
        let (mut successes, mut slow, mut rejected) = taker.join().expect("taker");
        let rest = p.take();
        successes += rest.successes;
        slow += rest.slow;
        rejected += rest.rejected;
        assert_eq!(successes, 3 * per_thread, "every success taken exactly once");
        assert_eq!(rejected, 3 * per_thread);
        // A batch caps slow at its successes (a slow count can race ahead of its success).
        assert!(slow <= 3 * per_thread.div_ceil(3), "{slow}");
    }
}
