//! A breaker as tower middleware: `BreakerLayer` around an HTTP-like service whose 5xx answers
//! count as failures (`HttpStatusClassifier`), while 404s are ignored.
//!
//! `cargo run --example tower --features tower` — uses `$REDIS_URL`, else starts a throwaway
//! redis-server.

use redis_breaker_test_support::example as common;

use redis_breaker::tower::{BreakerLayer, HttpStatusClassifier};
use redis_breaker::{Client, Config, Rejected};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// A downstream that answers 503 for its first `failing` requests, 200 afterwards.
#[derive(Clone)]
struct Downstream {
    served: Arc<AtomicU32>,
    failing: u32,
}

impl Service<&'static str> for Downstream {
    type Response = http::Response<String>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, path: &'static str) -> Self::Future {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        let status = if path == "/missing" {
            404
        } else if n < self.failing {
            503
        } else {
            200
        };
        let response = http::Response::builder().status(status).body(format!("{status} for {path}"));
        std::future::ready(response.map_err(std::io::Error::other))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let redis = common::redis()?;
    let client = Client::connect(&redis.url).await?;
    let config = Config::builder()
        .failure_threshold(3)
        .success_threshold(1)
        .base_recovery(Duration::from_millis(300))
        .jitter(0.0)
        .build()?;
    let breaker = client.breaker(&format!("tower-demo-{}", std::process::id()), config)?;
    let downstream = Downstream { served: Arc::new(AtomicU32::new(0)), failing: 4 };
    let mut svc = BreakerLayer::with_classifier(breaker.clone(), HttpStatusClassifier).layer(downstream.clone());

    for (i, path) in ["/missing", "/a", "/b", "/c", "/d", "/e"].into_iter().enumerate() {
        show(i, path, svc.call(path).await);
    }
    println!("... waiting out the 300ms recovery time ...");
    tokio::time::sleep(Duration::from_millis(350)).await;
    for (i, path) in ["/f", "/g"].into_iter().enumerate() {
        show(i + 6, path, svc.call(path).await);
    }
    println!(
        "the downstream served {} requests; the breaker is {}",
        downstream.served.load(Ordering::Relaxed),
        breaker.state()
    );
    client.shutdown().await?;
    Ok(())
}

fn show(i: usize, path: &str, result: Result<http::Response<String>, redis_breaker::tower::BoxError>) {
    match result {
        Ok(response) => println!("request {i} {path}: {}", response.body()),
        Err(e) => match e.downcast_ref::<Rejected>() {
            Some(r) => println!("request {i} {path}: rejected, breaker {} ({e})", r.state),
            None => println!("request {i} {path}: error {e}"),
        },
    }
}
