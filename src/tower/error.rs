//! The errors a [`BreakerService`](super::BreakerService) adds to its inner service's.

use std::time::Duration;

/// The inner service took longer than the breaker's `call_timeout`; counted as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the call timed out after {}ms", .0.as_millis())]
pub struct TimedOut(pub Duration);
