//! `--memory`: what one connection costs a server in resident memory, idle and busy.
//!
//! For every server and connection count the server is started alone (a fresh process per
//! count, so one count's freed memory does not hide the next one's), serves a few requests
//! on one connection that then closes, and settles: that resident set (`VmRSS` of the
//! server's process only; the clients live in this process) is the baseline. Then:
//!
//! 1. **fresh**: N connections are opened (in batches of at most 500, under the listen
//!    backlog) and send nothing; RSS once it stops moving.
//! 2. **idle after work**: every connection sends one `sum` of a ~1 KiB array and reads
//!    its reply (which also proves the server accepted it), then stays quiet; RSS once it
//!    stops moving. This is the state "idle" means: the connection did work and its
//!    buffers should have been given back.
//! 3. **busy**: every connection keeps 4 such requests in flight, replacing each reply at
//!    once; RSS is sampled while that runs (the median of the samples).
//!
//! Each figure is (RSS − baseline) / N, in bytes per connection.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::cost::Launches;
use crate::loadgen::SumRequest;
use crate::procs::ServerProc;
use crate::wire;

/// Connections opened at once: below the servers' listen backlog (511).
const CONNECT_BATCH: usize = 500;
/// `sum` payload of the work and busy phases (bytes of the array's JSON).
const PAYLOAD: usize = 1024;
/// Requests each connection keeps in flight while busy.
const BUSY_INFLIGHT: usize = 4;
/// Requests served on one connection before the baseline is taken.
const WARMUP_REQUESTS: u64 = 200;
/// How long busy traffic runs before RSS is sampled, and how long it is sampled.
const BUSY_RAMP: Duration = Duration::from_millis(1500);
const BUSY_SAMPLES: usize = 8;
const BUSY_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// One server at one connection count.
pub struct MemoryRow {
    pub server: &'static str,
    pub conns: usize,
    pub baseline_kib: u64,
    pub fresh_kib: u64,
    pub idle_kib: u64,
    pub busy_kib: u64,
    /// `RssAnon` (heap and stacks, no file pages) at the idle point, and at the baseline.
    pub idle_anon_kib: u64,
    pub baseline_anon_kib: u64,
    /// Replies per second during the busy sampling, and the connections that got none.
    pub busy_rate: f64,
    pub busy_starved: usize,
}

impl MemoryRow {
    fn per_conn(&self, kib: u64) -> i64 {
        (kib as i64 - self.baseline_kib as i64) * 1024 / self.conns as i64
    }
}

/// Runs the memory measurement against every launchable server for every count in
/// `counts`, and prints the table.
pub async fn run(
    launches: Launches,
    counts: &[usize],
    pin: Option<&'static str>,
) -> Result<(), String> {
    let most = counts.iter().copied().max().unwrap_or(0);
    raise_fd_limit(most + 1_000)?;
    let started = Instant::now();
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for (label, launch) in launches {
        let launch = match launch {
            Ok(l) => l,
            Err(e) => {
                println!("-- {label}: skipped ({e})");
                skipped.push(format!("{label}: {e}"));
                continue;
            }
        };
        for &n in counts {
            println!("-- {label}, {n} connections");
            let server = ServerProc::start(
                label,
                &launch.program,
                &launch.args,
                launch.cwd.as_deref(),
                pin,
                Duration::from_secs(30),
            )?;
            match measure(label, server, n).await {
                Ok(row) => {
                    println!(
                        "   baseline {} KiB; per connection: fresh {} B, idle after work {} B, busy {} B ({:.0} req/s)",
                        row.baseline_kib,
                        row.per_conn(row.fresh_kib),
                        row.per_conn(row.idle_kib),
                        row.per_conn(row.busy_kib),
                        row.busy_rate
                    );
                    rows.push(row);
                }
                Err(e) => {
                    println!("   failed: {e}");
                    skipped.push(format!("{label} × {n}: {e}"));
                }
            }
        }
    }
    println!();
    print!("{}", table(&rows));
    for s in &skipped {
        println!("not measured: {s}");
    }
    println!("memory mode took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The markdown table of the rows.
fn table(rows: &[MemoryRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| server | connections | baseline RSS (KiB) | fresh (B/conn) | idle after work (B/conn) | busy (B/conn) | idle, RssAnon only (B/conn) | busy req/s |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|\n");
    for r in rows {
        let anon = (r.idle_anon_kib as i64 - r.baseline_anon_kib as i64) * 1024 / r.conns as i64;
        let starved = if r.busy_starved > 0 {
            format!(" ({} idle)", r.busy_starved)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0}{} |\n",
            r.server,
            group(r.conns as i64),
            group(r.baseline_kib as i64),
            group(r.per_conn(r.fresh_kib)),
            group(r.per_conn(r.idle_kib)),
            group(r.per_conn(r.busy_kib)),
            group(anon),
            r.busy_rate,
            starved
        ));
    }
    out
}

/// `12345` → `12,345`.
fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

async fn measure(
    label: &'static str,
    mut server: ServerProc,
    n: usize,
) -> Result<MemoryRow, String> {
    let addr = server.addr();
    let req = Arc::new(SumRequest::of_size(PAYLOAD));
    // Baseline: the server has served requests (its code paths and pools are warm), and
    // the connection that did so is gone.
    {
        let mut conn = Conn::open(&addr).await?;
        for _ in 0..WARMUP_REQUESTS {
            conn.call(&req).await?;
        }
    }
    let (baseline_kib, baseline_anon_kib) = settled(&server, Duration::from_millis(1500)).await?;

    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        let batch = (n - conns.len()).min(CONNECT_BATCH);
        let mut set = JoinSet::new();
        for _ in 0..batch {
            let addr = addr.clone();
            set.spawn(async move { Conn::open(&addr).await });
        }
        while let Some(opened) = set.join_next().await {
            conns.push(opened.map_err(|e| e.to_string())??);
        }
    }
    let (fresh_kib, _) = settled(&server, Duration::from_secs(1)).await?;
    alive(&mut server)?;

    // One request on every connection, then quiet.
    let mut set = JoinSet::new();
    for mut conn in conns.drain(..) {
        let req = req.clone();
        set.spawn(async move { conn.call(&req).await.map(|()| conn) });
    }
    while let Some(done) = set.join_next().await {
        conns.push(done.map_err(|e| e.to_string())??);
    }
    let (idle_kib, idle_anon_kib) = settled(&server, Duration::from_secs(1)).await?;
    alive(&mut server)?;

    // Busy: every connection with requests in flight, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let mut counters = Vec::with_capacity(n);
    let mut set = JoinSet::new();
    for conn in conns.drain(..) {
        let (req, stop) = (req.clone(), stop.clone());
        let replies = Arc::new(AtomicU64::new(0));
        counters.push(replies.clone());
        set.spawn(conn.busy(req, stop, replies));
    }
    tokio::time::sleep(BUSY_RAMP).await;
    let before: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let window = Instant::now();
    let mut samples = Vec::with_capacity(BUSY_SAMPLES);
    for _ in 0..BUSY_SAMPLES {
        samples.push(server.rss_kib().ok_or("server's RSS unreadable")?);
        tokio::time::sleep(BUSY_SAMPLE_EVERY).await;
    }
    let elapsed = window.elapsed().as_secs_f64();
    let after: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    stop.store(true, Ordering::Relaxed);
    alive(&mut server)?;
    let served: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    let busy_starved = after.iter().zip(&before).filter(|(a, b)| a == b).count();
    samples.sort_unstable();
    let busy_kib = samples[samples.len() / 2];
    // A busy connection whose task failed (the server closed it) is an error of the run.
    set.abort_all();
    while let Some(done) = set.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(format!("{label}: busy connection failed: {e}"));
        }
    }
    // The server goes first: its side of each connection takes the TIME_WAIT, and this
    // process's ports are free for the next run at once.
    drop(server);
    Ok(MemoryRow {
        server: label,
        conns: n,
        baseline_kib,
        fresh_kib,
        idle_kib,
        busy_kib,
        idle_anon_kib,
        baseline_anon_kib,
        busy_rate: served as f64 / elapsed,
        busy_starved,
    })
}

fn alive(server: &mut ServerProc) -> Result<(), String> {
    match server.exited() {
        Some(status) => Err(format!(
            "{} exited ({status}); last output:\n{}",
            server.name,
            server.tail_text()
        )),
        None => Ok(()),
    }
}

/// The server's (VmRSS, RssAnon) in KiB once it stops moving: at least `min` after now,
/// then until two readings 250 ms apart differ by at most 1 % (at most 10 s).
async fn settled(server: &ServerProc, min: Duration) -> Result<(u64, u64), String> {
    tokio::time::sleep(min).await;
    let until = Instant::now() + Duration::from_secs(10);
    let mut last = rss(server.pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss(server.pid)?;
        if now.0.abs_diff(last.0) * 100 <= last.0 || Instant::now() > until {
            return Ok(now);
        }
        last = now;
    }
}

/// (VmRSS, RssAnon) of `pid` in KiB.
fn rss(pid: u32) -> Result<(u64, u64), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| format!("no {key} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("RssAnon:")?))
}

/// Raises this process's open-file limit to at least `need` (children inherit it): the
/// soft limit up to the hard one, and the hard one too if that is short (as root).
fn raise_fd_limit(need: usize) -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
    let (soft, hard) = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| {
            let mut f = rest.split_whitespace();
            let parse = |s: Option<&str>| match s? {
                "unlimited" => Some(usize::MAX),
                v => v.parse::<usize>().ok(),
            };
            Some((parse(f.next())?, parse(f.next())?))
        })
        .ok_or("cannot read the open-file limit")?;
    if soft >= need {
        return Ok(());
    }
    let want = need.max(soft).min(usize::MAX / 2);
    let (new_soft, new_hard) = if hard >= need {
        (hard, hard)
    } else {
        (want, want)
    };
    let out = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={new_soft}:{new_hard}"))
        .output()
        .map_err(|e| format!("prlimit not runnable: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "open-file limit {soft} (hard {hard}) is below {need} and prlimit failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    println!("open-file limit raised from {soft} to {new_soft}");
    Ok(())
}

/// A reply frame, decoded just enough to check it.
#[derive(Deserialize)]
struct Reply<'a> {
    response: Option<i64>,
    #[serde(borrow)]
    err: Option<&'a RawValue>,
}

/// One raw client connection speaking Nest's framing.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Conn {
    async fn open(addr: &str) -> Result<Conn, String> {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connect to {addr} timed out"))?
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            next_id: 1,
        })
    }

    fn push(&mut self, out: &mut Vec<u8>, req: &SumRequest) {
        wire::push_request(out, &req.prefix, self.next_id);
        self.next_id += 1;
    }

    /// Reads until at least one whole reply frame is buffered; checks and counts every
    /// whole reply, and keeps what follows them.
    async fn replies(&mut self, req: &SumRequest) -> Result<u64, String> {
        loop {
            let mut at = 0;
            let mut count = 0;
            while let Some((start, end)) = wire::next_frame(&self.buf[at..])
                .map_err(|e| format!("bad reply frame: {}", e.0))?
            {
                let body = &self.buf[at + start..at + end];
                let reply: Reply =
                    serde_json::from_slice(body).map_err(|e| format!("undecodable reply ({e})"))?;
                if reply.err.is_some() || reply.response != Some(req.expected) {
                    return Err(format!("wrong reply: {}", String::from_utf8_lossy(body)));
                }
                at += end;
                count += 1;
            }
            self.buf.drain(..at);
            if count > 0 {
                return Ok(count);
            }
            self.buf.reserve(4096);
            match tokio::time::timeout(Duration::from_secs(30), self.stream.read_buf(&mut self.buf))
                .await
            {
                Err(_) => return Err("no reply within 30 s".into()),
                Ok(Ok(0)) => return Err("connection closed by the server".into()),
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// One request, and its reply.
    async fn call(&mut self, req: &SumRequest) -> Result<(), String> {
        let mut out = Vec::new();
        self.push(&mut out, req);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.replies(req).await.map(drop)?;
        // Nothing of this connection is kept in this process while it is quiet.
        self.buf = Vec::new();
        Ok(())
    }

    /// Keeps `BUSY_INFLIGHT` requests in flight until `stop`, counting replies.
    async fn busy(
        mut self,
        req: Arc<SumRequest>,
        stop: Arc<AtomicBool>,
        replies: Arc<AtomicU64>,
    ) -> Result<(), String> {
        let mut out = Vec::new();
        for _ in 0..BUSY_INFLIGHT {
            self.push(&mut out, &req);
        }
        loop {
            self.stream
                .write_all(&out)
                .await
                .map_err(|e| format!("write: {e}"))?;
            out.clear();
            let got = self.replies(&req).await?;
            replies.fetch_add(got, Ordering::Relaxed);
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            for _ in 0..got {
                self.push(&mut out, &req);
            }
        }
    }
}
