//! What the quorum's two points answer: [`Admit`], the own breaker's word on a call before it
//! runs; the [`Admission`] a call let through carries until it is observed, which gives its
//! own probe lease back by itself when dropped unobserved; and [`Moved`], the own breaker's
//! transitions, which the breaker announces.

use super::Core;
use crate::breaker::view::View;
use crate::protocol::{RecordOutcome, Transition};
use crate::state::State;
use std::sync::Arc;
use std::time::Duration;

/// The own breaker's answer to one call the fleet let through.
pub(crate) enum Admit {
    /// The fleet is open, half-open or forced: it decides alone (the own breaker folded into it
    /// when the snapshot learnt that state).
    Fleet,
    /// Let through: the admission goes with the call.
    Allowed(Admission),
    /// Turned away: this process is open for itself (or its own probes are out).
    Rejected { state: State, retry_after: Option<Duration> },
}

/// What one call holds of the own breaker: the view it was let through under, and its own
/// probe lease (empty when it is not an own probe). Observed (`OwnBreaker::observe`), its
/// outcome goes to the own breaker; dropped unobserved (a cancelled call, a dropped permit),
/// it is released there: its probe lease is freed and nothing is recorded.
pub(crate) struct Admission {
    /// The own breaker it came from; `None` once spent (observed, or forgotten).
    own: Option<Arc<Core>>,
    /// The own machine's view when it let the call through.
    view: View,
    /// The own probe lease's id, or empty.
    probe: String,
}

impl Admission {
    /// An admission of the own breaker `own` under `view`, holding the lease `probe` (or none).
    pub(super) fn new(own: Arc<Core>, view: View, probe: String) -> Admission {
        Admission { own: Some(own), view, probe }
    }

    /// True when this call is an own probe (the own breaker is half-open).
    pub(crate) fn is_probe(&self) -> bool {
        !self.probe.is_empty()
    }

    /// Whether a success would change nothing in the own breaker: it is closed with no failure
    /// counted and keeps no window (the healthy path then records nothing, and
    /// [`forget`](Self::forget)s the admission).
    pub(crate) fn success_changes_nothing(&self) -> bool {
        match &self.own {
            Some(own) if !self.is_probe() => own.success_changes_nothing(),
            Some(_) => false,
            None => true,
        }
    }

    /// Ends the admission of a success that changes nothing in the own breaker: nothing is
    /// recorded there, nothing released.
    pub(crate) fn forget(self) {
        let _ = self.spend();
    }

    /// Ends the admission and answers what its record needs: its view and probe lease.
    pub(super) fn spend(mut self) -> (View, String) {
        self.own = None;
        (self.view, std::mem::take(&mut self.probe))
    }
}

impl Drop for Admission {
    /// Releases an admission nobody observed: its own probe lease, if any, is freed; the report
    /// the release makes (if the own breaker moved meanwhile) waits for the next script call.
    fn drop(&mut self) {
        if let Some(own) = self.own.take() {
            let now = own.now_ms();
            own.record(self.view, std::mem::take(&mut self.probe), RecordOutcome::Release, false, false, now);
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("view", &self.view).field("probe", &self.probe).finish()
    }
}

/// Transitions the own breaker made, for the breaker to announce (events, log, meters); only
/// the last knows the time left to its deadline. Empty when it did not move.
#[derive(Debug, Default)]
pub(crate) struct Moved {
    /// In order.
    pub(crate) transitions: Vec<Transition>,
    /// The own machine's incarnation after them.
    pub(crate) incarnation: u64,
    /// The time left to the last one's deadline (its backoff), if any.
    pub(crate) remaining_ms: Option<u64>,
}
