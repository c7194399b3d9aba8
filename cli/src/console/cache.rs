//! A small cache of answers per breaker name, for the reads asked per click (a breaker's
//! history, a breaker the shared read does not hold): each name is read from Redis at most once
//! per `TTL`, and the cache holds at most `MAX_NAMES` names, so clients asking for many names
//! cannot grow it without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(1);
/// About 1,024 answers of at most ~100 history entries each: a few MB at worst.
pub(super) const MAX_NAMES: usize = 1024;

#[derive(Default)]
pub(super) struct PerName {
    kept: Mutex<HashMap<String, (Instant, serde_json::Value)>>,
}

impl PerName {
    /// The answer kept for `name` if it is younger than `TTL`.
    pub(super) fn get(&self, name: &str) -> Option<serde_json::Value> {
        let kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        kept.get(name).filter(|(at, _)| at.elapsed() < TTL).map(|(_, v)| v.clone())
    }

    /// Keeps `value` for `name`; when full, the expired answers go first, then all of them.
    pub(super) fn put(&self, name: &str, value: serde_json::Value) {
        let mut kept = self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if kept.len() >= MAX_NAMES && !kept.contains_key(name) {
            kept.retain(|_, (at, _)| at.elapsed() < TTL);
            if kept.len() >= MAX_NAMES {
                kept.clear();
            }
        }
        kept.insert(name.to_string(), (Instant::now(), value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_never_holds_more_than_its_bound() {
        let cache = PerName::default();
        for i in 0..MAX_NAMES * 3 {
            cache.put(&format!("b{i}"), serde_json::json!(i));
            assert!(cache.len() <= MAX_NAMES);
        }
        let last = format!("b{}", MAX_NAMES * 3 - 1);
        assert_eq!(cache.get(&last), Some(serde_json::json!(MAX_NAMES * 3 - 1)));
    }
}
