//! Real servers for redis-breaker's tests, examples and benches, all on loopback addresses:
//! a throwaway `redis-server` ([`server`]), a Redis for each test that fails with a message
//! saying how to get one rather than skip ([`TestRedis`], [`redis()`], [`cluster()`]), a Redis for
//! the examples ([`example`]), a minimal WebDriver client for the console's browser test
//! ([`webdriver`]) and HTTP/1.1 wire helpers ([`wire`]).
//!
//! It depends on `redis` and `tokio`, not on redis-breaker, so the library's own unit tests use
//! it too. Not published.

pub mod example;
pub mod server;
mod test_redis;
pub mod tls;
pub mod webdriver;
pub mod wire;

pub use test_redis::*;
