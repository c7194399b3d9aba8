//! The shared read: one background task reads every breaker (under `--breakers`) once a
//! second (`--read-every`), and every tab, scrape, alert and notification is served from its last result, so
//! Redis sees the same reads whether one person or fifty watch. Around the statuses it keeps
//! what needs more than a status read: the note of a forced state and the alerts the history
//! tells (both re-read only when the breaker's epoch moves, or after `HISTORY_REFRESH`), and
//! the samples of the counters behind the charts and the 5-minute failure rate.

use super::alerts::{Alert, history_alerts, now_ms, rule_alerts};
use super::{App, READS_IN_FLIGHT, Sample};
use futures_util::StreamExt;
use redis_breaker::State;
use redis_breaker::StoreError;
use redis_breaker::status::Status;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a breaker's history is read again for the alerts when its epoch did not move
/// (flapping counts the opens of the last hour, a window that slides).
const HISTORY_REFRESH: Duration = Duration::from_secs(60);
/// The window of `failure_rate_5m`.
const RATE_WINDOW_MS: u64 = 300_000;

/// One breaker as the last read saw it.
pub(super) struct Row {
    pub(super) status: Status,
    /// The operator's note of a forced state.
    pub(super) note: Option<String>,
    pub(super) rate_5m: Rate,
}

/// The failure rate over the last 5 minutes (or over `over_ms`, when the console has sampled
/// for less long), from the console's samples.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(super) struct Rate {
    pub(super) rate: Option<f64>,
    pub(super) calls: u64,
    pub(super) failures: u64,
    pub(super) over_ms: u64,
}

/// What the last successful read found.
#[derive(Default)]
pub(super) struct Data {
    /// Sorted: open first, then half-open, forced closed, closed; then by name.
    pub(super) rows: Vec<Row>,
    pub(super) skipped: Vec<String>,
    pub(super) alerts: Vec<Alert>,
    /// When it was read (this machine's clock, ms since the Unix epoch; 0: never).
    pub(super) read_at_ms: u64,
    pub(super) read_at: Option<Instant>,
    /// How long that read took.
    pub(super) took: Duration,
}

/// The last read: its data (that of the last one that succeeded) and whether it failed.
pub(super) struct Fleet {
    pub(super) data: Arc<Data>,
    /// When this read began (`None`: none yet).
    pub(super) started: Option<Instant>,
    /// Why the last read failed.
    pub(super) error: Option<String>,
}

impl Fleet {
    pub(super) fn initial() -> Fleet {
        Fleet { data: Arc::default(), started: None, error: None }
    }

    /// How old the data served is (`None`: no read succeeded yet).
    pub(super) fn age(&self) -> Option<Duration> {
        self.data.read_at.map(|at| at.elapsed())
    }
}

/// What the reads remember of one breaker's history.
struct Told {
    epoch: u64,
    read: Instant,
    alerts: Vec<Alert>,
    note: Option<String>,
}

/// Reads the fleet every `App::read_every`, and at once when a write asks (`App::refresh`), until
/// shutdown.
pub(super) async fn run(app: Arc<App>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut told: HashMap<String, Told> = HashMap::new();
    let mut tick = tokio::time::interval(app.read_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sample: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = app.refresh.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let started = Instant::now();
        let previous = app.fleet.borrow().data.clone();
        let fleet = match read(&app, &mut told).await {
            Ok(mut data) => {
                data.took = started.elapsed();
                if last_sample.is_none_or(|at| at.elapsed() + app.read_every / 2 >= app.sample_every) {
                    last_sample = Some(started);
                    sample(&app, &data);
                }
                rates(&app, &mut data.rows);
                Fleet { data: Arc::new(data), started: Some(started), error: None }
            }
            Err(e) => {
                let error = if e.is_outage() { format!("redis unreachable: {e}") } else { format!("redis: {e}") };
                tracing::debug!(%error, "the shared read failed; the last one's data is served");
                Fleet { data: previous, started: Some(started), error: Some(error) }
            }
        };
        if let Some(notifier) = &app.notifier
            && fleet.error.is_none()
        {
            notifier.states(fleet.data.rows.iter().map(|r| &r.status));
            notifier.alerts(&fleet.data.alerts);
        }
        app.fleet.send_replace(Arc::new(fleet));
    }
}

/// One read of every breaker: statuses, then what their history tells when needed.
async fn read(app: &App, told: &mut HashMap<String, Told>) -> Result<Data, StoreError> {
    let (statuses, skipped) = statuses(app).await?;
    let now = now_ms();
    let read: HashSet<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    told.retain(|name, _| read.contains(name.as_str()));
    // The history's times are on Redis's clock: its windows are measured on it too.
    let stale: Vec<(String, u64, u64)> = statuses
        .iter()
        .filter(|s| s.epoch > 0)
        .filter(|s| told.get(&s.name).is_none_or(|t| t.epoch != s.epoch || t.read.elapsed() >= HISTORY_REFRESH))
        .map(|s| (s.name.clone(), s.epoch, s.now_ms))
        .collect();
    let reads = futures_util::stream::iter(stale).map(|(name, epoch, redis_now)| async move {
        let entries = app.client.breaker(&name, redis_breaker::Config::default())?.history(super::HISTORY_READ).await;
        Ok::<_, StoreError>((name, epoch, redis_now, entries?))
    });
    for done in reads.buffer_unordered(READS_IN_FLIGHT).collect::<Vec<_>>().await {
        // A history Redis did not give this time keeps what was told before.
        let Ok((name, epoch, redis_now, entries)) = done else { continue };
        let note = entries.first().filter(|e| e.epoch == epoch).and_then(|e| e.note.clone());
        let alerts = history_alerts(&name, &entries, app.alert_flaps, redis_now);
        told.insert(name, Told { epoch, read: Instant::now(), alerts, note });
    }
    let mut alerts = rule_alerts(&statuses, app.alert_open);
    let mut rows = Vec::with_capacity(statuses.len());
    for status in statuses {
        let known = told.get(&status.name).filter(|t| t.epoch == status.epoch);
        let forced = matches!(status.state, State::ForcedOpen | State::ForcedClosed);
        let note = known.filter(|_| forced).and_then(|t| t.note.clone());
        if let Some(t) = told.get(&status.name) {
            alerts.extend(t.alerts.iter().cloned());
        }
        rows.push(Row { status, note, rate_5m: Rate::default() });
    }
    alerts.sort_by(|a, b| (&a.breaker, a.kind).cmp(&(&b.breaker, b.kind)));
    Ok(Data { rows, skipped, alerts, read_at_ms: now, read_at: Some(Instant::now()), took: Duration::ZERO })
}

/// Every breaker's status (those `--breakers` admits), read concurrently; sorted open and
/// half-open first, then by name. With them, the names skipped, each logged once: those under
/// the prefix that cannot be breakers, and the breakers whose read failed for a reason other
/// than an outage (a key Redis refuses this user, say). Only an outage fails the whole read.
async fn statuses(app: &App) -> Result<(Vec<Status>, Vec<String>), StoreError> {
    let crate::Listing { mut names, skipped: not_names } = crate::listing(&app.client).await?;
    names.retain(|n| app.globs.admit(n));
    let mut skipped: Vec<(String, String)> = not_names
        .into_iter()
        .filter(|n| app.globs.admit(n))
        .map(|n| {
            let why = redis_breaker::name::validate_name(&n).err().map(|e| e.to_string()).unwrap_or_default();
            (n, format!("a key under the prefix whose name cannot be a breaker: {why}"))
        })
        .collect();
    let reads = futures_util::stream::iter(names).map(|name| async move {
        let read = async { app.client.breaker(&name, redis_breaker::Config::default())?.status().await };
        (read.await, name)
    });
    let mut out = Vec::new();
    for (read, name) in reads.buffer_unordered(READS_IN_FLIGHT).collect::<Vec<_>>().await {
        match read {
            Ok(status) => out.push(status),
            Err(e) if e.is_outage() => return Err(e),
            Err(e) => skipped.push((name, format!("its read failed: {e}"))),
        }
    }
    skipped.sort();
    warn_once(app, &skipped);
    out.sort_by(|a, b| (rank(a), &a.name).cmp(&(rank(b), &b.name)));
    Ok((out, skipped.into_iter().map(|(name, _)| name).collect()))
}

/// Logs each name in `skipped` (with why) that was not logged before (and forgets the names
/// no longer skipped, so the set holds no more than the last read skipped).
fn warn_once(app: &App, skipped: &[(String, String)]) {
    let mut warned = app.warned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now: HashSet<&String> = skipped.iter().map(|(name, _)| name).collect();
    warned.retain(|name| now.contains(name));
    for (name, why) in skipped {
        if warned.insert(name.clone()) {
            tracing::warn!(name = ?name, why = ?why, "skipped: {}", if why.starts_with("its read") { "a breaker whose read failed" } else { "a key under the prefix whose name cannot be a breaker" });
        }
    }
}

/// Open and half-open first, then forced, then closed.
fn rank(s: &Status) -> u8 {
    match s.state {
        State::Open | State::ForcedOpen => 0,
        State::HalfOpen => 1,
        State::ForcedClosed => 2,
        _ => 3,
    }
}

/// Keeps one sample of every breaker's counters (an hour of them: `App::samples_kept` per
/// breaker, the breakers of the last read only).
fn sample(app: &App, data: &Data) {
    let mut samples = app.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let read: HashSet<&str> = data.rows.iter().map(|r| r.status.name.as_str()).collect();
    samples.retain(|name, _| read.contains(name.as_str()));
    for r in &data.rows {
        let m = &r.status.metrics;
        let kept = samples.entry(r.status.name.clone()).or_default();
        kept.push_back(Sample {
            at_ms: data.read_at_ms,
            calls: m.calls,
            failures: m.failures,
            rejected: m.rejected,
            since_ms: m.since_ms,
        });
        while kept.len() > app.samples_kept {
            kept.pop_front();
        }
    }
}

/// Each row's failure rate over the last 5 minutes: its counters now against the newest sample
/// at least 5 minutes old, or the oldest one when the console has sampled for less long.
fn rates(app: &App, rows: &mut [Row]) {
    let samples = app.samples.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for r in rows {
        let Some(kept) = samples.get(&r.status.name) else { continue };
        r.rate_5m = rate_since(kept, &r.status, now_ms());
    }
}

fn rate_since(kept: &VecDeque<Sample>, s: &Status, now: u64) -> Rate {
    let since = now.saturating_sub(RATE_WINDOW_MS);
    let Some(base) = kept.iter().rev().find(|k| k.at_ms <= since).or_else(|| kept.front()) else {
        return Rate::default();
    };
    let m = &s.metrics;
    // Counters reset since the base (the metrics key expired or was deleted, and was made
    // again: its `since` moved; or they went back) count from zero.
    let (calls, failures) = if m.since_ms != base.since_ms || m.calls < base.calls || m.failures < base.failures {
        (m.calls, m.failures)
    } else {
        (m.calls - base.calls, m.failures - base.failures)
    };
    let rate = (calls > 0).then(|| (failures as f64 / calls as f64 * 1000.0).round() / 1000.0);
    Rate { rate, calls, failures, over_ms: now.saturating_sub(base.at_ms) }
}

/// `open_for_ms` and `state_for_ms` of a status `since_read` after it was read: how long since
/// it opened (open, forced open, half-open), and how long it has been in its state. On Redis's
/// clock (the status's `now_ms`, plus the time since the read on this machine's monotonic
/// clock), the clock its times were written on.
pub(super) fn ages(s: &Status, since_read: Duration) -> (Option<u64>, Option<u64>) {
    let now = s.now_ms.saturating_add(since_read.as_millis() as u64);
    let state_for = (s.changed_at_ms > 0).then(|| now.saturating_sub(s.changed_at_ms));
    let opened = if s.opened_at_ms > 0 { s.opened_at_ms } else { s.changed_at_ms };
    let open = matches!(s.state, State::Open | State::ForcedOpen | State::HalfOpen) && opened > 0;
    (open.then(|| now.saturating_sub(opened)), state_for)
}
