//! Soak under hostile peers: a nestling server in its own process serves well-behaved
//! clients while peers that never read their replies come and go, and new connections
//! churn; the server's resident memory is sampled every 10 s. Not part of `cargo test`.
//!
//! ```text
//! cargo run --release --example soak_hostile -- --seconds 600
//! ```
//!
//! Options: `--seconds N` (default 600), `--slow N` (slow readers kept connected, default
//! 50), `--clients N` (well-behaved clients, default 16). Each slow reader pipelines
//! `echo` requests with 1 KB payloads and never reads: the server stops reading it at its
//! reply high-water mark (1 MiB) and closes it after the write-stall timeout (30 s); a new
//! one takes its place. Every 100 ms a fresh client connects, makes one call and leaves.
//! The well-behaved clients call `sum`, `echo` and a 100-item stream in a loop, checking
//! every answer. The exit status is non-zero if any well-behaved call failed.
//!
//! Each sample also shows the server's own accounting, from its debug line on every closed
//! connection: connections still open and bytes all of them hold (read buffers, queued
//! replies). Once the load stops, every peer goes away and both must come back to 0;
//! memory the process keeps after that is the allocator's, not held by nestling.

use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Default)]
struct Soak;

#[nestling::controller]
impl Soak {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("echo")]
    fn echo(&self, data: serde_json::Value) -> serde_json::Value {
        data
    }

    #[message_pattern("count")]
    fn count(&self, n: u64) -> impl Stream<Item = u64> {
        futures_util::stream::iter(1..=n)
    }
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().unwrap_or(default))
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--serve") {
        serve().await;
        return ExitCode::SUCCESS;
    }
    drive().await
}

/// The server process: prints `READY <port>`, serves until killed.
async fn serve() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "info,nestling_runtime::transport::tcp=debug",
        ))
        .init();
    let listening = nestling::Server::builder()
        .discover(false)
        .controller(Soak)
        .build()
        .expect("server")
        .listen("127.0.0.1:0")
        .await
        .expect("bind");
    println!("READY {}", listening.local_addr().port());
    listening.serve().await.expect("serve");
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    failed: AtomicU64,
    slow_opened: AtomicU64,
    slow_closed: AtomicU64,
    churned: AtomicU64,
    /// From the server's last "connection closed" line.
    server_open: AtomicU64,
    server_held: AtomicU64,
    /// The server's trims of freed heap memory (glibc), and the longest, in µs.
    trims: AtomicU64,
    trim_max_us: AtomicU64,
}

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Reads the server's log: its accounting goes into `counts`, the rest is passed on
/// (the debug line comes ten times a second, the warnings matter).
async fn watch_log(stderr: tokio::process::ChildStderr, counts: Arc<Counts>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("connection closed open=") {
            if let (Some(open), Some(held)) = (field(&line, "open"), field(&line, "held")) {
                counts.server_open.store(open, Relaxed);
                counts.server_held.store(held, Relaxed);
            }
        } else if line.contains("returned freed heap memory") {
            counts.trims.fetch_add(1, Relaxed);
            let took = field(&line, "took_us").unwrap_or(0);
            counts.trim_max_us.fetch_max(took, Relaxed);
        } else if !line.contains(" DEBUG ") {
            eprintln!("{line}");
        }
    }
}

async fn drive() -> ExitCode {
    let seconds = arg("--seconds", 600);
    let slow = arg("--slow", 50);
    let clients = arg("--clients", 16);
    let exe = std::env::current_exe().expect("own path");
    let mut server = tokio::process::Command::new(exe)
        .arg("--serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the server process");
    let pid = server.id().expect("pid");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let port = loop {
        let line = lines.next_line().await.expect("read").expect("READY line");
        if let Some(port) = line.strip_prefix("READY ") {
            break port.trim().to_owned();
        }
    };
    let addr = format!("127.0.0.1:{port}");
    let counts = Arc::new(Counts::default());
    let stderr = server.stderr.take().expect("stderr");
    tokio::spawn(watch_log(stderr, counts.clone()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    println!("soak: {seconds} s, {clients} well-behaved clients, {slow} slow readers, churn every 100 ms; server pid {pid}, RSS {:.1} MiB", rss_mib(pid));

    let mut load = tokio::task::JoinSet::new();
    for _ in 0..clients {
        load.spawn(well_behaved(addr.clone(), counts.clone()));
    }
    for _ in 0..slow {
        load.spawn(slow_reader(addr.clone(), counts.clone()));
    }
    load.spawn(churn(addr.clone(), counts.clone()));

    let started = Instant::now();
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let rss = rss_mib(pid);
        samples.push(rss);
        println!(
            "t={:>4}s server RSS {rss:>6.1} MiB | well-behaved ok {} failed {} | slow readers opened {} closed {} | churned {} | server: open {} held {:.1} MiB",
            started.elapsed().as_secs(),
            counts.ok.load(Relaxed),
            counts.failed.load(Relaxed),
            counts.slow_opened.load(Relaxed),
            counts.slow_closed.load(Relaxed),
            counts.churned.load(Relaxed),
            counts.server_open.load(Relaxed),
            mib(counts.server_held.load(Relaxed)),
        );
    }
    // Every peer leaves: the server must be back to no connection and nothing held.
    load.shutdown().await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "load stopped, 5 s later: server RSS {:.1} MiB | server: open {} held {} bytes | heap trims {} (longest {} µs)",
        rss_mib(pid),
        counts.server_open.load(Relaxed),
        counts.server_held.load(Relaxed),
        counts.trims.load(Relaxed),
        counts.trim_max_us.load(Relaxed),
    );
    let failed = counts.failed.load(Relaxed);
    let shown: Vec<String> = samples.iter().map(|s| format!("{s:.1}")).collect();
    println!("RSS samples (MiB, every 10 s): {}", shown.join(" "));
    println!(
        "well-behaved calls: {} answered, {failed} failed",
        counts.ok.load(Relaxed)
    );
    let _ = server.kill().await;
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Calls `sum`, `echo` (1 KB) and a 100-item stream in a loop, checking every answer.
async fn well_behaved(addr: String, counts: Arc<Counts>) {
    let client = nestling::Client::builder(addr)
        .request_timeout(Some(Duration::from_secs(10)))
        .build();
    let text = "y".repeat(1000);
    loop {
        let sum = client.send::<_, _, i64>("sum", &[1, 2, 3]).await;
        let echo = client.send::<_, _, String>("echo", &text).await;
        let items = match client.send_stream::<_, _, u64>("count", &100).await {
            Ok(stream) => stream.collect::<Vec<_>>().await,
            Err(e) => vec![Err(e)],
        };
        let good = matches!(sum, Ok(6))
            && echo.as_deref().is_ok_and(|e| e == text)
            && items.len() == 100
            && items.iter().all(Result::is_ok);
        if good {
            counts.ok.fetch_add(1, Relaxed);
        } else {
            counts.failed.fetch_add(1, Relaxed);
            eprintln!("well-behaved call failed: {sum:?} / {:?}", echo.err());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pipelines `echo` requests and never reads; when the server closes it, starts over.
async fn slow_reader(addr: String, counts: Arc<Counts>) {
    let json = format!(
        r#"{{"pattern":"echo","data":"{}","id":"1"}}"#,
        "x".repeat(1000)
    );
    let batch = format!("{}#{json}", json.len()).repeat(64).into_bytes();
    loop {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        let _ = socket.set_recv_buffer_size(4096);
        let Ok(stream) = socket.connect(addr.parse().expect("addr")).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        counts.slow_opened.fetch_add(1, Relaxed);
        let (_never_read, mut wr) = stream.into_split();
        while wr.write_all(&batch).await.is_ok() {}
        counts.slow_closed.fetch_add(1, Relaxed);
    }
}

/// Every 100 ms, a new client connects, makes one call and leaves.
async fn churn(addr: String, counts: Arc<Counts>) {
    loop {
        let client = nestling::Client::builder(addr.clone())
            .request_timeout(Some(Duration::from_secs(10)))
            .build();
        match client.send::<_, _, i64>("sum", &[4, 5]).await {
            Ok(9) => counts.churned.fetch_add(1, Relaxed),
            other => {
                eprintln!("churn call failed: {other:?}");
                counts.failed.fetch_add(1, Relaxed)
            }
        };
        drop(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
