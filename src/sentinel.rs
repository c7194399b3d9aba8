//! Redis Sentinel (feature `sentinel`): a connection that asks the sentinels where the primary
//! is, keeps a multiplexed connection to it, and asks again when that connection breaks or the
//! node answers READONLY (it was demoted). Scripts are never sent to a replica: the sentinels
//! name the primary, and the node is asked (ROLE) whether it is one before it is used.

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Shared {
    sentinels: tokio::sync::Mutex<SentinelClient>,
    primary: Mutex<Option<MultiplexedConnection>>,
    op_timeout: Duration,
}

/// The connection to the primary the sentinels name. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SentinelConn(Arc<Shared>);

impl SentinelConn {
    pub(crate) fn new(sentinels: SentinelClient, op_timeout: Duration) -> SentinelConn {
        SentinelConn(Arc::new(Shared {
            sentinels: tokio::sync::Mutex::new(sentinels),
            primary: Mutex::new(None),
            op_timeout,
        }))
    }

    /// A client of the primary the sentinels name now (checked with ROLE), within `op_timeout`.
    pub(crate) async fn primary(&self) -> RedisResult<redis::Client> {
        let ask = async { self.0.sentinels.lock().await.async_get_client().await };
        match tokio::time::timeout(self.0.op_timeout, ask).await {
            Ok(found) => found,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the sentinels did not name a primary within op_timeout",
            ))),
        }
    }

    /// Forgets the connection: the next operation asks the sentinels again.
    pub(crate) fn forget(&self) {
        *self.0.primary.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        if let Some(conn) = self.0.primary.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Ok(conn);
        }
        let client = self.primary().await?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.0.op_timeout))
            .set_response_timeout(Some(self.0.op_timeout));
        let conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        *self.0.primary.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// After an error: a broken connection or a demoted node is forgotten.
    fn after<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result {
            let demoted = e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                || e.to_string().contains("READONLY");
            if demoted || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
                self.forget();
            }
        }
        result
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = match self.connection().await {
                Ok(mut conn) => conn.req_packed_command(cmd).await,
                Err(e) => Err(e),
            };
            self.after(result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = match self.connection().await {
                Ok(mut conn) => conn.req_packed_commands(pipeline, offset, count).await,
                Err(e) => Err(e),
            };
            self.after(result)
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
