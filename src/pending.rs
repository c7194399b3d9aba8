//! The counts a process gathers between script calls (healthy successes, slow, ignored and
//! rejected calls, outcomes decided without Redis), taken by the next call that reaches Redis.

use crate::protocol::Batch;
use crate::snapshot::View;
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
    incarnation: AtomicU64,
    epoch: AtomicU64,
    fseq: AtomicU64,
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
            incarnation: AtomicU64::new(0),
            epoch: AtomicU64::new(UNSTAMPED),
            fseq: AtomicU64::new(UNSTAMPED),
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

    /// Counts an outcome of a call decided without Redis (metrics only).
    pub(crate) fn degraded(&self, success: bool) {
        let counter = if success { &self.degraded_successes } else { &self.degraded_failures };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_empty(&self) -> bool {
        [&self.successes, &self.ignored, &self.rejected, &self.degraded_successes, &self.degraded_failures]
            .iter()
            .all(|c| c.load(Ordering::Relaxed) == 0)
    }

    /// Whether successes are waiting (a rolling window needs them soon).
    pub(crate) fn has_successes(&self) -> bool {
        self.successes.load(Ordering::Relaxed) > 0
    }

    /// Takes everything counted so far.
    pub(crate) fn take(&self) -> Batch {
        let successes = self.successes.swap(0, Ordering::AcqRel);
        let slow = self.slow.swap(0, Ordering::AcqRel).min(successes);
        let ignored = self.ignored.swap(0, Ordering::AcqRel);
        let rejected = self.rejected.swap(0, Ordering::AcqRel);
        let degraded_successes = self.degraded_successes.swap(0, Ordering::AcqRel);
        let degraded_failures = self.degraded_failures.swap(0, Ordering::AcqRel);
        let incarnation = self.incarnation.load(Ordering::Acquire);
        let epoch = self.epoch.swap(UNSTAMPED, Ordering::AcqRel);
        let fseq = self.fseq.swap(UNSTAMPED, Ordering::AcqRel);
        // A stamp of UNSTAMPED means a success raced the swap: it then matches nothing (metrics only).
        let (epoch, fseq) = if successes == 0 { (0, 0) } else { (epoch, fseq) };
        Batch { incarnation, epoch, fseq, successes, slow, ignored, rejected, degraded_successes, degraded_failures }
    }

    /// Puts back a batch that could not be sent.
    pub(crate) fn restore(&self, b: &Batch) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

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
        assert!(p.is_empty());
        assert_eq!(p.take().successes, 0);
    }

    #[test]
    fn a_restored_batch_keeps_its_counts_and_its_older_stamp() {
        let p = Pending::default();
        p.success(&view(3, 5), false);
        let b = p.take();
        p.success(&view(4, 9), false);
        p.restore(&b);
        let again = p.take();
        assert_eq!(again.successes, 2);
        assert_eq!((again.epoch, again.fseq), (3, 5));
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
