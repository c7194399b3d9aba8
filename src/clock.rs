//! Time for the in-process breaker. Redis-backed breakers use Redis's own clock instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: for tests of code that uses
/// [`Client::in_memory_with_clock`](crate::Client::in_memory_with_clock). Clones share the time.
///
/// ```
/// use redis_breaker::{Clock, FakeClock};
/// use std::time::Duration;
///
/// let clock = FakeClock::new(1_000);
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(clock.now_ms(), 31_000);
/// ```
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    ms: Arc<AtomicU64>,
}

impl FakeClock {
    /// A clock that reads `start_ms`.
    pub fn new(start_ms: u64) -> FakeClock {
        FakeClock { ms: Arc::new(AtomicU64::new(start_ms)) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}
