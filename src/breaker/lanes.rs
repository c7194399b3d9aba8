//! [`Lanes`]: the ids that batches of counts go under, so that Redis counts each batch once.
//!
//! A batch with counts goes with an id, `<sender>:<seq>`, from one of a few lanes per breaker.
//! A lane sends one batch at a time: its next batch is numbered only once Redis took the last
//! (or refused it), so the scripts remember one number per lane (the field `batch:<sender>` of
//! the metrics hash, see `lua/lib/batch.lua`). A batch whose fate is unknown (a timeout, a
//! dropped connection) stays in its lane and is sent again, as it was, until Redis answers:
//! Redis counts it once, whether the first attempt was applied or not.

use crate::protocol::Batch;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Batches with an id one breaker may have in flight or waiting to be sent again at once (a
/// flush and a few failure records). A record that finds none free carries no batch.
pub(crate) const LANES: usize = 4;

/// How long the scripts remember a lane's last batch at least (`BATCH_MEMORY` in
/// `lua/lib/batch.lua`), capped by `metrics_ttl`: a batch whose fate stays unknown longer is
/// dropped (sent again, it might count twice).
pub(crate) const BATCH_MEMORY_MS: u64 = 3_600_000;

/// What became of a batch a script call carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Redis answered: the batch counted, now or when first sent (Redis remembered its id).
    Applied,
    /// Redis refused the call (its arguments are checked before anything is written): dropped.
    Refused,
    /// Perhaps applied (a timeout, a dropped connection): sent again, as it is, for `resend_for`.
    Unknown { resend_for: Duration },
    /// Never sent (Redis known down).
    NotSent,
}

/// One lane: the batches of one sender id, one at a time.
#[derive(Debug)]
struct Lane {
    /// The sender part of its batches' ids.
    sender: u64,
    /// The number of the lane's next new batch.
    next: u64,
    /// One of its batches is in a script call.
    busy: bool,
    /// That batch was sent before (its fate was unknown).
    resending: bool,
    /// A batch whose fate is unknown, waiting to be sent again (boxed: a breaker rarely has
    /// one, and every breaker has its lanes) ...
    doubt: Option<Box<Batch>>,
    /// ... until then (past it, Redis may have forgotten its id).
    until: Instant,
}

/// The lanes of one breaker.
#[derive(Debug)]
pub(crate) struct Lanes(Mutex<[Lane; LANES]>);

impl Default for Lanes {
    fn default() -> Self {
        let now = Instant::now();
        Lanes(Mutex::new(std::array::from_fn(|_| Lane {
            // Random: a lane of another process, or of this breaker made again, is another sender.
            sender: rand::random::<u64>().max(1),
            next: 1,
            busy: false,
            resending: false,
            doubt: None,
            until: now,
        })))
    }
}

impl Lanes {
    /// The lanes (a poisoned lock only means a caller panicked; the lanes are still whole).
    fn lock(&self) -> MutexGuard<'_, [Lane; LANES]> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No batch in a script call, none in doubt.
    pub(crate) fn idle(&self) -> bool {
        self.lock().iter().all(|l| !l.busy && l.doubt.is_none())
    }

    /// Whether a batch whose fate is unknown waits to be sent again.
    pub(crate) fn in_doubt(&self) -> bool {
        self.lock().iter().any(|l| l.doubt.is_some())
    }

    /// The batch for a script call: one whose fate was unknown, as it was, else the `counts`
    /// with a new id (no id when there is nothing to count). With every lane in a call, the
    /// counts are not taken and the call carries none.
    pub(crate) fn take(&self, counts: impl FnOnce() -> Batch) -> Batch {
        let mut lanes = self.lock();
        let now = Instant::now();
        for lane in lanes.iter_mut().filter(|l| !l.busy) {
            let Some(b) = lane.doubt.take() else { continue };
            if now < lane.until {
                lane.busy = true;
                lane.resending = true;
                return *b;
            }
            tracing::warn!(
                successes = b.successes.saturating_add(b.degraded_successes),
                failures = b.degraded_failures,
                "a batch of counts whose fate stayed unknown longer than redis remembers its id was dropped"
            );
            lane.next = b.seq + 1;
        }
        Self::take_new(&mut lanes, false, counts)
    }

    /// The batch for the record of an outcome: the `counts` with a new id, even with no counts
    /// (the outcome's own counts go under that id). A batch in doubt is left to a flush (the
    /// outcome must not ride under an id Redis may already have applied).
    pub(crate) fn take_for_outcome(&self, counts: impl FnOnce() -> Batch) -> Batch {
        Self::take_new(&mut self.lock(), true, counts)
    }

    /// The `counts` under the next id of the first free lane (none in a call or in doubt), if
    /// there are counts or `with_no_counts`; with no free lane, no batch (counts not taken).
    fn take_new(lanes: &mut [Lane; LANES], with_no_counts: bool, counts: impl FnOnce() -> Batch) -> Batch {
        let Some(lane) = lanes.iter_mut().find(|l| !l.busy && l.doubt.is_none()) else {
            return Batch::default();
        };
        let mut b = counts();
        if b.has_counts() || with_no_counts {
            b.sender = lane.sender;
            b.seq = lane.next;
            lane.busy = true;
            lane.resending = false;
        }
        b
    }

    /// What became of batch `b` (one with an id) in its script call. Answers whether its counts
    /// go back to be sent later: it was never sent, and never before either.
    pub(crate) fn settle(&self, b: &Batch, fate: Fate) -> bool {
        let mut lanes = self.lock();
        let Some(lane) = lanes.iter_mut().find(|l| l.sender == b.sender && l.busy) else { return false };
        lane.busy = false;
        match fate {
            Fate::Applied => lane.next = b.seq + 1,
            // A first attempt Redis refused was not applied: its number is used again (the
            // scripts tell a batch from the last one applied by its number).
            Fate::Refused if lane.resending => lane.next = b.seq + 1,
            Fate::Refused => {}
            Fate::Unknown { resend_for } => {
                if !lane.resending {
                    lane.until = Instant::now() + resend_for;
                }
                lane.doubt = Some(Box::new(Batch { again: true, ..*b }));
            }
            Fate::NotSent if lane.resending => lane.doubt = Some(Box::new(*b)),
            Fate::NotSent => return true,
        }
        false
    }
}
