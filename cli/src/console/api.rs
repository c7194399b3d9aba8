//! The JSON the page reads: the fleet's list with its counts per state, and one breaker, each
//! with what the console adds to the library's status (how long in its state, since it opened,
//! the note of a forced state, the failure rate over the last 5 minutes).

use super::fleet::{Data, Row, ages};
use crate::output;
use redis_breaker::State;
use redis_breaker::status::Status;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// `GET /api/breakers`, now (the ages run on from the read, on this machine's monotonic clock).
pub(super) fn list(data: &Data) -> Value {
    let since_read = data.read_at.map(|at| at.elapsed()).unwrap_or_default();
    let breakers: Vec<Value> = data.rows.iter().map(|r| row(r, since_read)).collect();
    let mut counts = Map::new();
    for state in [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::ForcedClosed] {
        let n = data.rows.iter().filter(|r| r.status.state == state).count();
        counts.insert(state.as_str().to_string(), n.into());
    }
    json!({
        "breakers": breakers,
        "counts": counts,
        "skipped": data.skipped.len(),
        "skipped_names": data.skipped,
        "read_at_ms": data.read_at_ms,
    })
}

fn row(r: &Row, since_read: Duration) -> Value {
    let mut v = output::breaker_value(&r.status);
    if let Some(fields) = v.as_object_mut() {
        added(fields, &r.status, r.note.as_deref(), since_read);
        fields.insert("changed_at_ms".into(), r.status.changed_at_ms.into());
        fields.insert("opened_at_ms".into(), r.status.opened_at_ms.into());
        fields.insert("failure_rate_5m".into(), json!(r.rate_5m));
        let forced = matches!(r.status.state, State::ForcedOpen | State::ForcedClosed);
        let until = (forced && r.status.open_until_ms > 0).then_some(r.status.open_until_ms);
        fields.insert("forced_until_ms".into(), until.into());
    }
    v
}

/// `GET /api/breakers/{name}`: the library's status with `note`, `open_for_ms` and
/// `state_for_ms` (`since_read` after the status was read).
pub(super) fn one(s: &Status, note: Option<&str>, since_read: Duration) -> Value {
    let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
    if let Some(fields) = v.as_object_mut() {
        added(fields, s, note, since_read);
    }
    v
}

fn added(fields: &mut Map<String, Value>, s: &Status, note: Option<&str>, since_read: Duration) {
    let (open_for, state_for) = ages(s, since_read);
    fields.insert("open_for_ms".into(), open_for.into());
    fields.insert("state_for_ms".into(), state_for.into());
    fields.insert("note".into(), note.into());
}
