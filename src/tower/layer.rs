//! [`BreakerLayer`]: wraps services in a [`BreakerService`].

use super::classify::DefaultClassifier;
use super::service::BreakerService;
use crate::Breaker;

/// Wraps services so each call goes through `breaker`; `classifier` decides how results count.
#[derive(Debug, Clone)]
pub struct BreakerLayer<C = DefaultClassifier> {
    breaker: Breaker,
    classifier: C,
}

impl BreakerLayer {
    /// A layer where `Ok` is a success and `Err` a failure.
    pub fn new(breaker: Breaker) -> Self {
        BreakerLayer { breaker, classifier: DefaultClassifier }
    }
}

impl<C> BreakerLayer<C> {
    /// A layer with its own classifier (e.g. [`HttpStatusClassifier`](super::HttpStatusClassifier)).
    pub fn with_classifier(breaker: Breaker, classifier: C) -> Self {
        BreakerLayer { breaker, classifier }
    }
}

impl<S, C: Clone> tower_layer::Layer<S> for BreakerLayer<C> {
    type Service = BreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
