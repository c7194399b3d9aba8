//! What the builders of [`Config`](super::Config) and [`ClientConfig`](super::client::ClientConfig)
//! share: a setter and a getter written once per field, and the checks that name the field a
//! value breaks.

use crate::duration;
use crate::error::ConfigError;
use std::time::Duration;

/// Writes a builder's setter and the built config's getter for each `Copy` field, with one doc
/// comment for both: `setters_and_getters!(Builder => Built { field: Type; ... })`.
macro_rules! setters_and_getters {
    ($builder:ident => $built:ident { $($(#[$doc:meta])* $field:ident: $ty:ty;)* }) => {
        impl $builder {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = Some(value);
                    self
                }
            )*
        }
        impl $built {
            $(
                $(#[$doc])*
                pub fn $field(&self) -> $ty {
                    self.$field
                }
            )*
        }
    };
}
pub(crate) use setters_and_getters;

/// `Ok` when `ok`, else the error naming `field` and the rule it breaks.
pub(crate) fn check(ok: bool, field: &'static str, rule: impl FnOnce() -> String) -> Result<(), ConfigError> {
    if ok { Ok(()) } else { Err(ConfigError::Field { field, reason: rule() }) }
}

/// A duration of at least 1 ms.
pub(crate) fn at_least_1ms(d: Duration, field: &'static str) -> Result<(), ConfigError> {
    check(d >= Duration::from_millis(1), field, || format!("must be at least 1ms, got {}", duration::format(d)))
}

/// A rate that is off (`None`) or in (0, 1].
pub(super) fn fraction(rate: Option<f64>, field: &'static str) -> Result<(), ConfigError> {
    match rate {
        None => Ok(()),
        Some(r) => check(r > 0.0 && r <= 1.0, field, || format!("must be in (0, 1], got {r}")),
    }
}
