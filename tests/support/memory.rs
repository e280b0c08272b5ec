//! A process's resident memory, read from `/proc/<pid>/status` (Linux).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// `VmRSS` of process `pid` in KiB; `None` when it cannot be read (the process is gone,
/// or not on Linux).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The highest resident memory of a process, sampled every 100 ms until dropped.
pub struct RssPeak {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssPeak {
    /// Starts sampling `pid`.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let task = tokio::spawn({
            let peak = peak.clone();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(now) = rss_kib(pid) {
                        peak.fetch_max(now, Ordering::Relaxed);
                    }
                }
            }
        });
        RssPeak { peak, task }
    }

    /// The highest sample so far, in KiB.
    pub fn kib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssPeak {
    fn drop(&mut self) {
        self.task.abort();
    }
}
