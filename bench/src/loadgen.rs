//! The load generator: raw tokio `TcpStream`s speaking Nest's wire with the bench's own
//! framing ([`crate::wire`]), closed-loop and pipelined; plus the same loop driven through
//! `nestling::Client` for the client-side scenario.
//!
//! Every loop is bounded: no new request is sent after `end`, and nothing is awaited after
//! `drain_deadline` (what is still outstanding then is counted as an error).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use crate::procs::EVENT_TEXT;
use crate::wire;

/// The phases of one run: warm-up until `measure_start`, measurement until `end`, then
/// draining of outstanding requests until `drain_deadline` at the latest.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub measure_start: Instant,
    pub end: Instant,
    pub drain_deadline: Instant,
    /// At most this many requests (events: batches) per connection; `u64::MAX` for the
    /// timed runs. The cost mode drives a fixed count this way.
    pub limit: u64,
}

impl Times {
    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_start && t < self.end
    }
}

/// What one worker (connection or client task) measured.
pub struct Stats {
    /// Latency in nanoseconds of the requests completed inside the window.
    pub hist: Histogram<u64>,
    /// Requests completed correctly inside the window (events: events acknowledged).
    pub completed: u64,
    /// Error replies, wrong answers, unknown ids, broken connections and requests still
    /// outstanding at the drain deadline, over the whole run (warm-up included).
    pub errors: u64,
    /// Events written (whole run).
    pub events_sent: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
}

impl Stats {
    pub fn new() -> Self {
        Stats {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            completed: 0,
            errors: 0,
            events_sent: 0,
            first_error: None,
        }
    }

    pub fn error(&mut self, n: u64, what: impl FnOnce() -> String) {
        self.errors += n;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    pub fn merge(&mut self, other: Stats) {
        let _ = self.hist.add(&other.hist);
        self.completed += other.completed;
        self.errors += other.errors;
        self.events_sent += other.events_sent;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// A reply frame, decoded just enough to check it.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    response: Option<i64>,
    #[serde(borrow)]
    err: Option<&'a RawValue>,
}

/// Opens a loopback connection with `TCP_NODELAY`.
pub async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A `sum` request body: the fixed prefix and the answer the server must give.
pub struct SumRequest {
    pub prefix: Vec<u8>,
    pub expected: i64,
    /// Size of the `data` JSON text in bytes.
    pub data_bytes: usize,
}

impl SumRequest {
    /// `[1,2,3]`, the tutorial's call.
    pub fn small() -> Self {
        Self::from_numbers(&[1, 2, 3])
    }

    /// An array of small integers whose JSON text is at least `bytes` long. The numbers
    /// stay small so the sum is exact in a JS double too.
    pub fn of_size(bytes: usize) -> Self {
        let mut nums = Vec::new();
        let mut len = 1; // `[`
        let mut i = 0i64;
        while len < bytes {
            let n = (i * 7919) % 1000;
            len += n.to_string().len() + 1; // digits and `,` or `]`
            nums.push(n);
            i += 1;
        }
        Self::from_numbers(&nums)
    }

    fn from_numbers(nums: &[i64]) -> Self {
        let data = serde_json::to_string(nums).expect("numbers serialise");
        SumRequest {
            prefix: wire::sum_prefix(&data),
            expected: nums.iter().sum(),
            data_bytes: data.len(),
        }
    }
}

/// Closed loop on one connection with `inflight` requests outstanding at all times: every
/// reply is checked and immediately replaced by a new request until `end` (or until
/// `t.limit` requests were sent).
pub async fn request_worker(
    mut stream: TcpStream,
    req: Arc<SumRequest>,
    inflight: usize,
    t: Times,
) -> Stats {
    request_loop(&mut stream, &req, inflight, t).await
}

/// [`request_worker`] on a borrowed stream (the cost mode reuses its connections).
pub async fn request_loop(
    stream: &mut TcpStream,
    req: &SumRequest,
    inflight: usize,
    t: Times,
) -> Stats {
    let mut st = Stats::new();
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(inflight * 2);
    let mut next_id = 1u64;
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let now = Instant::now();
    for _ in 0..(inflight as u64).min(t.limit) {
        wire::push_request(&mut wbuf, &req.prefix, next_id);
        sent.insert(next_id, now);
        next_id += 1;
    }
    if let Err(e) = stream.write_all(&wbuf).await {
        st.error(sent.len() as u64, || format!("write: {e}"));
        return st;
    }
    wbuf.clear();
    while !sent.is_empty() {
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(64 * 1024);
        }
        match timeout_at(t.drain_deadline, stream.read_buf(&mut rbuf)).await {
            Err(_) => {
                st.error(sent.len() as u64, || {
                    "no reply before the drain deadline".into()
                });
                return st;
            }
            Ok(Ok(0)) => {
                st.error(sent.len() as u64, || {
                    "connection closed by the server".into()
                });
                return st;
            }
            Ok(Err(e)) => {
                st.error(sent.len() as u64, || format!("read: {e}"));
                return st;
            }
            Ok(Ok(_)) => {}
        }
        let now = Instant::now();
        let mut at = 0;
        loop {
            let (start, end) = match wire::next_frame(&rbuf[at..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    st.error(sent.len() as u64, || format!("bad reply frame: {}", e.0));
                    return st;
                }
            };
            let body = &rbuf[at + start..at + end];
            at += end;
            let reply = match serde_json::from_slice::<Reply>(body) {
                Ok(r) => r,
                Err(e) => {
                    st.error(1, || {
                        format!("undecodable reply ({e}): {}", String::from_utf8_lossy(body))
                    });
                    continue;
                }
            };
            let Some(t0) = reply
                .id
                .and_then(wire::parse_id)
                .and_then(|id| sent.remove(&id))
            else {
                st.error(1, || {
                    format!(
                        "reply with an unknown id: {}",
                        String::from_utf8_lossy(body)
                    )
                });
                continue;
            };
            if reply.err.is_some() || reply.response != Some(req.expected) {
                st.error(1, || {
                    format!("wrong reply: {}", String::from_utf8_lossy(body))
                });
            } else if t.in_window(now) {
                st.completed += 1;
                st.hist
                    .saturating_record(now.duration_since(t0).as_nanos() as u64);
            }
            // `next_id - 1` requests were sent so far.
            if now < t.end && next_id <= t.limit {
                wire::push_request(&mut wbuf, &req.prefix, next_id);
                sent.insert(next_id, now);
                next_id += 1;
            }
        }
        rbuf.drain(..at);
        if !wbuf.is_empty() {
            match timeout_at(t.drain_deadline, stream.write_all(&wbuf)).await {
                Ok(Ok(())) => wbuf.clear(),
                Ok(Err(e)) => {
                    st.error(sent.len() as u64, || format!("write: {e}"));
                    return st;
                }
                Err(_) => {
                    st.error(sent.len() as u64, || {
                        "write blocked past the deadline".into()
                    });
                    return st;
                }
            }
        }
    }
    st
}

/// Floods `log` events on one connection, as fast as the server takes them: batches of
/// `batch` events, each followed by a `sum([])` "barrier" request, with at most
/// `outstanding` batches unacknowledged. A barrier's reply proves the server has read every
/// event before it on that connection, so `completed` (events whose barrier came back in
/// the window) measures what the server absorbed, not what sat in socket buffers.
/// At most `t.limit` batches are sent.
/// With `quiet`, the events are `tally` (handlers that only count) instead of `log`.
pub async fn events_worker(
    mut stream: TcpStream,
    batch: usize,
    outstanding: usize,
    quiet: bool,
    t: Times,
) -> Stats {
    events_loop(&mut stream, batch, outstanding, quiet, t).await
}

/// [`events_worker`] on a borrowed stream (the cost mode reuses its connections).
pub async fn events_loop(
    stream: &mut TcpStream,
    batch: usize,
    outstanding: usize,
    quiet: bool,
    t: Times,
) -> Stats {
    let mut st = Stats::new();
    let pattern = if quiet { "tally" } else { "log" };
    let event_json = format!(r#"{{"pattern":"{pattern}","data":"{EVENT_TEXT}"}}"#);
    let mut batch_bytes = Vec::new();
    for _ in 0..batch {
        wire::push_frame(&mut batch_bytes, event_json.as_bytes());
    }
    let barrier = wire::sum_prefix("[]");
    let mut pending: VecDeque<u64> = VecDeque::with_capacity(outstanding);
    let mut next_id = 1u64;
    let mut batches = 0u64;
    let mut wbuf: Vec<u8> = Vec::with_capacity(batch_bytes.len() * outstanding + 256);
    let mut rbuf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut queue = |wbuf: &mut Vec<u8>, pending: &mut VecDeque<u64>, st: &mut Stats| {
        wbuf.extend_from_slice(&batch_bytes);
        wire::push_request(wbuf, &barrier, next_id);
        pending.push_back(next_id);
        next_id += 1;
        st.events_sent += batch as u64;
    };
    for _ in 0..(outstanding as u64).min(t.limit) {
        queue(&mut wbuf, &mut pending, &mut st);
        batches += 1;
    }
    loop {
        if !wbuf.is_empty() {
            match timeout_at(t.drain_deadline, stream.write_all(&wbuf)).await {
                Ok(Ok(())) => wbuf.clear(),
                Ok(Err(e)) => {
                    st.error(1, || format!("write: {e}"));
                    return st;
                }
                Err(_) => {
                    st.error(1, || "write blocked past the deadline".into());
                    return st;
                }
            }
        }
        if pending.is_empty() {
            return st;
        }
        match timeout_at(t.drain_deadline, stream.read_buf(&mut rbuf)).await {
            Err(_) => {
                st.error(pending.len() as u64, || {
                    "no barrier reply before the deadline".into()
                });
                return st;
            }
            Ok(Ok(0)) => {
                st.error(pending.len() as u64, || {
                    "connection closed by the server".into()
                });
                return st;
            }
            Ok(Err(e)) => {
                st.error(pending.len() as u64, || format!("read: {e}"));
                return st;
            }
            Ok(Ok(_)) => {}
        }
        let now = Instant::now();
        let mut at = 0;
        loop {
            let (start, end) = match wire::next_frame(&rbuf[at..]) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    st.error(pending.len() as u64, || format!("bad reply frame: {}", e.0));
                    return st;
                }
            };
            let body = &rbuf[at + start..at + end];
            at += end;
            let id = serde_json::from_slice::<Reply>(body)
                .ok()
                .filter(|r| r.err.is_none() && r.response == Some(0))
                .and_then(|r| r.id.and_then(wire::parse_id));
            // Replies may overtake each other (servers answer concurrently dispatched
            // requests as they finish); any barrier acknowledges its own batch.
            match id.and_then(|id| pending.iter().position(|&p| p == id)) {
                Some(i) => {
                    pending.remove(i);
                    if t.in_window(now) {
                        st.completed += batch as u64;
                    }
                    if now < t.end && batches < t.limit {
                        queue(&mut wbuf, &mut pending, &mut st);
                        batches += 1;
                    }
                }
                None => st.error(1, || {
                    format!(
                        "unexpected barrier reply: {}",
                        String::from_utf8_lossy(body)
                    )
                }),
            }
        }
        rbuf.drain(..at);
    }
}

/// How many `tally` events the server at `addr` has handled: one `tallied` request on a
/// connection of its own.
pub async fn tallied(addr: &str) -> Result<u64, String> {
    let mut stream = connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let mut out = Vec::new();
    wire::push_frame(&mut out, br#"{"pattern":"tallied","id":"1"}"#);
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut rbuf = Vec::with_capacity(256);
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(Some((start, end))) = wire::next_frame(&rbuf) {
            #[derive(serde::Deserialize)]
            struct Count {
                response: Option<u64>,
            }
            return serde_json::from_slice::<Count>(&rbuf[start..end])
                .ok()
                .and_then(|c| c.response)
                .ok_or_else(|| {
                    format!(
                        "tallied: unexpected reply {}",
                        String::from_utf8_lossy(&rbuf[start..end])
                    )
                });
        }
        match timeout_at(deadline, stream.read_buf(&mut rbuf)).await {
            Ok(Ok(0)) => return Err("tallied: connection closed".into()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("tallied: {e}")),
            Err(_) => return Err("tallied: no reply within 10 s".into()),
        }
    }
}

/// One caller looping `client.send("sum", [1,2,3])` through a shared `nestling::Client`.
pub async fn client_worker(client: nestling::Client, t: Times) -> Stats {
    let mut st = Stats::new();
    let data = [1i64, 2, 3];
    // One timer for the whole loop, not one per call: the raw generator's loop arms one
    // per read (a batch of replies), and a timer per call would be the bench's cost
    // counted against the client.
    let deadline = tokio::time::sleep_until(t.drain_deadline);
    tokio::pin!(deadline);
    loop {
        let t0 = Instant::now();
        if t0 >= t.end {
            return st;
        }
        let reply = tokio::select! {
            biased;
            reply = client.send::<_, _, i64>("sum", &data) => Ok(reply),
            _ = &mut deadline => Err(()),
        };
        match reply {
            Ok(Ok(6)) => {
                let now = Instant::now();
                if t.in_window(now) {
                    st.completed += 1;
                    st.hist
                        .saturating_record(now.duration_since(t0).as_nanos() as u64);
                }
            }
            Ok(Ok(other)) => st.error(1, || format!("wrong reply: {other}")),
            Ok(Err(e)) => st.error(1, || format!("client error: {e}")),
            Err(_) => {
                st.error(1, || "no reply before the drain deadline".into());
                return st;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_sizes() {
        let small = SumRequest::small();
        assert_eq!(small.expected, 6);
        let k1 = SumRequest::of_size(1024);
        assert!((1024..1030).contains(&k1.data_bytes), "{}", k1.data_bytes);
        let k64 = SumRequest::of_size(64 * 1024);
        assert!(
            (65536..65542).contains(&k64.data_bytes),
            "{}",
            k64.data_bytes
        );
        assert!(k64.expected < (1 << 53));
    }
}
