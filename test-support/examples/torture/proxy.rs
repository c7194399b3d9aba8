//! A loopback TCP proxy between one worker and Redis, that the nemesis can make stop
//! forwarding (a blackhole: bytes wait, as TCP retransmits across a partition), delay, or stop
//! forwarding only the connections that subscribed (a silently dead event subscription).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default)]
struct Mode {
    blackhole: AtomicBool,
    blackhole_subscriptions: AtomicBool,
    delay_ms: AtomicU64,
}

pub(crate) struct Proxy {
    pub(crate) port: u16,
    mode: Arc<Mode>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// A proxy on a free loopback port to `127.0.0.1:<upstream>`.
    pub(crate) async fn start(upstream: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let mode = Arc::new(Mode::default());
        let shared = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = shared.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        pipe(client, server, mode).await;
                    }
                });
            }
        });
        Ok(Proxy { port, mode, task })
    }

    pub(crate) fn blackhole(&self, on: bool) {
        self.mode.blackhole.store(on, Ordering::SeqCst);
    }
    pub(crate) fn blackhole_subscriptions(&self, on: bool) {
        self.mode.blackhole_subscriptions.store(on, Ordering::SeqCst);
    }
    pub(crate) fn delay(&self, ms: u64) {
        self.mode.delay_ms.store(ms, Ordering::SeqCst);
    }
}

async fn pipe(client: TcpStream, server: TcpStream, mode: Arc<Mode>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let subscribed = Arc::new(AtomicBool::new(false));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone(), subscribed.clone(), true);
    let down = pump(sr, cw, mode, subscribed, false);
    tokio::select! { _ = up => {}, _ = down => {} }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<Mode>,
    subscribed: Arc<AtomicBool>,
    upstream: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // A connection that sent (S)SUBSCRIBE carries the event subscription.
        if upstream && buf[..n].windows(9).any(|w| w.eq_ignore_ascii_case(b"SUBSCRIBE")) {
            subscribed.store(true, Ordering::SeqCst);
        }
        loop {
            let held = mode.blackhole.load(Ordering::SeqCst)
                || (subscribed.load(Ordering::SeqCst) && mode.blackhole_subscriptions.load(Ordering::SeqCst));
            if !held {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delay = mode.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
