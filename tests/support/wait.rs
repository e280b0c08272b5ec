//! How long the tests wait, and polling shared state until it holds.

use std::time::Duration;

use tokio::time::Instant;

/// How long a process may take to print `READY <port>`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Default deadline for waiting on an output line or an HTTP reply.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

/// Polls `probe` until it returns `Some`, for at most `timeout`; `None` on timeout.
pub async fn eventually<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
