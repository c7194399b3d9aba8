//! Finds a Redis for the examples: `$REDIS_URL`, else a throwaway `redis-server` on a free
//! loopback port (stopped when the example ends), else a message saying how to get one.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis for the example; a server it started is stopped on drop.
pub struct ExampleRedis {
    pub url: String,
    child: Option<Child>,
    dir: Option<std::path::PathBuf>,
}

impl Drop for ExampleRedis {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn redis() -> Result<ExampleRedis, String> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        return Ok(ExampleRedis { url, child: None, dir: None });
    }
    spawn_server()
}

/// A throwaway redis-server of the example's own, whatever `REDIS_URL` says.
pub fn spawn_server() -> Result<ExampleRedis, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!("redis-breaker-example-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            format!(
                "REDIS_URL is unset and redis-server could not be started ({e}).\n\
                 Install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis)\n\
                 or point REDIS_URL at a Redis, e.g. REDIS_URL=redis://127.0.0.1:6379"
            )
        })?;
    let redis = ExampleRedis { url: format!("redis://127.0.0.1:{port}"), child: Some(child), dir: Some(dir) };
    let client = redis::Client::open(redis.url.as_str()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(200))
            && redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            eprintln!("started a throwaway redis-server on 127.0.0.1:{port}");
            return Ok(redis);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("redis-server on port {port} did not answer"))
}
