//! The machine's state as Redis's keys hold it: the flat hashes `status` reads, the quorum's
//! keys, and (for the property test) what it compares with the keys or changes in them by hand.

use super::Machine;
#[cfg(test)]
use crate::protocol::{LONGEST_WINDOW, PROCESSES_SINCE, Params};
#[cfg(test)]
use crate::state::State;
#[cfg(test)]
use std::collections::BTreeMap;

impl Machine {
    /// Forgets the state, probes and window, as a DEL of those keys (or an expiry) would; the
    /// metrics and the reporters stay.
    #[cfg(test)]
    pub(crate) fn lose_keys(&mut self) {
        let metrics = std::mem::take(&mut self.metrics);
        let batches = std::mem::take(&mut self.batches);
        let reporters = std::mem::take(&mut self.reporters);
        let processes = std::mem::take(&mut self.processes);
        let (processes_since, reporters_window, processes_window) =
            (self.processes_since, self.reporters_window, self.processes_window);
        *self = Machine {
            metrics,
            batches,
            reporters,
            processes,
            processes_since,
            reporters_window,
            processes_window,
            ..Machine::default()
        };
    }

    /// The lanes' batch ids remembered (sender, value), as the metrics hash's `batch:` fields.
    #[cfg(test)]
    pub(crate) fn batch_fields(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.batches.iter().map(|(s, v)| (*s, *v))
    }

    /// How many processes the processes key holds.
    pub(crate) fn process_count(&self) -> u64 {
        self.processes.len() as u64
    }

    /// The reporters as the reporters key holds them (member, score, ...).
    pub(crate) fn flat_reporters(&self) -> Vec<String> {
        self.reporters.iter().flat_map(|(id, at)| [id.clone(), at.to_string()]).collect()
    }

    /// The reporters key: reporter id -> when it reported.
    #[cfg(test)]
    pub(crate) fn reporters(&self) -> &BTreeMap<String, u64> {
        &self.reporters
    }

    /// The processes key: reporter id -> when it said it was active.
    #[cfg(test)]
    pub(crate) fn processes(&self) -> &BTreeMap<String, u64> {
        &self.processes
    }

    /// The bookkeeping members of the reporters and processes keys as the scripts write them
    /// (`' window'`, `' since'`; their scores are minus these).
    #[cfg(test)]
    pub(crate) fn quorum_marks(&self) -> [BTreeMap<String, u64>; 2] {
        let mark = |name: &str, v: Option<u64>| v.map(|v| (name.to_string(), v));
        [
            mark(LONGEST_WINDOW, self.reporters_window).into_iter().collect(),
            [mark(LONGEST_WINDOW, self.processes_window), mark(PROCESSES_SINCE, self.processes_since)]
                .into_iter()
                .flatten()
                .collect(),
        ]
    }

    /// The stored state as Redis's flat hashes would read (for `Breaker::status` in memory).
    pub(crate) fn flat(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let mut state = vec!["state".to_string(), self.state.as_str().to_string()];
        for (f, v) in [
            ("incarnation", self.incarnation),
            ("epoch", self.epoch),
            ("failures", self.failures),
            ("fseq", self.fseq),
            ("successes", self.successes),
            ("trips", self.trips),
            ("opened_at", self.opened_at),
            ("open_until", self.open_until),
            ("changed_at", self.changed_at),
            ("failed_at", self.failed_at),
            ("ramp_until", self.ramp_until),
            ("ramp_ms", self.ramp_ms),
            ("ramp_permille", self.ramp_permille),
        ] {
            state.push(f.to_string());
            state.push(v.to_string());
        }
        state.extend(["reason".to_string(), self.reason.clone(), "config".to_string(), self.config.clone()]);
        if let Some(q) = &self.quorum {
            state.extend(["quorum".to_string(), q.clone()]);
        }
        if self.ttl_at > 0 {
            state.extend(["ttl_at".to_string(), self.ttl_at.to_string()]);
        }
        if self.unannounced {
            state.extend(["announced".to_string(), "0".to_string()]);
        }
        if !self.exists {
            state.clear();
        }
        let probes = self.probes.iter().flat_map(|(id, exp)| [id.clone(), exp.to_string()]).collect();
        let m = &self.metrics;
        let metrics = [
            ("calls", m.calls),
            ("successes", m.successes),
            ("failures", m.failures),
            ("slow", m.slow),
            ("rejected", m.rejected),
            ("timeouts", m.timeouts),
            ("opened", m.opened),
            ("throttled", m.throttled),
        ]
        .iter()
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect();
        (state, probes, metrics)
    }

    /// The next instant after `now` when something expires: a deadline or a probe lease.
    #[cfg(test)]
    pub(crate) fn next_deadline(&self, now: u64) -> Option<u64> {
        self.probes.values().copied().chain([self.open_until]).filter(|t| *t > now).min()
    }

    /// Probe leases held.
    #[cfg(test)]
    pub(crate) fn probe_count(&self) -> usize {
        self.probes.len()
    }

    /// The TTL (ms) a script leaves on the state key at `now` while the state is in force (not
    /// closed), as `state_key_ttl` in `lua/lib/commit.lua`; `None` for a forced state with no end.
    #[cfg(test)]
    pub(crate) fn state_key_ttl(&self, p: &Params, now: u64) -> Option<u64> {
        let forever = matches!(self.state, State::ForcedOpen | State::ForcedClosed) && self.open_until == 0;
        if forever {
            return None;
        }
        let horizon = self.probes.values().copied().chain([self.open_until]).max().unwrap_or(0);
        Some(p.state_ttl + horizon.saturating_sub(now))
    }

    /// Forgets one window count, as a script does with a count it cannot read (`b:k` field).
    #[cfg(test)]
    pub(crate) fn forget_bucket(&mut self, field: &str) {
        let parsed = field.split_once(':').and_then(|(b, k)| Some((b.parse::<u64>().ok()?, *k.as_bytes().first()?)));
        if let Some(key) = parsed {
            self.window.remove(&key);
        }
    }

    /// Whether the state hash exists.
    #[cfg(test)]
    pub(crate) fn exists(&self) -> bool {
        self.exists
    }

    /// When the TTLs were last set in full (0: never).
    #[cfg(test)]
    pub(crate) fn ttl_at(&self) -> u64 {
        self.ttl_at
    }

    /// Whether the last transition was not announced.
    #[cfg(test)]
    pub(crate) fn unannounced(&self) -> bool {
        self.unannounced
    }
}
