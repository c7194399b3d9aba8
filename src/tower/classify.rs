//! How a service's result counts toward the breaker.

use crate::Outcome;

/// Decides how a service's result counts: [`Outcome::Success`], [`Outcome::Failure`] or
/// [`Outcome::Ignore`]. Closures `Fn(&Result<T, E>) -> Outcome` implement it.
pub trait Classify<T, E> {
    /// The outcome of one call.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<T, E> Classify<T, E> for DefaultClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if result.is_ok() { Outcome::Success } else { Outcome::Failure }
    }
}

/// For HTTP responses: 5xx and 429 are failures (the downstream is unhealthy or shedding
/// load), other 4xx are ignored (they say nothing about its health), the rest succeed; an `Err`
/// (no response at all) is a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpStatusClassifier;

impl<B, E> Classify<http::Response<B>, E> for HttpStatusClassifier {
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => {
                let status = response.status();
                if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                    Outcome::Failure
                } else if status.is_client_error() {
                    Outcome::Ignore
                } else {
                    Outcome::Success
                }
            }
            Err(_) => Outcome::Failure,
        }
    }
}
