//! What a run produced, counted (printed with `MODEL_STATS=1`): verdicts, transitions, reasons
//! (digits as #), whether states were announced, and why the TTLs were set in full.

use crate::protocol::{Reply, Transition};
use std::collections::BTreeMap;
use std::sync::Mutex;

static COUNTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

pub(super) fn count(reply: &Reply, transitions: &[Transition], ttl_before: u64, ttl_after: u64, now: u64) {
    let mut counts = COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut add = |k: String| *counts.entry(k).or_insert(0) += 1;
    add(format!("verdict {:?}", reply.verdict));
    add(format!("announced {}", reply.announced));
    for t in transitions {
        add(format!("transition {} -> {}", t.from, t.to));
        let reason: String = t.reason.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
        add(format!("reason {reason}"));
    }
    if ttl_after != ttl_before {
        let why = if ttl_before == 0 {
            "made"
        } else if now < ttl_before {
            "clock went back"
        } else {
            "by age"
        };
        add(format!("ttl set in full: {why}"));
    }
}

pub(super) fn add(what: &str) {
    *COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(what.to_string()).or_insert(0) += 1;
}

/// How many times `what` was added.
pub(super) fn get(what: &str) -> u64 {
    COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(what).copied().unwrap_or(0)
}

pub(super) fn print() {
    let counts = COUNTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for (k, n) in counts.iter() {
        eprintln!("model stats: {n:>7}  {k}");
    }
}
