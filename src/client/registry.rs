//! [`Handle`]: what every `Client` and `Breaker` handle holds — the shared part, the breakers by
//! name, and the signal that stops the client's background tasks when the last handle is gone.
//! Generic over the breaker's state type, so it depends on no breaker code.

use crate::client::shared::Shared;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub(crate) struct Handle<T> {
    pub(crate) shared: Arc<Shared>,
    breakers: Mutex<HashMap<String, Arc<T>>>,
    /// Dropped with the handle: tells the background tasks to stop.
    stop: watch::Sender<()>,
}

impl<T> Handle<T> {
    pub(crate) fn new(shared: Arc<Shared>) -> Handle<T> {
        Handle { shared, breakers: Mutex::new(HashMap::new()), stop: watch::channel(()).0 }
    }

    /// A receiver that changes when the handle is dropped.
    pub(crate) fn stopped(&self) -> watch::Receiver<()> {
        self.stop.subscribe()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<T>>> {
        // A poisoned lock only means a caller panicked mid-insert; the map is still whole.
        self.breakers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every registered breaker.
    pub(crate) fn registered(&self) -> Vec<Arc<T>> {
        self.map().values().cloned().collect()
    }

    /// Drops from the registry every breaker that no handle refers to (the registry holds the
    /// only reference) and that `idle` accepts; returns what was dropped. A later
    /// `get_or_insert` of the name makes it again.
    pub(crate) fn evict(&self, idle: impl Fn(&T) -> bool) -> Vec<Arc<T>> {
        let mut map = self.map();
        let mut gone = Vec::new();
        // Under the lock no reference can be made from the map's, so a count of one stays one.
        map.retain(|_, b| {
            let keep = Arc::strong_count(b) > 1 || !idle(b);
            if !keep {
                gone.push(b.clone());
            }
            keep
        });
        gone
    }

    /// The names of the registered breakers, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.map().keys().cloned().collect();
        names.sort();
        names
    }

    /// The breaker of `name`, if registered.
    pub(crate) fn named(&self, name: &str) -> Option<Arc<T>> {
        self.map().get(name).cloned()
    }

    /// The breaker of `name`: the registered one when `same` accepts it, else `make`'s, which is
    /// registered. `Err` carries the registered one that `same` refused.
    pub(crate) fn get_or_insert(
        &self,
        name: &str,
        same: impl FnOnce(&T) -> bool,
        make: impl FnOnce() -> Arc<T>,
    ) -> Result<Arc<T>, Arc<T>> {
        let mut map = self.map();
        if let Some(existing) = map.get(name) {
            return if same(existing) { Ok(existing.clone()) } else { Err(existing.clone()) };
        }
        let made = make();
        map.insert(name.to_string(), made.clone());
        Ok(made)
    }
}
