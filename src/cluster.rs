//! Redis Cluster (feature `cluster`). One breaker's keys share a hash tag, so every script
//! runs on the one master that owns the breaker's slot; PUBLISH reaches every node.

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// A cluster connection made on first use, so a client created while the cluster cannot be
/// reached still serves calls (by the degraded mode) and joins the cluster when it answers.
#[derive(Clone)]
pub(crate) struct LazyCluster {
    client: ClusterClient,
    conn: Arc<OnceCell<ClusterConnection>>,
}

impl LazyCluster {
    pub(crate) fn new(client: ClusterClient) -> LazyCluster {
        LazyCluster { client, conn: Arc::new(OnceCell::new()) }
    }

    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

impl ConnectionLike for LazyCluster {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move { self.connection().await?.req_packed_command(cmd).await })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move { self.connection().await?.req_packed_commands(pipeline, offset, count).await })
    }

    fn get_db(&self) -> i64 {
        0
    }
}
