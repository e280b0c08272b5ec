//! A child process's output stream, collected line by line in the background.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use tokio::time::Instant;

/// Lines of one output stream, collected in the background.
#[derive(Clone)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    /// Bumped on every new line; closed (sender dropped) at end of stream.
    changed: watch::Receiver<usize>,
}

impl Lines {
    /// Starts collecting `reader`'s lines on a background task.
    pub(super) fn collect(reader: impl AsyncRead + Unpin + Send + 'static) -> Self {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(0usize);
        let sink = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        let n = {
                            let mut all = sink.lock().unwrap();
                            all.push(line);
                            all.len()
                        };
                        let _ = tx.send(n);
                    }
                }
            }
            // Dropping `tx` tells waiters the stream ended.
        });
        Self { lines, changed: rx }
    }

    /// Every line so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines so far that satisfy `pred`.
    pub fn matching(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        self.snapshot().into_iter().filter(|l| pred(l)).collect()
    }

    /// Waits until at least `count` lines satisfy `pred` and returns all matching lines.
    /// Errors (with a description) on timeout or when the stream ends first.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&str) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.changed.clone();
        loop {
            rx.borrow_and_update();
            let found = self.matching(&pred);
            if found.len() >= count {
                return Ok(found);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => {
                    let found = self.matching(&pred);
                    if found.len() >= count {
                        return Ok(found);
                    }
                    return Err(format!(
                        "the stream ended with {} of {count} expected lines",
                        found.len()
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "timed out after {timeout:?} with {} of {count} expected lines",
                        self.matching(&pred).len()
                    ))
                }
            }
        }
    }
}
