//! A tower [`Layer`](tower_layer::Layer) and [`Service`](tower_service::Service) that put a
//! breaker in front of any service (feature `tower`).
//!
//! An open breaker keeps the service ready and fails each `call` at once with [`Rejected`](crate::Rejected),
//! which callers find with `downcast_ref` on the boxed error:
//!
//! ```
//! # async fn run(client: redis_breaker::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use redis_breaker::{Config, Rejected};
//! use redis_breaker::tower::BreakerLayer;
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! let breaker = client.breaker("search", Config::default())?;
//! let mut svc = BreakerLayer::new(breaker).layer(tower_service_fn());
//! match svc.call("query").await {
//!     Ok(answer) => println!("{answer}"),
//!     Err(e) if e.downcast_ref::<Rejected>().is_some() => println!("search is down: use the fallback"),
//!     Err(e) => println!("search failed: {e}"),
//! }
//! # Ok(()) }
//! # #[derive(Clone)] struct Echo;
//! # impl tower_service::Service<&'static str> for Echo {
//! #     type Response = String; type Error = std::io::Error;
//! #     type Future = std::future::Ready<Result<String, std::io::Error>>;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, q: &'static str) -> Self::Future { std::future::ready(Ok(q.to_string())) }
//! # }
//! # fn tower_service_fn() -> Echo { Echo }
//! ```

mod classify;
mod layer;
mod service;

pub use crate::error::TimedOut;
pub use classify::{Classify, DefaultClassifier, HttpStatusClassifier};
pub use layer::BreakerLayer;
pub use service::{BoxError, BreakerService, ResponseFuture};
