//! nestling's `tracing` output in tests: routed to the test's captured output
//! ([`init_tracing`]), or captured as text for assertions ([`capture_tracing`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::wait::eventually;

/// Routes nestling's `tracing` output to the test's captured output (`RUST_LOG`, default
/// `warn`). Safe to call from every test.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The `tracing` output of this test process, captured as text so a test can assert that a
/// reason was logged. Install it with [`capture_tracing`]; do not combine it with
/// [`init_tracing`] in the same test binary (only one global subscriber can exist).
#[derive(Clone)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

/// One `io::Write` handle into a [`LogCapture`] (the fmt layer writes each event at once).
pub struct LogCaptureWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogCaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test process) a global subscriber that writes every event of the
/// `nestling*` crates at DEBUG and above, and WARN and above of everything else, without
/// colours, into a shared buffer; returns a handle to that buffer. Panics if another global
/// subscriber was installed first.
pub fn capture_tracing() -> LogCapture {
    static CAPTURE: OnceLock<LogCapture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = buf.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "warn,nestling=debug,nestling_runtime=debug",
                ))
                .with_ansi(false)
                .with_writer(move || LogCaptureWriter(sink.clone()))
                .try_init()
                .expect("capture_tracing: another global tracing subscriber is already set");
            LogCapture { buf }
        })
        .clone()
}

impl LogCapture {
    /// Every line logged so far (by every test of this process).
    pub fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned();
        text.lines().map(str::to_owned).collect()
    }

    /// Lines logged so far that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.lines().into_iter().filter(|l| pred(l)).collect()
    }

    /// Lines carrying the field `peer=<addr>` (nestling's server logs name the peer that way),
    /// i.e. what the server logged about one client connection.
    pub fn for_peer(&self, addr: SocketAddr) -> Vec<String> {
        let field = format!("peer={addr}");
        self.matching(|l| {
            l.match_indices(&field)
                .any(|(at, _)| !l[at + field.len()..].starts_with(|c: char| c.is_ascii_digit()))
        })
    }

    /// Waits until some line satisfies `pred` and returns it; `None` after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        eventually(timeout, || self.lines().into_iter().find(|l| pred(l))).await
    }
}
