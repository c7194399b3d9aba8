//! Where breaker state lives: Redis (the shared store) or this process (the in-process machine).
//! `redis.rs` holds the Redis store, `in_process.rs` the in-process one, `scripts.rs` the Lua
//! scripts and how they reach Redis, `conn.rs` the connection the Redis store holds (and the
//! one forwarding connection), and one file per way of reaching Redis beside a plain URL:
//! `cluster.rs`, `sentinel.rs`, `tls.rs`.

#[cfg(feature = "cluster")]
pub(crate) mod cluster;
pub(crate) mod conn;
pub(crate) mod in_process;
pub(crate) mod redis;
pub(crate) mod scripts;
#[cfg(feature = "sentinel")]
pub(crate) mod sentinel;
#[cfg(feature = "tls")]
pub(crate) mod tls;

pub(crate) use conn::{Reconnect, SharedConn};
pub(crate) use in_process::InProcessStore;
pub(crate) use redis::{RedisStore, StoreSettings};
