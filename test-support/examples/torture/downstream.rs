//! The loopback downstream the workers call: one TCP line per call. A worker says `hello <n>`
//! once per connection, then `c` per call; the answer is `ok` or `fail` by the health the
//! nemesis set for that worker, or nothing at all while it hangs (the call times out).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy = 0,
    Failing = 1,
    Hanging = 2,
}

/// The downstream server; the health of each worker is an atomic the nemesis sets.
pub(crate) struct Downstream {
    pub(crate) port: u16,
    health: Arc<Vec<AtomicU8>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Downstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Downstream {
    pub(crate) async fn start(workers: usize) -> std::io::Result<Downstream> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let health: Arc<Vec<AtomicU8>> = Arc::new((0..workers).map(|_| AtomicU8::new(0)).collect());
        let shared = health.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, shared.clone()));
            }
        });
        Ok(Downstream { port, health, task })
    }

    pub(crate) fn set(&self, worker: usize, health: Health) {
        if let Some(h) = self.health.get(worker) {
            h.store(health as u8, Ordering::SeqCst);
        }
    }

    pub(crate) fn set_all(&self, health: Health) {
        for h in self.health.iter() {
            h.store(health as u8, Ordering::SeqCst);
        }
    }
}

async fn serve(stream: TcpStream, health: Arc<Vec<AtomicU8>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let mut worker = usize::MAX;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(n) = line.strip_prefix("hello ") {
            worker = n.trim().parse().unwrap_or(usize::MAX);
            continue;
        }
        let h = health.get(worker).map_or(1, |h| h.load(Ordering::SeqCst));
        let answer: &[u8] = match h {
            0 => b"ok\n",
            1 => b"fail\n",
            _ => continue,
        };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}

/// A worker's connection to the downstream; made again after a call that timed out.
pub(crate) struct Caller {
    port: u16,
    worker: usize,
    conn: Option<(tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>, tokio::net::tcp::OwnedWriteHalf)>,
}

impl Caller {
    pub(crate) fn new(port: u16, worker: usize) -> Caller {
        Caller { port, worker, conn: None }
    }

    /// One call: true when the downstream answered `ok`. Dropped mid-way (a timeout), the
    /// connection is made again on the next call.
    pub(crate) async fn call(&mut self) -> Result<bool, String> {
        let result = self.call_inner().await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    async fn call_inner(&mut self) -> Result<bool, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect(("127.0.0.1", self.port)).await.map_err(|e| e.to_string())?;
            let (read, mut write) = stream.into_split();
            write.write_all(format!("hello {}\n", self.worker).as_bytes()).await.map_err(|e| e.to_string())?;
            self.conn = Some((BufReader::new(read).lines(), write));
        }
        // Taken out while the call runs: a call dropped by its timeout leaves no connection.
        let Some((mut lines, mut write)) = self.conn.take() else { return Err("no connection".into()) };
        write.write_all(b"c\n").await.map_err(|e| e.to_string())?;
        let line = lines.next_line().await.map_err(|e| e.to_string())?.ok_or("the downstream closed")?;
        self.conn = Some((lines, write));
        Ok(line == "ok")
    }
}
