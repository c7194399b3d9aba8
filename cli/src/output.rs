//! What the tool prints on stdout: readable tables, or JSON with `--json`.

use redis_breaker::Event;
use redis_breaker::duration;
use redis_breaker::status::Status;
use serde_json::json;
use std::io::Write;
use std::time::Duration;

pub(crate) struct Out {
    pub(crate) json: bool,
}

/// One line on stdout, flushed at once (a pipe reads it without waiting for more).
fn line(text: impl std::fmt::Display) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
}

fn ms(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".to_string(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
}

fn rate(s: &Status) -> Option<f64> {
    s.metrics.failure_rate().map(|r| (r * 1000.0).round() / 1000.0)
}

/// One breaker of `list --json` (and of the console's `GET /api/breakers`, which adds fields).
pub(crate) fn breaker_value(s: &Status) -> serde_json::Value {
    json!({
        "name": s.name, "state": s.state, "failures": s.failures,
        "retry_after_ms": s.retry_after_ms, "calls": s.metrics.calls, "failure_rate": rate(s),
        "reason": s.reason, "epoch": s.epoch, "trips": s.trips, "probes": s.probes.len(),
        "rejected": s.metrics.rejected, "config": s.config, "recovery_due": s.recovery_due,
        "quorum": s.quorum, "quorum_fraction": s.quorum_fraction, "reporters": s.reporters.len(),
        "ramp": s.ramp, "throttled": s.metrics.throttled,
    })
}

/// `list --json`: one object per breaker, and the names under the prefix that cannot be
/// breakers (skipped), with their count.
pub(crate) fn list_value(statuses: &[Status], skipped: &[String]) -> serde_json::Value {
    let breakers: Vec<_> = statuses.iter().map(breaker_value).collect();
    json!({ "breakers": breakers, "skipped": skipped.len(), "skipped_names": skipped })
}

impl Out {
    /// `history`: one line per transition, newest first, or one JSON object.
    pub(crate) fn history(&self, entries: &[redis_breaker::status::HistoryEntry]) {
        if self.json {
            line(json!({ "history": entries }));
            return;
        }
        if entries.is_empty() {
            line("no transitions recorded");
            return;
        }
        line(format_args!(
            "{:<24}  {:<13}  {:<13}  {:>5}  {:>5}  REASON",
            "TIME (UTC)", "FROM", "TO", "EPOCH", "TRIPS"
        ));
        for e in entries {
            let mut note = e.note.as_deref().map(|n| format!(" — note: {n}")).unwrap_or_default();
            if let Some(failure) = &e.failure {
                note.push_str(&format!(" — failure: {failure}"));
            }
            if let Some(r) = &e.ramp {
                note.push_str(&format!(" — {}", ramp_began(r)));
            }
            line(format_args!(
                "{:<24}  {:<13}  {:<13}  {:>5}  {:>5}  {}{note}",
                utc(e.at_ms),
                e.from,
                e.to,
                e.epoch,
                e.trips,
                e.reason
            ));
        }
    }

    pub(crate) fn list(&self, statuses: &[Status], skipped: &[String]) {
        if self.json {
            line(list_value(statuses, skipped));
            return;
        }
        let width = statuses.iter().map(|s| s.name.len()).max().unwrap_or(4).max(4);
        line(format_args!(
            "{:<width$}  {:<24}  {:>8}  {:>11}  {:>8}  {:>12}",
            "NAME", "STATE", "FAILURES", "RETRY-AFTER", "CALLS", "FAILURE-RATE"
        ));
        for s in statuses {
            line(format_args!(
                "{:<width$}  {:<24}  {:>8}  {:>11}  {:>8}  {:>12}",
                s.name,
                state_word(s),
                s.failures,
                ms(s.retry_after_ms),
                s.metrics.calls,
                rate(s).map_or_else(|| "-".to_string(), |r| format!("{r:.3}")),
            ));
        }
    }

    pub(crate) fn status(&self, s: &Status) {
        if self.json {
            line(serde_json::to_string(s).unwrap_or_default());
            return;
        }
        let m = &s.metrics;
        line(format_args!("name:        {}", s.name));
        line(format_args!("state:       {}", s.state));
        if let Some(r) = &s.ramp {
            line(format_args!(
                "ramping:     {} ({} left of {})",
                percent(r.admitted()),
                left(r.left),
                duration::format(r.length)
            ));
        }
        line(format_args!("reason:      {}", if s.reason.is_empty() { "-" } else { &s.reason }));
        if s.recovery_due {
            line(format_args!("retry after: due (the next call moves it to half-open)"));
        } else {
            line(format_args!("retry after: {}", ms(s.retry_after_ms)));
        }
        line(format_args!("epoch:       {} (incarnation {})", s.epoch, s.incarnation));
        line(format_args!("failures:    {} (fseq {})", s.failures, s.fseq));
        line(format_args!("trips:       {}", s.trips));
        if !s.announced {
            line(
                "announced:   no (its event was refused: processes that held an older snapshot learn this state only when theirs expires)",
            );
        }
        let probes: Vec<String> = s.probes.iter().map(|p| format!("{} ({}ms left)", p.id, p.expires_in_ms)).collect();
        line(format_args!("probes:      {}", if probes.is_empty() { "none".to_string() } else { probes.join(", ") }));
        if s.quorum > 1 || s.quorum_fraction.is_some() || !s.reporters.is_empty() {
            let reporters: Vec<String> =
                s.reporters.iter().map(|r| format!("{} ({:.1}s ago)", r.id, r.age_ms as f64 / 1000.0)).collect();
            let rule = match s.quorum_fraction {
                Some(f) => format!("{}, and {f} of the {} processes active", s.quorum, s.processes),
                None => s.quorum.to_string(),
            };
            line(format_args!(
                "quorum:      {rule} ({} reported their own breaker open{})",
                s.reporters.len(),
                if reporters.is_empty() { String::new() } else { format!(": {}", reporters.join(", ")) }
            ));
        }
        line(format_args!(
            "metrics:     calls {} successes {} failures {} slow {} rejected {} throttled {} timeouts {} opened {}",
            m.calls, m.successes, m.failures, m.slow, m.rejected, m.throttled, m.timeouts, m.opened
        ));
        let ttl = |t: Option<i64>| match t {
            None => "absent".to_string(),
            Some(-1) => "no expiry".to_string(),
            Some(ms) => format!("{:.0}s", ms as f64 / 1000.0),
        };
        line(format_args!(
            "ttl:         state {}, probes {}, window {}, metrics {}, reporters {}",
            ttl(s.ttl_ms.state),
            ttl(s.ttl_ms.probes),
            ttl(s.ttl_ms.window),
            ttl(s.ttl_ms.metrics),
            ttl(s.ttl_ms.reporters)
        ));
    }

    pub(crate) fn control(&self, s: &Status, what: &str, duration: Option<Duration>) {
        if self.json {
            line(serde_json::to_string(s).unwrap_or_default());
            return;
        }
        let how_long = match (what, duration) {
            ("reset", _) => String::new(),
            (_, Some(d)) => format!(" for {}", duration::format(d)),
            (_, None) => format!(" until `redis-breaker reset {}`", s.name),
        };
        line(format_args!("{}: {what}{how_long} (state {}, epoch {})", s.name, s.state, s.epoch));
    }

    pub(crate) fn event(&self, e: &Event) {
        let retry_after_ms = e.retry_after.map(|d| d.as_millis() as u64);
        let from = e.from.map_or("corrupt", |s| s.as_str());
        if self.json {
            line(json!({
                "name": e.name, "from": from, "to": e.to, "incarnation": e.incarnation, "epoch": e.epoch,
                "retry_after_ms": retry_after_ms, "reason": e.reason,
                "origin": e.origin, "ramp": e.ramp,
            }));
            return;
        }
        let retry = retry_after_ms.map(|ms| format!(" (retry after {ms}ms)")).unwrap_or_default();
        let ramp = e.ramp.as_ref().map(|r| format!(" ({})", ramp_began(r))).unwrap_or_default();
        line(format_args!("{} {} -> {}{retry}{ramp}: {}", e.name, from, e.to, e.reason));
    }
}

/// A fraction as a percentage, rounded down to a tenth (never `100%` while a ramp still runs):
/// `35%`, `0.5%`.
fn percent(fraction: f64) -> String {
    let tenths = (fraction * 1000.0).floor().clamp(0.0, 1000.0) as u64;
    if tenths.is_multiple_of(10) { format!("{}%", tenths / 10) } else { format!("{}.{}%", tenths / 10, tenths % 10) }
}

/// A time left, to the tenth of a second: `4.2s`.
fn left(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// What a close that began a recovery ramp says: `ramping from 10% over 30s`.
fn ramp_began(r: &redis_breaker::Ramp) -> String {
    format!("ramping from {} over {}", percent(f64::from(r.start_permille) / 1000.0), duration::format(r.length))
}

/// The state as `list` shows it: `closed (ramping: 40%)` while a recovery ramp runs.
fn state_word(s: &Status) -> String {
    match &s.ramp {
        Some(r) => format!("{} (ramping: {})", s.state, percent(r.admitted())),
        None => s.state.as_str().to_string(),
    }
}

/// A time in ms since the Unix epoch as `YYYY-MM-DD HH:MM:SS.mmm` (UTC).
fn utc(ms: u64) -> String {
    let (secs, millis) = (ms / 1000, ms % 1000);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{millis:03}", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00.000");
        assert_eq!(super::utc(1_795_662_455_831), "2026-11-26 03:07:35.831");
    }
}
