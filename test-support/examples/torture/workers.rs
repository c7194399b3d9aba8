//! The worker processes of one run: this binary started with `--worker`, one per spec, killed
//! and started again by the nemesis, stopped at the end (every one still running is killed on
//! drop).

use crate::worker::Spec;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The worker processes; every one still running is killed on drop.
pub(crate) struct Workers {
    pub(crate) specs: Vec<Spec>,
    pub(crate) children: Vec<Option<Child>>,
    pub(crate) exe: std::path::PathBuf,
    pub(crate) dir: std::path::PathBuf,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Workers {
    pub(crate) fn spawn(&mut self, i: usize) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.stderr")))
            .map_err(|e| e.to_string())?;
        let child = Command::new(&self.exe)
            .args(self.specs[i].to_args())
            .env("REDIS_BREAKER_REPORTER_ID", format!("host-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("a worker: {e}"))?;
        self.children[i] = Some(child);
        Ok(())
    }

    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to each, then waits; answers the workers that did not stop within 15s or that
    /// exited with an error.
    pub(crate) async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for c in self.children.iter().flatten() {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for (i, slot) in self.children.iter_mut().enumerate() {
            let Some(mut c) = slot.take() else { continue };
            let started = std::time::Instant::now();
            loop {
                match c.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        problems.push(format!("worker {i} exited with {status}"));
                        break;
                    }
                    Ok(None) if started.elapsed() > Duration::from_secs(15) => {
                        problems.push(format!("worker {i} did not stop within 15s of SIGTERM"));
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        problems
    }
}
