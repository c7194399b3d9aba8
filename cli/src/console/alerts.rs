//! The console's alerts: rules over the breakers' statuses (open too long, an operator's lock
//! left on) and what their history tells (flapping, config drift).

use redis_breaker::duration;
use redis_breaker::status::{HistoryEntry, Status};
use std::time::Duration;

/// One alert: which breaker, which rule, and why in one line.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Alert {
    pub(super) breaker: String,
    pub(super) kind: &'static str,
    pub(super) message: String,
}

/// The alerts one breaker's history tells, at `now_ms`: flapping (more than `flaps` opens in
/// the last hour) and config drift (the processes that caused the last day's transitions ran
/// different configs).
pub(super) fn history_alerts(name: &str, entries: &[HistoryEntry], flaps: u64, now_ms: u64) -> Vec<Alert> {
    let (hour_ago, day_ago) = (now_ms.saturating_sub(3_600_000), now_ms.saturating_sub(86_400_000));
    let mut alerts = Vec::new();
    let opens = entries.iter().filter(|e| e.to == "open" && e.at_ms >= hour_ago).count() as u64;
    if opens > flaps {
        alerts.push(Alert {
            breaker: name.to_string(),
            kind: "flapping",
            message: format!("opened {opens} times in the last hour (alert above {flaps})"),
        });
    }
    let mut configs: Vec<&str> =
        entries.iter().filter(|e| e.at_ms >= day_ago).filter_map(|e| e.config.as_deref()).collect();
    configs.sort_unstable();
    configs.dedup();
    if configs.len() > 1 {
        alerts.push(Alert {
            breaker: name.to_string(),
            kind: "config_drift",
            message: format!(
                "the last day's transitions came from processes with {} configs ({}): a rolling deploy, or a process with another config",
                configs.len(),
                configs.join(", ")
            ),
        });
    }
    alerts
}

/// The alert rules over the breakers' statuses, each at the time it was read (Redis's clock,
/// that of its times).
pub(super) fn rule_alerts(all: &[Status], alert_open: Duration) -> Vec<Alert> {
    use redis_breaker::State;
    let mut out = Vec::new();
    for s in all {
        // Half-open counts: the probes of a breaker that keeps failing move it between open and
        // half-open without closing, and the alert must hold through them (as the contrib rule
        // RedisBreakerOpenTooLong does).
        let open = matches!(s.state, State::Open | State::ForcedOpen | State::HalfOpen);
        let since = if s.opened_at_ms > 0 { s.opened_at_ms } else { s.changed_at_ms };
        let for_ms = s.now_ms.saturating_sub(since);
        if open && since > 0 && for_ms > alert_open.as_millis() as u64 {
            out.push(Alert {
                breaker: s.name.clone(),
                kind: "open_too_long",
                message: format!(
                    "{} for {} (alert after {})",
                    s.state,
                    duration::format(Duration::from_secs(for_ms / 1000)),
                    duration::format(alert_open)
                ),
            });
        }
        if matches!(s.state, State::ForcedOpen | State::ForcedClosed) && s.open_until_ms == 0 {
            out.push(Alert {
                breaker: s.name.clone(),
                kind: "forced_without_end",
                message: format!(
                    "{} by an operator with no end: it stays so until reset",
                    s.state.as_str().replace('_', " ")
                ),
            });
        }
    }
    out
}

/// This machine's clock, ms since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
