//! Notifications (`serve --notify URL`): placeholder of the interface while the notifier is
//! written on its own branch. Nothing here is sent yet.

use super::alerts::Alert;
use prometheus_client::registry::Registry;
use redis_breaker::Client;
use std::sync::Arc;
use tokio::sync::watch;

/// Options of `serve` for notifications.
#[derive(Debug, clap::Args)]
pub(crate) struct NotifyArgs {
    /// POST a JSON document to this URL for every fleet transition and every alert raised or
    /// cleared (repeatable).
    #[arg(long = "notify", value_name = "URL")]
    pub(crate) urls: Vec<String>,
}

/// Sends notifications in the background, never delaying the console.
pub(crate) struct Notifier {}

impl Notifier {
    /// Starts the notifier when `args` name a receiver: it follows `client`'s transitions itself
    /// and stops when `shutdown` turns true.
    pub(crate) fn start(
        args: &NotifyArgs,
        client: &Client,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Option<Arc<Notifier>>, crate::Failure> {
        let _ = (args, client, shutdown);
        Ok(None)
    }

    /// The alerts that hold now (called after every shared read): those new since the last
    /// call are raised, those gone are cleared.
    pub(crate) fn alerts(&self, now: &[Alert]) {
        let _ = now;
    }

    /// Registers the notifier's counters (sent, failed, dropped, ...) in a scrape's registry.
    pub(crate) fn register(&self, registry: &mut Registry) {
        let _ = registry;
    }
}
