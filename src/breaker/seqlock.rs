//! [`SeqLock`]: the words of a breaker's snapshot, read on every call without a lock. Readers
//! never block, never allocate and retry only when a writer (a script reply, rare) raced them;
//! writers take turns under the snapshot's writer lock. What the words mean, and which update
//! replaces them, is `snapshot.rs`'s business.

use crate::breaker::view::View;
use crate::state::State;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering, fence};

/// One consistent reading of a snapshot's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Words {
    /// The breaker's state.
    pub(crate) state: State,
    /// What a call the snapshot lets through carries.
    pub(crate) view: View,
    /// Nanoseconds since the snapshot's time base until which the snapshot may decide calls.
    pub(crate) fresh_until: u64,
    /// Nanoseconds since the snapshot's time base of the state's deadline (`u64::MAX`: none);
    /// for a closed state, the end of its recovery ramp.
    pub(crate) deadline: u64,
    /// A closed state's recovery ramp, `ramp::pack`ed (0: none).
    pub(crate) ramp: u64,
}

/// The words, each an atomic, under a sequence number that is odd while a writer writes.
#[derive(Debug)]
pub(crate) struct SeqLock {
    seq: AtomicU64,
    state: AtomicU8,
    incarnation: AtomicU64,
    epoch: AtomicU64,
    failures: AtomicU64,
    fseq: AtomicU64,
    fresh_until: AtomicU64,
    deadline: AtomicU64,
    ramp: AtomicU64,
}

impl SeqLock {
    /// A lock holding `words`.
    pub(crate) fn new(words: &Words) -> SeqLock {
        SeqLock {
            seq: AtomicU64::new(0),
            state: AtomicU8::new(words.state.to_u8()),
            incarnation: AtomicU64::new(words.view.incarnation),
            epoch: AtomicU64::new(words.view.epoch),
            failures: AtomicU64::new(words.view.failures),
            fseq: AtomicU64::new(words.view.fseq),
            fresh_until: AtomicU64::new(words.fresh_until),
            deadline: AtomicU64::new(words.deadline),
            ramp: AtomicU64::new(words.ramp),
        }
    }

    /// Every word, as one writer left them.
    #[inline]
    pub(crate) fn read(&self) -> Words {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let state = State::from_u8(self.state.load(Ordering::Relaxed));
            let view = View {
                incarnation: self.incarnation.load(Ordering::Relaxed),
                epoch: self.epoch.load(Ordering::Relaxed),
                failures: self.failures.load(Ordering::Relaxed),
                fseq: self.fseq.load(Ordering::Relaxed),
            };
            let fresh_until = self.fresh_until.load(Ordering::Relaxed);
            let deadline = self.deadline.load(Ordering::Relaxed);
            let ramp = self.ramp.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Words { state, view, fresh_until, deadline, ramp };
            }
        }
    }

    /// The state alone (one atomic load).
    pub(crate) fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Writes every word. One writer at a time: the caller holds the snapshot's writer lock.
    pub(crate) fn write(&self, words: &Words) {
        self.seq.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.state.store(words.state.to_u8(), Ordering::Relaxed);
        self.incarnation.store(words.view.incarnation, Ordering::Relaxed);
        self.epoch.store(words.view.epoch, Ordering::Relaxed);
        self.failures.store(words.view.failures, Ordering::Relaxed);
        self.fseq.store(words.view.fseq, Ordering::Relaxed);
        self.fresh_until.store(words.fresh_until, Ordering::Relaxed);
        self.deadline.store(words.deadline, Ordering::Relaxed);
        self.ramp.store(words.ramp, Ordering::Relaxed);
        self.seq.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    /// The words of the writer's `epoch`-th write: fields in relations a torn read would break.
    fn words(epoch: u64) -> Words {
        Words {
            state: if epoch.is_multiple_of(2) { State::Closed } else { State::Open },
            view: View { incarnation: 7, epoch, failures: epoch * 2, fseq: epoch * 3 },
            fresh_until: epoch * 5,
            deadline: epoch * 7,
            ramp: epoch * 11,
        }
    }

    #[test]
    fn readers_never_see_torn_words_while_a_writer_writes() {
        let lock = Arc::new(SeqLock::new(&words(0)));
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (lock, done) = (lock.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !done.load(Ordering::Acquire) {
                        let read = lock.read();
                        assert_eq!(read, words(read.view.epoch), "torn: {read:?}");
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        for epoch in 0..200_000u64 {
            lock.write(&words(epoch));
        }
        done.store(true, Ordering::Release);
        let reads: u64 = readers.into_iter().map(|r| r.join().expect("a reader saw torn words")).sum();
        assert!(reads > 0);
        assert_eq!(lock.read(), words(199_999));
        assert_eq!(lock.state(), State::Open);
    }
}
