//! The `redis-breaker` binary, run as a user and an operator would, against a real Redis, in
//! one test binary: the CLI's commands (`cli`) and, with the `console` feature, `redis-breaker
//! serve` over HTTP (`console`). The console's browser test is a binary of its own
//! (`tests/console_browser.rs`), ignored unless asked for.

mod cli;
#[cfg(feature = "console")]
mod console;
#[cfg(feature = "console")]
mod service;
