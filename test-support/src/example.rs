//! Finds a Redis for the examples: `$REDIS_URL`, else a throwaway `redis-server` on a free
//! loopback port (stopped when the example ends), else a message saying how to get one. The
//! spawning is the tests' own ([`crate::server`]).

use crate::server;

/// A Redis for the example; a server it started is stopped on drop.
pub struct ExampleRedis {
    pub url: String,
    _server: Option<server::Server>,
}

pub fn redis() -> Result<ExampleRedis, String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok(ExampleRedis { url, _server: None });
    }
    spawn_server()
}

impl ExampleRedis {
    /// Whether the example started this server (it stops on drop).
    pub fn started(&self) -> bool {
        self._server.is_some()
    }

    /// Leaves a server the example started running after it ends (its data directory too);
    /// answers its port, or `None` when the example uses a Redis it did not start.
    pub fn keep(self) -> Option<u16> {
        let server = self._server?;
        let port = server.port;
        std::mem::forget(server);
        Some(port)
    }
}

/// A throwaway redis-server of the example's own, whatever `REDIS_URL` says.
pub fn spawn_server() -> Result<ExampleRedis, String> {
    let server = server::spawn_server().map_err(|e| {
        format!(
            "REDIS_URL is unset and redis-server could not be started ({e}).\n\
             Install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis)\n\
             or point REDIS_URL at a Redis, e.g. REDIS_URL=redis://127.0.0.1:6379"
        )
    })?;
    eprintln!("started a throwaway redis-server on 127.0.0.1:{}", server.port);
    Ok(ExampleRedis { url: server.url(), _server: Some(server) })
}
