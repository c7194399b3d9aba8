//! [`BreakerService`]: a service behind a breaker.

use super::classify::Classify;
use crate::{Breaker, Error};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The error of a [`BreakerService`]: the inner service's, [`Rejected`](crate::Rejected) or
/// [`TimedOut`](crate::TimedOut).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future of a [`BreakerService`] call.
pub type ResponseFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

/// A service whose calls go through a breaker. Ready whenever the inner service is: an open
/// breaker fails each `call` at once with [`Rejected`](crate::Rejected) instead of holding callers back.
#[derive(Debug, Clone)]
pub struct BreakerService<S, C> {
    inner: S,
    breaker: Breaker,
    classifier: C,
}

impl<S, C> BreakerService<S, C> {
    /// Wraps `inner`.
    pub fn new(inner: S, breaker: Breaker, classifier: C) -> Self {
        BreakerService { inner, breaker, classifier }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }
}

impl<S, C, Req> tower_service::Service<Req> for BreakerService<S, C>
where
    S: tower_service::Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    C: Classify<S::Response, S::Error> + Clone + Send + Sync + 'static,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The ready service handles this call; a fresh clone takes its place (tower's idiom).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let breaker = self.breaker.clone();
        let classifier = self.classifier.clone();
        Box::pin(async move {
            let result = breaker.execute_with(|r| classifier.classify(r), move || inner.call(req)).await;
            result.map_err(|e| match e {
                Error::Inner(e) => e.into(),
                Error::Rejected(rejected) => Box::new(rejected) as BoxError,
                Error::Timeout(timed_out) => Box::new(timed_out),
            })
        })
    }
}
