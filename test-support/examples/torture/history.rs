//! What a run records: each worker's decisions (one JSON object per line in its own file), the
//! nemesis's faults, the breakers' transitions from their history streams, and samples of
//! Redis's state. One machine, one clock: every time is ms since the Unix epoch.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ms since the Unix epoch (with µs precision), the clock Redis's `TIME` also reads.
pub(crate) fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// One call of one worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Decision {
    /// The worker's identity (`host-<n>`) and its process id.
    pub(crate) w: usize,
    pub(crate) pid: u32,
    pub(crate) b: String,
    /// When `acquire` was called, when it answered, when the downstream call ended, and when
    /// the outcome was recorded.
    pub(crate) t0: f64,
    pub(crate) t1: f64,
    pub(crate) t2: f64,
    pub(crate) t3: f64,
    /// `admit`, `probe` or `reject`.
    pub(crate) d: String,
    /// `ok`, `fail`, `timeout`, or empty for a rejection.
    pub(crate) o: String,
    /// Rejected by this process's own breaker (under a quorum).
    pub(crate) own: bool,
    /// A rejection's time left (ms), 0 when none was given.
    #[serde(default)]
    pub(crate) ra: f64,
    /// The snapshot before the call: state and epoch, whether it was fresh, and whether the
    /// client held its event subscription verified.
    #[serde(default)]
    pub(crate) st0: String,
    #[serde(default)]
    pub(crate) ep0: u64,
    #[serde(default)]
    pub(crate) fresh0: bool,
    #[serde(default)]
    pub(crate) sub: bool,
    /// The snapshot after the decision: state, incarnation, epoch.
    pub(crate) st: String,
    pub(crate) inc: u64,
    pub(crate) ep: u64,
    /// The client's verdict on Redis when it decided: true when Redis decided (not degraded).
    pub(crate) redis: bool,
}

impl Decision {
    pub(crate) fn admitted(&self) -> bool {
        self.d != "reject"
    }
    pub(crate) fn success(&self) -> bool {
        self.admitted() && self.o == "ok"
    }
    pub(crate) fn failure(&self) -> bool {
        self.admitted() && (self.o == "fail" || self.o == "timeout")
    }
}

/// A transition read from a breaker's history stream.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Transition {
    pub(crate) b: String,
    pub(crate) id: String,
    pub(crate) at: f64,
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) epoch: u64,
    pub(crate) reason: String,
    pub(crate) origin: String,
}

/// One reading of a breaker's state hash (what Redis held at `at`).
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) b: String,
    pub(crate) at: f64,
    /// `None` when the key did not exist (closed, epoch 0).
    pub(crate) inc: Option<u64>,
    pub(crate) epoch: u64,
}

/// A key found without a TTL.
#[derive(Debug, Clone)]
pub(crate) struct Immortal {
    pub(crate) at: f64,
    pub(crate) key: String,
    pub(crate) state: String,
}

/// Reads a worker's file; a last line cut by a SIGKILL is skipped.
pub(crate) fn read_decisions(path: &std::path::Path) -> Vec<Decision> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// What the collectors gathered while the run went on.
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) transitions: BTreeMap<(String, String), Transition>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) immortals: Vec<Immortal>,
    /// Sentinel: each change of the primary the sentinels name (when seen, from, to).
    pub(crate) switches: Vec<(f64, u16, u16)>,
}
