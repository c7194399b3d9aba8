//! The states of a breaker and the snapshot a process holds of one.

use serde::Serialize;
use std::fmt;

/// A breaker's state. [`State::as_str`] gives the name used in Redis, logs, metrics and the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum State {
    /// Calls are allowed; trip rules are watched.
    Closed,
    /// Calls are rejected until the recovery timeout ends.
    Open,
    /// A few leased probes test the downstream.
    HalfOpen,
    /// An operator opened the breaker.
    ForcedOpen,
    /// An operator closed the breaker; it never trips.
    ForcedClosed,
}

impl State {
    /// The state's name: `closed`, `open`, `half_open`, `forced_open` or `forced_closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
            State::ForcedOpen => "forced_open",
            State::ForcedClosed => "forced_closed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<State> {
        s.parse().ok()
    }

    /// True for the states that let calls through without a probe.
    pub fn allows_calls(self) -> bool {
        matches!(self, State::Closed | State::ForcedClosed)
    }

    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(v: u8) -> State {
        match v {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::ForcedOpen,
            _ => State::ForcedClosed,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the five states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a breaker state: closed, open, half_open, forced_open or forced_closed")]
pub struct UnknownState(String);

impl std::str::FromStr for State {
    type Err = UnknownState;

    /// Reads a state name as stored in Redis and printed by `Display`.
    fn from_str(s: &str) -> Result<State, UnknownState> {
        Ok(match s {
            "closed" => State::Closed,
            "open" => State::Open,
            "half_open" => State::HalfOpen,
            "forced_open" => State::ForcedOpen,
            "forced_closed" => State::ForcedClosed,
            _ => return Err(UnknownState(s.chars().take(40).collect())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_round_trips_through_its_name() {
        for s in [State::Closed, State::Open, State::HalfOpen, State::ForcedOpen, State::ForcedClosed] {
            assert_eq!(s.to_string().parse::<State>(), Ok(s));
            assert_eq!(State::from_u8(s.to_u8()), s);
        }
        let err = "opened".parse::<State>().unwrap_err();
        assert!(err.to_string().contains("half_open"), "{err}");
    }
}
