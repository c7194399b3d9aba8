//! The in-process store: one [`Machine`] per breaker name, on the client's clock. It is the
//! store of an in-memory client, and the breaker that decides a Redis client's calls in the
//! degraded mode `Local` (started from the snapshot the process last had).

use crate::clock::Clock;
use crate::machine::Machine;
use crate::protocol::{Op, Params, Reply, Transition};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One [`Machine`] per breaker name, on the given clock.
#[derive(Debug)]
pub(crate) struct InProcessStore {
    machines: Mutex<HashMap<String, Machine>>,
    pub(crate) clock: Arc<dyn Clock>,
    last_incarnation: AtomicU64,
    /// The client's identity for a quorum (its reports in the in-process machine).
    reporter: String,
}

impl InProcessStore {
    /// No machine yet; `reporter` is the client's identity for a quorum.
    pub(crate) fn new(clock: Arc<dyn Clock>, reporter: String) -> InProcessStore {
        InProcessStore { machines: Mutex::new(HashMap::new()), clock, last_incarnation: AtomicU64::new(0), reporter }
    }

    /// Runs `op` on the machine of `name` (made closed on first use), at the clock's time:
    /// the reply, as the scripts would give it, and the transitions it made.
    pub(crate) fn run(&self, name: &str, p: &Params, op: &Op, rand: f64) -> (Reply, Vec<Transition>) {
        let now = self.clock.now_ms();
        let candidate = now.saturating_mul(1000);
        let prev = self.last_incarnation.fetch_max(candidate, Ordering::AcqRel);
        let incarnation = if candidate > prev { candidate } else { prev + 1 };
        // A poisoned lock only means another caller panicked mid-call; the map is still whole.
        let mut machines = self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let machine = machines.entry(name.to_string()).or_default();
        machine.run(p, now, rand, incarnation, &self.reporter, op)
    }

    /// Replaces the machine of `name` (keeping its metrics).
    pub(crate) fn seed(&self, name: &str, mut machine: Machine) {
        let mut machines = self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = machines.get_mut(name) {
            machine.metrics = std::mem::take(&mut old.metrics);
        }
        machines.insert(name.to_string(), machine);
    }

    /// Forgets the machine of `name` (its breaker left the client's registry while Redis
    /// decides: the machine is re-seeded from Redis's snapshot when next needed).
    pub(crate) fn forget(&self, name: &str) {
        self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(name);
    }

    /// The machine of `name` in the shape `lua/status.lua` returns.
    pub(crate) fn status(&self, name: &str) -> crate::status::Raw {
        let now_ms = self.clock.now_ms();
        let machines = self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (state, probes, metrics) = machines.get(name).map(|m| m.flat()).unwrap_or_default();
        let reporters = machines.get(name).map(|m| m.flat_reporters()).unwrap_or_default();
        let processes = machines.get(name).map_or(0, Machine::process_count);
        crate::status::Raw { now_ms, state, probes, metrics, reporters, processes, pttl: [-1, -1, -1, -1, -1] }
    }

    /// The names of the machines, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let machines = self.machines.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<String> = machines.keys().cloned().collect();
        names.sort();
        names
    }
}
