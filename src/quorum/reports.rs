//! [`Reports`]: what this process tells the fleet about its own breaker (record.lua's `failing`
//! and `recovered`), and what of it has not reached Redis yet. The bookkeeping of the report's
//! delivery: made when the own breaker moves, carried by the next script call, deferred when
//! Redis did not take it, corrected when an older report landed after a newer one, said again
//! while the own trip is in force, withdrawn at shutdown. It knows no machine: the own breaker
//! tells it whether it is tripped (not closed) and whether its trip is in force.

use crate::protocol::Report;
use crate::state::State;

/// The report's bookkeeping of one own breaker (kept under its lock, started again by a fold).
#[derive(Debug, Default)]
pub(super) struct Reports {
    /// When this process last reported itself failing (ms, the client's clock): it did when its
    /// own breaker opened, and says so again while it stays open. It reports itself for as long
    /// as its own breaker is not closed; closing withdraws the report.
    reported_at: u64,
    /// A report that has not reached Redis yet (Redis was down, or did not take it): it rides
    /// on the next record or flush. A newer report replaces it.
    unsent: Report,
    /// The process withdrew its report (`Client::shutdown`): it says `failing` again only when
    /// its own breaker opens again.
    withdrawn: bool,
}

impl Reports {
    /// The report that holds now: `failing` while this process reports itself (its own breaker
    /// is `tripped`, not closed, and it did not withdraw the report), else `recovered`.
    fn truth(&self, tripped: bool) -> Report {
        if tripped && !self.withdrawn { Report::Failing } else { Report::Recovered }
    }

    /// The own breaker moved to `to` at `now_ms` (`None`: it did not move): the report the move
    /// makes. Opening (again) reports this process failing, also after a withdrawal.
    pub(super) fn made(&mut self, to: Option<State>, now_ms: u64) -> Report {
        match to {
            Some(State::Open) => {
                self.reported_at = now_ms;
                self.withdrawn = false;
                Report::Failing
            }
            Some(State::Closed) => Report::Recovered,
            _ => Report::None,
        }
    }

    /// The report the record of an outcome carries, given the one the outcome `made`: a newer
    /// report replaces one still waiting to reach Redis; with none, the waiting one rides on
    /// this record. A `release` sends no record: what it made keeps waiting.
    pub(super) fn for_record(&mut self, made: Report, release: bool) -> Report {
        if release {
            if made != Report::None {
                self.unsent = made;
            }
            Report::None
        } else if made == Report::None {
            std::mem::take(&mut self.unsent)
        } else {
            self.unsent = Report::None;
            made
        }
    }

    /// A report did not reach Redis (or may not have): what waits for the next record or flush
    /// is what holds now, `failing` while this process reports itself and `recovered` once it
    /// no longer does, whichever report failed to go (saying either twice changes nothing).
    pub(super) fn defer(&mut self, report: Report, tripped: bool) {
        if report != Report::None {
            self.unsent = self.truth(tripped);
        }
    }

    /// A report reached Redis. Reports go from different tasks (a call's record, a flush), so
    /// one made before the own breaker moved may land after the report of that move: when
    /// what Redis now holds is not what holds here, the truth goes with the next flush.
    pub(super) fn delivered(&mut self, report: Report, tripped: bool) {
        if report != Report::None && self.unsent == Report::None && report != self.truth(tripped) {
            self.unsent = self.truth(tripped);
        }
    }

    /// Whether a report waits to reach Redis at `now_ms`: one that did not reach it yet, or the
    /// repeat of this process's report while its own trip is `in_force` (backing off, or
    /// probing). Redis counts a report for a `window` (ms), and a process open for itself may
    /// wait longer than that for its next probe (its backoff grows to `max_recovery`): said
    /// again every quarter window, the report counts for as long as the process stays open and
    /// is alive, and stops counting within a window of the process going away, or of its
    /// backoff ending with no call to probe.
    pub(super) fn due(&mut self, now_ms: u64, in_force: bool, window: u64) -> bool {
        if self.unsent == Report::None
            && !self.withdrawn
            && in_force
            && now_ms.saturating_sub(self.reported_at) >= window / 4
        {
            self.unsent = Report::Failing;
            self.reported_at = now_ms;
        }
        self.waiting()
    }

    /// Whether a report waits to reach Redis (no repeat is made due: see `due`).
    pub(super) fn waiting(&self) -> bool {
        self.unsent != Report::None
    }

    /// The report waiting to reach Redis, if any (taken: the caller sends it).
    pub(super) fn take(&mut self) -> Report {
        std::mem::take(&mut self.unsent)
    }

    /// The process is leaving: it stops saying `failing` (no repeat, nothing waiting) until its
    /// own breaker opens again.
    pub(super) fn withdraw(&mut self) {
        self.withdrawn = true;
        self.unsent = Report::None;
    }
}
