//! Every reason a script writes into the state hash, worded once: `REASON` in
//! `lua/lib/protocol.lua` is generated from these templates, and the Rust machine fills the same
//! ones (the property test compares what both wrote).

/// A reason's wording: a `string.format` template with `%d`, `%.2f` and `%s` only, filled by
/// the typed functions below (Rust) or by `fmt(REASON.<name>, ...)` (Lua).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reason(pub(crate) &'static str);

/// `%d` failures in a row (the consecutive rule).
const CONSECUTIVE: Reason = Reason("%d consecutive failures");
/// The failure-rate rule held: the rate, the threshold, the window's calls.
const FAILURE_RATE: Reason = Reason("failure rate %.2f >= %.2f over %d calls");
/// The slow-call rule held: the rate, the threshold, the window's calls.
const SLOW_RATE: Reason = Reason("slow call rate %.2f >= %.2f over %d calls");
/// An open state's recovery timeout ended: half-open.
pub(crate) const RECOVERY: Reason = Reason("recovery timeout elapsed");
/// A half-open probe failed: open again.
pub(crate) const PROBE_FAILED: Reason = Reason("probe failed");
/// `%d` probes succeeded: closed.
const PROBES_SUCCEEDED: Reason = Reason("%d probe successes");
/// A forced close ran its course: closed.
pub(crate) const FORCED_CLOSE_EXPIRED: Reason = Reason("forced close expired");
/// An operator's reset.
pub(crate) const RESET: Reason = Reason("reset by operator");
/// An operator forced the state (`%s`: "forced open" or "forced closed") with no end.
const FORCED_UNTIL_RESET: Reason = Reason("%s by operator until reset");
/// An operator forced the state for `%d` ms.
const FORCED_FOR: Reason = Reason("%s by operator for %dms");
/// A script found the state corrupt (`%s` says what) and reset it (Lua only: the machine's state
/// cannot be corrupt).
#[cfg(test)]
const CORRUPT: Reason = Reason("corrupt state reset to closed: %s");
/// The quorum was met: the failing processes, the quorum.
const QUORUM: Reason = Reason("failing processes %d >= quorum %d");

/// Every reason by its key in `REASON` of `lua/lib/protocol.lua`, in that order.
#[cfg(test)]
pub(crate) const REASONS: [(&str, Reason); 12] = [
    ("consecutive", CONSECUTIVE),
    ("failure_rate", FAILURE_RATE),
    ("slow_rate", SLOW_RATE),
    ("recovery", RECOVERY),
    ("probe_failed", PROBE_FAILED),
    ("probes_succeeded", PROBES_SUCCEEDED),
    ("forced_close_expired", FORCED_CLOSE_EXPIRED),
    ("reset", RESET),
    ("forced_until_reset", FORCED_UNTIL_RESET),
    ("forced_for", FORCED_FOR),
    ("corrupt", CORRUPT),
    ("quorum", QUORUM),
];

/// A value for a template's next placeholder.
enum Fill<'a> {
    /// For `%d`.
    Int(u64),
    /// For `%.2f`.
    Ratio(f64),
    /// For `%s`.
    Text(&'a str),
}

impl Reason {
    /// The text of a reason with no placeholder.
    pub(crate) fn text(self) -> String {
        self.0.to_string()
    }

    /// The text with each placeholder replaced by the next of `values`, as Lua's
    /// `string.format` writes it.
    fn fill(self, values: &[Fill<'_>]) -> String {
        use std::fmt::Write;
        let mut out = String::with_capacity(self.0.len() + 16);
        let (mut rest, mut values) = (self.0, values.iter());
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            let placeholder = if rest[at..].starts_with("%.2f") { 4 } else { 2 };
            // Writing into a String cannot fail.
            let _ = match values.next() {
                Some(Fill::Int(n)) => write!(out, "{n}"),
                Some(Fill::Ratio(r)) => write!(out, "{r:.2}"),
                Some(Fill::Text(s)) => out.write_str(s),
                None => Ok(()),
            };
            rest = &rest[at + placeholder..];
        }
        out.push_str(rest);
        out
    }
}

/// `failures` failures in a row opened the breaker.
pub(crate) fn consecutive(failures: u64) -> String {
    CONSECUTIVE.fill(&[Fill::Int(failures)])
}

/// The failure rate `rate` over `calls` calls reached `threshold`.
pub(crate) fn failure_rate(rate: f64, threshold: f64, calls: u64) -> String {
    FAILURE_RATE.fill(&[Fill::Ratio(rate), Fill::Ratio(threshold), Fill::Int(calls)])
}

/// The slow-call rate `rate` over `calls` calls reached `threshold`.
pub(crate) fn slow_rate(rate: f64, threshold: f64, calls: u64) -> String {
    SLOW_RATE.fill(&[Fill::Ratio(rate), Fill::Ratio(threshold), Fill::Int(calls)])
}

/// `successes` probes succeeded, which closed the breaker.
pub(crate) fn probes_succeeded(successes: u64) -> String {
    PROBES_SUCCEEDED.fill(&[Fill::Int(successes)])
}

/// `reporters` processes reported failing, which met the quorum `quorum`.
pub(crate) fn quorum(reporters: u64, quorum: u64) -> String {
    QUORUM.fill(&[Fill::Int(reporters), Fill::Int(quorum)])
}

/// An operator's forced state: `what` is "forced open" or "forced closed"; `duration_ms` 0
/// means until reset.
pub(crate) fn forced(what: &str, duration_ms: u64) -> String {
    if duration_ms == 0 {
        FORCED_UNTIL_RESET.fill(&[Fill::Text(what)])
    } else {
        FORCED_FOR.fill(&[Fill::Text(what), Fill::Int(duration_ms)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_as_lua_writes_it() {
        assert_eq!(consecutive(5), "5 consecutive failures");
        assert_eq!(failure_rate(0.625, 0.5, 40), "failure rate 0.62 >= 0.50 over 40 calls");
        assert_eq!(slow_rate(1.0, 0.3, 7), "slow call rate 1.00 >= 0.30 over 7 calls");
        assert_eq!(probes_succeeded(2), "2 probe successes");
        assert_eq!(quorum(3, 2), "failing processes 3 >= quorum 2");
        assert_eq!(forced("forced open", 0), "forced open by operator until reset");
        assert_eq!(forced("forced closed", 1500), "forced closed by operator for 1500ms");
        assert_eq!(RECOVERY.text(), "recovery timeout elapsed");
        for (name, Reason(template)) in REASONS {
            let placeholders = template.matches('%').count();
            let known = ["%d", "%.2f", "%s"].iter().map(|p| template.matches(p).count()).sum::<usize>();
            assert_eq!(placeholders, known, "{name}: only %d, %.2f and %s");
        }
    }
}
