//! Soak test: many client connections with mixed traffic against one in-process server,
//! watching memory (RSS) and counting every failure by kind.
//!
//! ```text
//! cargo run --release --example soak -- --seconds 600 --connections 10000
//! ```
//!
//! Options (all optional): `--seconds N` (default 600), `--connections N` (10,000),
//! `--drivers N` (tasks generating traffic, default 128), `--batch N` (connections opened
//! at once while connecting, default 500), `--big-permille N` (operations per thousand that
//! carry a ~64 KiB payload, half `sum` and half `log`, default 4; 0 turns them off).
//!
//! The server (on 127.0.0.1, an ephemeral port) serves `sum` and a `log` event. Each of the
//! N clients is its own `nestling::Client`, i.e. its own TCP connection. The drivers share
//! the clients out round-robin and, until the time is up, send `sum` with small arrays
//! (every result is checked), emit `log`, and now and then send a ~64 KiB `sum` or `log`.
//! RSS is printed at start, after connecting, every 10 s and at the end. The exit status is
//! non-zero if any call failed, any sum was wrong, or the server did not receive every
//! event that was emitted.
//!
//! Each connection costs two descriptors in this process (client and server side), so the
//! open-file limit (`ulimit -n`) must be at least `connections * 2 + 100`.
//!
//! Connecting: nestling's listener is bound with an accept backlog of 511, as Nest's (Node's
//! default; the kernel caps it at `net.core.somaxconn`), not tokio's default of 128. A batch
//! of more than ~511 simultaneous connects can overflow it, and the kernel's SYN retransmit
//! then makes such a batch take about 1 s; the default `--batch 500` stays within it.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nestling::{Client, ClientError, Server};

/// What the server saw; shared between the controller and the report.
#[derive(Default)]
struct ServerStats {
    sums: AtomicU64,
    events: AtomicU64,
    event_bytes: AtomicU64,
}

struct SoakController {
    stats: Arc<ServerStats>,
}

#[nestling::controller]
impl SoakController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        self.stats.sums.fetch_add(1, Relaxed);
        nums.iter().sum()
    }

    #[event_pattern("log")]
    fn log(&self, text: String) {
        self.stats.events.fetch_add(1, Relaxed);
        self.stats.event_bytes.fetch_add(text.len() as u64, Relaxed);
    }
}

struct Args {
    seconds: u64,
    connections: usize,
    drivers: usize,
    batch: usize,
    big_permille: u64,
}

const USAGE: &str =
    "usage: soak [--seconds N] [--connections N] [--drivers N] [--batch N] [--big-permille N]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 600,
        connections: 10_000,
        drivers: 128,
        batch: 500,
        big_permille: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(USAGE.into());
        }
        let value = match inline.or_else(|| it.next()) {
            Some(v) => v,
            None => return Err(format!("{name} needs a value\n{USAGE}")),
        };
        let number = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: expected a whole number, got {v:?}\n{USAGE}"))
        };
        match name.as_str() {
            "--seconds" => args.seconds = number(&value)?,
            "--connections" => args.connections = number(&value)? as usize,
            "--drivers" => args.drivers = number(&value)? as usize,
            "--batch" => args.batch = number(&value)? as usize,
            "--big-permille" => args.big_permille = number(&value)?.min(1000),
            _ => return Err(format!("unknown option {name}\n{USAGE}")),
        }
    }
    if args.connections == 0 || args.drivers == 0 || args.batch == 0 {
        return Err(format!(
            "--connections, --drivers and --batch must be at least 1\n{USAGE}"
        ));
    }
    args.drivers = args.drivers.min(args.connections);
    Ok(args)
}

/// Soft open-file limit of this process, from /proc/self/limits.
fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line["Max open files".len()..].split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// (VmRSS, VmHWM) in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn print_memory(when: &str) {
    let (rss, hwm) = memory();
    println!(
        "[mem] {when}: VmRSS {:.1} MiB, VmHWM {:.1} MiB, open fds {}",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        open_fds()
    );
}

/// Client-side counters.
#[derive(Default)]
struct Stats {
    sum_ok: AtomicU64,
    big_sum_ok: AtomicU64,
    emit_ok: AtomicU64,
    big_emit_ok: AtomicU64,
    wrong_sum: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    first_errors: Mutex<Vec<String>>,
}

impl Stats {
    fn ok(&self) -> u64 {
        self.sum_ok.load(Relaxed)
            + self.big_sum_ok.load(Relaxed)
            + self.emit_ok.load(Relaxed)
            + self.big_emit_ok.load(Relaxed)
    }
    fn error_count(&self) -> u64 {
        self.errors.lock().unwrap().values().sum::<u64>() + self.wrong_sum.load(Relaxed)
    }
    fn error(&self, kind: &'static str, detail: String) {
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 10 {
            first.push(format!("{kind}: {detail}"));
        }
    }
    fn client_error(&self, op: &'static str, e: &ClientError) {
        let kind = match e {
            ClientError::Connect { .. } => "connect",
            ClientError::Unavailable { .. } => "unavailable",
            ClientError::ConnectTimeout { .. } => "connect_timeout",
            ClientError::ConnectionClosed { .. } => "connection_closed",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Remote { .. } => "remote",
            ClientError::EmptyReply { .. } => "empty_reply",
            ClientError::Encode { .. } => "encode",
            ClientError::Decode { .. } => "decode",
            _ => "other",
        };
        self.error(kind, format!("{op}: {e}"));
    }
}

/// Log-linear latency histogram (8 sub-buckets per power of two, in microseconds).
#[derive(Clone)]
struct Histogram(Vec<u64>);

impl Histogram {
    fn new() -> Self {
        Self(vec![0; 64 * 8])
    }
    fn bucket(us: u64) -> usize {
        if us < 8 {
            return us as usize;
        }
        let exp = 63 - us.leading_zeros() as usize; // >= 3
        let sub = ((us >> (exp - 3)) & 7) as usize;
        (exp - 2) * 8 + sub
    }
    /// Upper bound (µs) of a bucket.
    fn upper(bucket: usize) -> u64 {
        if bucket < 8 {
            return bucket as u64;
        }
        let exp = bucket / 8 + 2;
        let sub = (bucket % 8) as u64;
        ((8 + sub + 1) << (exp - 3)) - 1
    }
    fn record(&mut self, d: Duration) {
        let b = Self::bucket(d.as_micros() as u64).min(self.0.len() - 1);
        self.0[b] += 1;
    }
    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }
    fn count(&self) -> u64 {
        self.0.iter().sum()
    }
    fn percentile(&self, p: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.0.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Self::upper(i);
            }
        }
        Self::upper(self.0.len() - 1)
    }
}

/// Small deterministic PRNG (xorshift64*), one per driver.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// About 64 KiB of log text mixing ASCII, a BMP character (3 UTF-8 bytes, 1 UTF-16 unit)
/// and an astral one (4 bytes, 2 units), so the big frames exercise UTF-16 length counting.
fn big_text() -> String {
    let mut s = String::with_capacity(64 * 1024 + 16);
    while s.len() < 64 * 1024 {
        s.push_str("soak 求和1111 😀 ");
    }
    s
}

async fn drive(
    id: usize,
    clients: Arc<Vec<Client>>,
    drivers: usize,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    big_log: Arc<String>,
    big_permille: u64,
) -> Histogram {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0x1000_0001));
    let mut hist = Histogram::new();
    let mine: Vec<&Client> = clients.iter().skip(id).step_by(drivers).collect();
    let mut next = 0usize;
    while !stop.load(Relaxed) {
        let client = mine[next % mine.len()];
        next += 1;
        let roll = rng.below(1000);
        if roll < big_permille / 2 {
            // ~64 KiB request: 9,400 six-digit numbers.
            let nums: Vec<i64> = (0..9_400)
                .map(|_| 100_000 + rng.below(900_000) as i64)
                .collect();
            let expected: i64 = nums.iter().sum();
            let started = Instant::now();
            match client.send::<_, _, i64>("sum", &nums).await {
                Ok(got) if got == expected => {
                    hist.record(started.elapsed());
                    stats.big_sum_ok.fetch_add(1, Relaxed);
                }
                Ok(got) => {
                    stats.wrong_sum.fetch_add(1, Relaxed);
                    stats.error(
                        "wrong_sum",
                        format!("big sum: expected {expected}, got {got}"),
                    );
                }
                Err(e) => stats.client_error("big sum", &e),
            }
        } else if roll < big_permille {
            match client.emit("log", big_log.as_str()).await {
                Ok(()) => {
                    stats.big_emit_ok.fetch_add(1, Relaxed);
                }
                Err(e) => stats.client_error("big log", &e),
            }
        } else if roll < big_permille + 296 {
            let line = format!("driver {id} op {next}");
            match client.emit("log", &line).await {
                Ok(()) => {
                    stats.emit_ok.fetch_add(1, Relaxed);
                }
                Err(e) => stats.client_error("log", &e),
            }
        } else {
            let len = rng.below(17) as usize;
            let nums: Vec<i64> = (0..len)
                .map(|_| rng.below(2_000_001) as i64 - 1_000_000)
                .collect();
            let expected: i64 = nums.iter().sum();
            let started = Instant::now();
            match client.send::<_, _, i64>("sum", &nums).await {
                Ok(got) if got == expected => {
                    hist.record(started.elapsed());
                    stats.sum_ok.fetch_add(1, Relaxed);
                }
                Ok(got) => {
                    stats.wrong_sum.fetch_add(1, Relaxed);
                    stats.error(
                        "wrong_sum",
                        format!("sum of {nums:?}: expected {expected}, got {got}"),
                    );
                }
                Err(e) => stats.client_error("sum", &e),
            }
        }
    }
    hist
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let needed = args.connections as u64 * 2 + 100;
    match open_file_limit() {
        Some(limit) if limit < needed => {
            eprintln!(
                "soak: the open-file limit (ulimit -n) is {limit}, but {} connections need at least {needed} \
                 descriptors (client and server side of each connection live in this process, plus 100 spare). \
                 Raise it (`ulimit -n {needed}`) or pass fewer --connections (at most {}).",
                args.connections,
                limit.saturating_sub(100) / 2
            );
            return ExitCode::from(2);
        }
        Some(limit) => println!("open-file limit {limit} (need {needed})"),
        None => println!("open-file limit unknown (/proc/self/limits unreadable); need {needed}"),
    }
    println!(
        "soak: {} s, {} connections, {} drivers, connecting in batches of {}, {}‰ of operations with ~64 KiB payloads",
        args.seconds, args.connections, args.drivers, args.batch, args.big_permille
    );
    print_memory("start");

    let server_stats = Arc::new(ServerStats::default());
    let listening = match Server::builder()
        .discover(false)
        .controller(SoakController {
            stats: server_stats.clone(),
        })
        .max_connections(args.connections + 100)
        .build()
    {
        Ok(server) => match server.listen("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("soak: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listening.local_addr().to_string();
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listening.serve_with_shutdown(async {
        let _ = shutdown_rx.await;
    }));
    println!("server listening on {addr}");
    print_memory("server started");

    let stats = Arc::new(Stats::default());
    let clients: Vec<Client> = (0..args.connections)
        .map(|_| {
            Client::builder(addr.clone())
                .connect_timeout(Duration::from_secs(10))
                .request_timeout(Some(Duration::from_secs(30)))
                .build()
        })
        .collect();
    let connect_started = Instant::now();
    let mut connect_failures = 0u64;
    for (n, batch) in clients.chunks(args.batch).enumerate() {
        let mut set = tokio::task::JoinSet::new();
        for c in batch {
            let c = c.clone();
            set.spawn(async move { c.connect().await });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    connect_failures += 1;
                    stats.client_error("connect", &e);
                }
                Err(e) => {
                    connect_failures += 1;
                    stats.error("connect_task_panic", e.to_string());
                }
            }
        }
        let done = ((n + 1) * args.batch).min(args.connections);
        if done % 2_000 < args.batch || done == args.connections {
            println!(
                "connected {done}/{} ({connect_failures} failed) in {:.1} s",
                args.connections,
                connect_started.elapsed().as_secs_f64()
            );
        }
    }
    print_memory(&format!("after connecting {} clients", args.connections));

    let clients = Arc::new(clients);
    let stop = Arc::new(AtomicBool::new(false));
    let big_log = Arc::new(big_text());
    let started = Instant::now();
    let mut drivers = tokio::task::JoinSet::new();
    for id in 0..args.drivers {
        drivers.spawn(drive(
            id,
            clients.clone(),
            args.drivers,
            stop.clone(),
            stats.clone(),
            big_log.clone(),
            args.big_permille,
        ));
    }

    let deadline = started + Duration::from_secs(args.seconds);
    let mut last_ok = 0u64;
    let mut last_at = started;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep((deadline - now).min(Duration::from_secs(10))).await;
        let ok = stats.ok();
        let now = Instant::now();
        let rate = (ok - last_ok) as f64 / (now - last_at).as_secs_f64();
        let (rss, hwm) = memory();
        println!(
            "[t={:>4.0}s] VmRSS {:.1} MiB, VmHWM {:.1} MiB, fds {}, ok {ok} ({rate:.0}/s), errors {}, server: sums {} events {}",
            (now - started).as_secs_f64(),
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
            open_fds(),
            stats.error_count(),
            server_stats.sums.load(Relaxed),
            server_stats.events.load(Relaxed),
        );
        last_ok = ok;
        last_at = now;
    }
    stop.store(true, Relaxed);
    let mut hist = Histogram::new();
    while let Some(r) = drivers.join_next().await {
        match r {
            Ok(h) => hist.merge(&h),
            Err(e) => stats.error("driver_panic", e.to_string()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    // Events are fire-and-forget: give the server a moment to handle the last ones.
    let emitted = stats.emit_ok.load(Relaxed) + stats.big_emit_ok.load(Relaxed);
    let settle = Instant::now();
    while server_stats.events.load(Relaxed) < emitted && settle.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = server_stats.events.load(Relaxed);
    print_memory("end of traffic (clients still connected)");

    println!("--- results after {elapsed:.1} s ---");
    println!(
        "sum ok {} (small) + {} (64 KiB), log emitted ok {} (small) + {} (64 KiB), total ok {} ({:.0}/s)",
        stats.sum_ok.load(Relaxed),
        stats.big_sum_ok.load(Relaxed),
        stats.emit_ok.load(Relaxed),
        stats.big_emit_ok.load(Relaxed),
        stats.ok(),
        stats.ok() as f64 / elapsed
    );
    println!(
        "send latency: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples, bucket upper bounds)",
        hist.percentile(0.50),
        hist.percentile(0.99),
        hist.percentile(0.999),
        hist.percentile(1.0),
        hist.count()
    );
    println!(
        "server: sums answered {}, events received {received} of {emitted} emitted ({} bytes of log text)",
        server_stats.sums.load(Relaxed),
        server_stats.event_bytes.load(Relaxed)
    );
    let wrong = stats.wrong_sum.load(Relaxed);
    println!("wrong sums: {wrong}");
    let errors = stats.errors.lock().unwrap().clone();
    if errors.is_empty() {
        println!("errors: none");
    } else {
        println!("errors by kind:");
        for (kind, n) in &errors {
            println!("  {kind}: {n}");
        }
        println!("first errors:");
        for e in stats.first_errors.lock().unwrap().iter() {
            println!("  {e}");
        }
    }

    drop(clients);
    tokio::time::sleep(Duration::from_secs(1)).await;
    print_memory("after closing all clients");
    let _ = shutdown_tx.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => println!("server ended with an error: {e}"),
        Err(e) => println!("server task failed: {e}"),
    }
    print_memory("end");

    let lost_events = emitted.saturating_sub(received);
    if !errors.is_empty() || wrong > 0 || lost_events > 0 || received > emitted {
        println!(
            "SOAK FAILED: {} errors, {wrong} wrong sums, {lost_events} events not received",
            stats.error_count()
        );
        ExitCode::FAILURE
    } else {
        println!("SOAK OK");
        ExitCode::SUCCESS
    }
}
