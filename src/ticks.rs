//! [`TimeBase`]: nanoseconds since a client's base instant, read precisely or (on the hot path)
//! from Linux's coarse monotonic clock.

use std::time::{Duration, Instant};

/// Nanoseconds in `d`, saturating below `u64::MAX` (kept free as the "no deadline" mark).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX - 1)
}

/// Nanoseconds from `base` to `at` (zero before it).
pub(crate) fn since(base: Instant, at: Instant) -> u64 {
    nanos(at.saturating_duration_since(base))
}

/// A base instant and, on Linux, the same instant on `CLOCK_MONOTONIC` (the clock `Instant`
/// reads there), so the coarse clock can be read against it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeBase {
    base: Instant,
    #[cfg(target_os = "linux")]
    base_raw: u64,
}

impl TimeBase {
    pub(crate) fn new(base: Instant) -> TimeBase {
        TimeBase {
            base,
            #[cfg(target_os = "linux")]
            base_raw: raw_nanos(rustix::time::ClockId::Monotonic).saturating_sub(since(base, Instant::now())),
        }
    }

    /// Nanoseconds from the base to `at`.
    pub(crate) fn since(&self, at: Instant) -> u64 {
        since(self.base, at)
    }

    /// The deadline `nanos` nanoseconds after the base.
    #[inline]
    pub(crate) fn deadline(&self, nanos: u64) -> Deadline {
        Deadline { base: self.base, nanos }
    }

    /// Nanoseconds from the base to now, as the coarse clock reads it: on Linux the time of the
    /// last tick (`CLOCK_MONOTONIC_COARSE`, a vDSO read of a few ns instead of about 20), which
    /// lags by about one tick (1-4 ms), so what is decided with it may be trusted that much
    /// longer; elsewhere `Instant::now()`.
    #[inline]
    pub(crate) fn coarse_now(&self) -> u64 {
        #[cfg(target_os = "linux")]
        return raw_nanos(rustix::time::ClockId::MonotonicCoarse).saturating_sub(self.base_raw);
        #[cfg(not(target_os = "linux"))]
        return self.since(Instant::now());
    }
}

/// An instant as nanoseconds after a base instant, as a snapshot holds it: kept so (a copy, no
/// clock read, no arithmetic) until someone asks for the time left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline {
    base: Instant,
    nanos: u64,
}

impl Deadline {
    /// The deadline `after` from `start`.
    pub(crate) fn after(start: Instant, after: Duration) -> Deadline {
        Deadline { base: start, nanos: nanos(after) }
    }

    /// The time left from `now` (zero once passed).
    pub(crate) fn left(&self, now: Instant) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(since(self.base, now)))
    }
}

#[cfg(target_os = "linux")]
#[inline]
fn raw_nanos(clock: rustix::time::ClockId) -> u64 {
    let t = rustix::time::clock_gettime(clock);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}
