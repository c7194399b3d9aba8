//! Redis Cluster (feature `cluster`): the command connection. One breaker's keys share a hash
//! tag, so every script runs on the one master that owns the breaker's slot; its events go with
//! SPUBLISH to its own shard channel (Redis >= 7.0), else PUBLISH reaches every node (the
//! subscription to them: `shard_events.rs`).

use crate::store::conn::{Request, Route};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, RedisFuture, RedisResult};
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
    /// Connects through `client` when first used.
    pub(crate) fn new(client: ClusterClient) -> LazyCluster {
        LazyCluster { client, conn: Arc::new(OnceCell::new()) }
    }

    /// The cluster connection, made now if it is not yet.
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

/// Each request goes to the cluster connection, made on first use; a redirection it gives up
/// on is an outage ([`owner_not_reached`]).
impl Route for LazyCluster {
    fn send<'a, R: Request + 'a>(&'a mut self, request: R) -> RedisFuture<'a, R::Reply> {
        Box::pin(async move { request.send(&mut self.connection().await?).await.map_err(owner_not_reached) })
    }
}

/// A MOVED or ASK that the cluster connection gives up as a command's error, turned into what
/// it is: the slot's owner was not reached, an outage. The connection retries nothing
/// (`retries(0)`, see `Client::connect_cluster`): when its connection to the owner had dropped
/// (a restarted node, a killed client) the command may go to another master (the connection
/// picks any node when the owner's is down), and that master's MOVED ends it. Nothing ran
/// there, but an earlier attempt on the owner may have run: as
/// an outage, the batch of counts the command carried is in doubt and sent again under its id,
/// which Redis counts once. Taken for Redis refusing the breaker's script (before), the batch
/// was dropped, and the metrics lost its counts (the torture harness's "4 counts" on the
/// cluster: fewer failures in the metrics than the workers decided).
fn owner_not_reached(e: RedisError) -> RedisError {
    use redis::{ErrorKind, ServerErrorKind};
    if !matches!(e.kind(), ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)) {
        return e;
    }
    let said = e.to_string();
    (
        ErrorKind::ClusterConnectionNotFound,
        "the slot's owner was not reached (the cluster client's retry was redirected)",
        said,
    )
        .into()
}
