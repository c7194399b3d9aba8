//! The document POSTed (its JSON fields and Slack's `text`), and the task that composes each
//! transition's document.

use super::Counters;
use super::follow::{Draft, Transition};
use hyper::body::Bytes;
use redis_breaker::{Client, State};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The JSON document POSTed: Slack's `text` and the facts as fields.
#[derive(Debug, serde::Serialize)]
pub(super) struct Document {
    text: String,
    /// `transition`, `alert_raised` or `alert_cleared`.
    kind: &'static str,
    prefix: String,
    breaker: String,
    from: Option<&'static str>,
    to: Option<&'static str>,
    reason: Option<String>,
    epoch: Option<u64>,
    incarnation: Option<u64>,
    note: Option<String>,
    origin: Option<String>,
    /// This console's clock when it learnt of it, ms since the Unix epoch.
    at_ms: u64,
    /// Transitions of this breaker not sent since the last one that was (minimum interval).
    suppressed: u64,
    alert: Option<&'static str>,
    message: Option<String>,
}

impl Document {
    /// Puts this document on every receiver's queue; a full queue drops it (counted).
    pub(super) fn fan_out(&self, queues: &[mpsc::Sender<Bytes>], counters: &Counters) {
        let body = match serde_json::to_vec(self) {
            Ok(b) => Bytes::from(b),
            Err(e) => return tracing::error!(error = %e, "cannot encode a notification"),
        };
        for q in queues {
            if q.try_send(body.clone()).is_err() {
                counters.dropped.inc();
            }
        }
    }

    fn transition(prefix: &str, d: &Draft, note: Option<String>) -> Document {
        let e = &d.event;
        let from = e.from.map_or("corrupt", State::as_str);
        let mut text = format!(
            "redis-breaker: {} {from} → {} ({}, epoch {})",
            slack(&e.name),
            e.to.as_str(),
            slack(&e.reason),
            e.epoch
        );
        if let Some(note) = &note {
            text.push_str(&format!(", note: {}", slack(note)));
        }
        if d.suppressed > 0 {
            let s = if d.suppressed == 1 { "" } else { "s" };
            text.push_str(&format!("; {} earlier transition{s} not sent (minimum interval)", d.suppressed));
        }
        Document {
            text,
            kind: "transition",
            prefix: prefix.to_string(),
            breaker: e.name.clone(),
            from: e.from.map(State::as_str),
            to: Some(e.to.as_str()),
            reason: Some(e.reason.clone()),
            epoch: Some(e.epoch),
            incarnation: Some(e.incarnation),
            note,
            origin: e.origin.clone(),
            at_ms: d.at_ms,
            suppressed: d.suppressed,
            alert: None,
            message: None,
        }
    }

    pub(super) fn alert(
        kind: &'static str,
        prefix: &str,
        breaker: &str,
        alert: &'static str,
        message: &str,
        at_ms: u64,
    ) -> Document {
        let text = if kind == "alert_raised" {
            format!("redis-breaker: alert {alert} on {}: {}", slack(breaker), slack(message))
        } else {
            format!("redis-breaker: alert {alert} on {} cleared", slack(breaker))
        };
        Document {
            text,
            kind,
            prefix: prefix.to_string(),
            breaker: breaker.to_string(),
            from: None,
            to: None,
            reason: None,
            epoch: None,
            incarnation: None,
            note: None,
            origin: None,
            at_ms,
            suppressed: 0,
            alert: Some(alert),
            message: Some(message.to_string()),
        }
    }
}

/// Text for Slack's `text`: `&`, `<` and `>` escaped as Slack requires (so that no name or note
/// can make a mention such as `<!channel>` or a link), and on one line.
pub(super) fn slack(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The task that makes each transition's document (reading a forced state's note) and puts
/// it on every receiver's queue.
pub(super) struct Compose {
    pub(super) client: Client,
    pub(super) prefix: String,
    pub(super) note_timeout: Duration,
}

impl Compose {
    pub(super) async fn run(
        self,
        mut drafts: mpsc::Receiver<Draft>,
        queues: Arc<[mpsc::Sender<Bytes>]>,
        counters: Counters,
    ) {
        while let Some(d) = drafts.recv().await {
            let note = if matches!(d.event.to, State::ForcedOpen | State::ForcedClosed) {
                tokio::time::timeout(self.note_timeout, self.note(&d.event)).await.ok().flatten()
            } else {
                None
            };
            Document::transition(&self.prefix, &d, note).fan_out(&queues, &counters);
        }
    }

    /// The operator's note of the transition `e`: the newest history entry's, when it is this
    /// transition.
    async fn note(&self, e: &Transition) -> Option<String> {
        let breaker = self.client.breaker(&e.name, redis_breaker::Config::default()).ok()?;
        let newest = breaker.history(1).await.ok()?.into_iter().next()?;
        if newest.epoch == e.epoch && newest.to == e.to.as_str() { newest.note.filter(|n| !n.is_empty()) } else { None }
    }
}
