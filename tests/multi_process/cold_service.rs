//! A downstream that behaves like a cold service, on loopback, shared by the fleet's processes:
//! down (every call fails) until the coordinator recovers it; then it warms up, its capacity
//! (calls per 100ms slot) rising linearly from `cold` to `full` over `warmup`, counted from the
//! first call it serves after recovering (a cold cache or a shrunken pool warms with traffic,
//! not while nobody calls). A call above the current slot's capacity fails at once, as an
//! overloaded service's 503 does.
//!
//! One TCP line per call: the caller sends `c`, the service answers `ok` or `fail`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// How the service warms up.
#[derive(Debug, Clone, Copy)]
pub struct Warmup {
    /// The length of a capacity slot.
    pub slot: Duration,
    /// Calls a slot serves right after recovery.
    pub cold: u32,
    /// Calls a slot serves once warm.
    pub full: u32,
    /// From the first call served to full capacity.
    pub warmup: Duration,
}

impl Warmup {
    /// The capacity of a slot `since` the first call served.
    pub fn capacity(&self, since: Duration) -> u32 {
        let warm = (since.as_secs_f64() / self.warmup.as_secs_f64()).min(1.0);
        self.cold + ((self.full - self.cold) as f64 * warm) as u32
    }
}

#[derive(Default)]
struct Shared {
    up: bool,
    /// The first call served after recovering: the warm-up's origin.
    first: Option<Instant>,
    /// The current slot (counted from `first`) and the calls it served.
    slot: u64,
    used: u32,
}

/// The service; dropping it stops it.
pub struct ColdService {
    pub addr: String,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ColdService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ColdService {
    /// Starts the service, down, on the runtime `rt`.
    pub fn start(rt: &tokio::runtime::Runtime, model: Warmup) -> ColdService {
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind the cold service");
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = shared.clone();
        let task = rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone(), model));
            }
        });
        ColdService { addr, shared, task }
    }

    /// Down again, and cold: every call fails until [`recover`](ColdService::recover).
    pub fn down(&self) {
        *self.shared.lock().unwrap() = Shared::default();
    }

    /// Up: the next call served starts the warm-up.
    pub fn recover(&self) {
        self.shared.lock().unwrap().up = true;
    }
}

/// Whether this call is served: down, none; up, the slot's first `capacity` calls.
fn admit(shared: &Mutex<Shared>, model: &Warmup) -> bool {
    let mut s = shared.lock().unwrap();
    if !s.up {
        return false;
    }
    let now = Instant::now();
    let since = now - *s.first.get_or_insert(now);
    let slot = (since.as_nanos() / model.slot.as_nanos()) as u64;
    if slot != s.slot {
        (s.slot, s.used) = (slot, 0);
    }
    if s.used < model.capacity(since) {
        s.used += 1;
        true
    } else {
        false
    }
}

async fn serve(stream: TcpStream, shared: Arc<Mutex<Shared>>, model: Warmup) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(_)) = lines.next_line().await {
        let answer: &[u8] = if admit(&shared, &model) { b"ok\n" } else { b"fail\n" };
        if write.write_all(answer).await.is_err() {
            return;
        }
    }
}

type Conn = (tokio::io::Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf);

/// A worker's connections to the service, reused: a call takes one (or opens one) and puts it
/// back when it completed, so a steady load keeps a few connections rather than opening one a
/// call.
#[derive(Clone)]
pub struct Pool {
    addr: Arc<str>,
    idle: Arc<Mutex<Vec<Conn>>>,
}

impl Pool {
    pub fn new(addr: &str) -> Pool {
        Pool { addr: addr.into(), idle: Arc::default() }
    }

    /// One call: `Ok` when the service served it, `Err` when it failed (or could not be asked).
    pub async fn call(&self) -> Result<(), String> {
        let conn = self.idle.lock().unwrap().pop();
        let (mut lines, mut write) = match conn {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(&*self.addr).await.map_err(|e| e.to_string())?;
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                (BufReader::new(read).lines(), write)
            }
        };
        write.write_all(b"c\n").await.map_err(|e| e.to_string())?;
        let line = lines.next_line().await.map_err(|e| e.to_string())?.ok_or("the service closed")?;
        self.idle.lock().unwrap().push((lines, write));
        if line == "ok" { Ok(()) } else { Err("over capacity".into()) }
    }
}
