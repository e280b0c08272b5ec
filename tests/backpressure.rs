//! Bounded memory under slow and hostile peers, over real sockets: peers that send requests
//! and never read the replies, one peer sending maximum-size frames on many connections, a
//! streamed reply to a caller that stops polling. Each checks the resident memory of the
//! server (and of the caller) against the documented bounds while a well-behaved client is
//! served throughout, and runs the same load against the real NestJS user service,
//! printing both figures (Nest's are printed, not checked: it has no such bounds).
//!
//! The nestling server and the stream's caller run in their own processes, so that their
//! memory is theirs alone: this test binary started again in a child mode (the `child`
//! test, which does nothing unless `NESTLING_BACKPRESSURE_CHILD` is set).

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use support::{require_node, rss_kib, spawn_node, Proc, RssPeak};

const CHILD: &str = "NESTLING_BACKPRESSURE_CHILD";
const MIB: u64 = 1024;
/// Allocator and runtime slack on top of a bound, in KiB: freed memory a process keeps,
/// thread stacks, a burst of replies being encoded.
const SLACK_KIB: u64 = 24 * MIB;

/// A stop signal shared by the tasks of one load.
#[derive(Clone)]
struct CancellationToken(Arc<tokio::sync::watch::Sender<bool>>);

impl CancellationToken {
    fn new() -> Self {
        CancellationToken(Arc::new(tokio::sync::watch::channel(false).0))
    }

    fn cancel(&self) {
        self.0.send_replace(true);
    }

    fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    async fn cancelled(&self) {
        let _ = self.0.subscribe().wait_for(|stop| *stop).await;
    }
}

/// The tests share two cores: one at a time, so each load is the only one.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
struct Limits;

#[nestling::controller]
impl Limits {
    #[message_pattern("echo")]
    fn echo(&self, data: serde_json::Value) -> serde_json::Value {
        data
    }

    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    /// 1..=n, as Nest's `count` (`from([1..n])`).
    #[message_pattern("count")]
    fn count(&self, n: u64) -> impl Stream<Item = u64> {
        futures_util::stream::iter(1..=n)
    }

    /// `n` strings of `size` bytes.
    #[message_pattern("blobs")]
    fn blobs(&self, (n, size): (u64, usize)) -> impl Stream<Item = String> {
        let blob = "x".repeat(size);
        futures_util::stream::iter((0..n).map(move |_| blob.clone()))
    }
}

/// The child processes: `server` serves [`Limits`] with the limits given in the
/// environment and prints `READY <port>`; `caller` calls a stream, takes a few items and
/// stops polling, and prints its own memory before and after.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match mode.as_str() {
        "server" => runtime.block_on(child_server()),
        "caller" => runtime.block_on(child_caller()),
        other => panic!("unknown child mode {other:?}"),
    }
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().expect(name))
}

async fn child_server() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let mut builder = nestling::Server::builder()
        .discover(false)
        .controller(Limits);
    if let Some(bytes) = env_num("HIGH_WATER") {
        builder = builder.reply_high_water(bytes as usize);
    }
    if let Some(ms) = env_num("WRITE_STALL_MS") {
        builder = builder.write_stall_timeout(Some(Duration::from_millis(ms)));
    }
    if let Some(bytes) = env_num("MEMORY_BUDGET") {
        builder = builder.memory_budget(bytes as usize);
    }
    if let Some(ms) = env_num("BUDGET_GRACE_MS") {
        builder = builder.memory_budget_grace(Duration::from_millis(ms));
    }
    let listening = builder
        .build()
        .expect("server")
        .listen("127.0.0.1:0")
        .await
        .expect("bind");
    // After a newline: libtest has just printed `test child ... ` without one.
    println!("\nREADY {}", listening.local_addr().port());
    listening.serve().await.expect("serve");
}

async fn child_caller() {
    let addr = std::env::var("ADDR").expect("ADDR");
    let pattern = std::env::var("PATTERN").expect("PATTERN");
    let data: serde_json::Value =
        serde_json::from_str(&std::env::var("DATA").expect("DATA")).expect("DATA is JSON");
    let client = nestling::Client::new(addr);
    client.connect().await.expect("connect");
    let before = rss_kib(std::process::id()).unwrap_or(0);
    let mut items = client
        .send_stream::<_, _, serde_json::Value>(pattern.as_str(), &data)
        .await
        .expect("stream");
    for _ in 0..10 {
        items.next().await.expect("an item").expect("a value");
    }
    // The caller stops polling here, its stream still open, while the server goes on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(std::process::id()).unwrap_or(0);
    println!("\nCALLER {before} {after}");
    std::future::pending::<()>().await;
    drop(items);
}

/// This test binary again, in child mode `mode`.
fn child_process(mode: &str, env: &[(&str, String)]) -> Proc {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, mode)
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc::spawn(format!("backpressure {mode}"), cmd)
}

async fn nestling_server(env: &[(&str, String)]) -> Proc {
    let mut server = child_process("server", env);
    server.wait_ready().await;
    server
}

/// The server under test: nestling in a child process, or the NestJS user service.
struct Peer {
    name: &'static str,
    proc: Proc,
}

impl Peer {
    fn rss(&self) -> u64 {
        rss_kib(self.proc.pid()).unwrap_or(0)
    }
}

async fn nest_server(test: &str) -> Option<Peer> {
    let node = require_node(test)?;
    Some(Peer {
        name: "NestJS",
        proc: spawn_node(&node, "user-service.mjs", &[]).await,
    })
}

/// A well-behaved client calling `sum` every 50 ms, each call within 5 s.
struct Probe {
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(addr: &str) -> Self {
        let client = nestling::Client::builder(addr)
            .request_timeout(Some(Duration::from_secs(5)))
            .build();
        let (ok, failed, stop) = (Arc::default(), Arc::default(), CancellationToken::new());
        let task = tokio::spawn({
            let (ok, failed, stop): (Arc<AtomicU64>, Arc<AtomicU64>, _) =
                (Arc::clone(&ok), Arc::clone(&failed), stop.clone());
            async move {
                while !stop.is_cancelled() {
                    match client.send::<_, _, i64>("sum", &[1, 2, 3]).await {
                        Ok(6) => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        Probe {
            ok,
            failed,
            stop,
            task,
        }
    }

    /// Stops and returns (calls answered, calls failed).
    async fn finish(self) -> (u64, u64) {
        self.stop.cancel();
        let _ = self.task.await;
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// A connection with a 4 KiB receive buffer, so that what the server sends piles up in
/// the server rather than in the kernel.
async fn small_window_connection(addr: &str) -> tokio::net::TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect(addr.parse().expect("addr"))
        .await
        .expect("connect")
}

/// A Nest TCP frame of `json`.
fn frame(json: &str) -> Vec<u8> {
    format!("{}#{json}", json.encode_utf16().count()).into_bytes()
}

/// `conns` connections sending `echo` requests with `size`-byte payloads as fast as the
/// server reads them and never reading a reply, for `time`. Returns the bytes of requests
/// sent.
async fn slow_readers(addr: &str, conns: usize, size: usize, time: Duration) -> u64 {
    let payload = "x".repeat(size);
    let request = frame(&format!(
        r#"{{"pattern":"echo","data":"{payload}","id":"1"}}"#
    ));
    let batch: Arc<Vec<u8>> = Arc::new(request.repeat((64_000 / size).max(1)));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let stream = small_window_connection(addr).await;
        let (batch, sent, stop) = (batch.clone(), sent.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (_never_read, mut wr) = stream.into_split();
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    written = wr.write_all(&batch) => match written {
                        Ok(()) => sent.fetch_add(batch.len() as u64, Ordering::Relaxed),
                        Err(_) => break,
                    },
                };
            }
            // The connections stay open until every task has stopped.
            stop.cancelled().await;
        }));
    }
    tokio::time::sleep(time).await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    sent.load(Ordering::Relaxed)
}

struct Figures {
    idle: u64,
    peak: u64,
    ok: u64,
    failed: u64,
    sent: u64,
}

async fn slow_readers_against(peer: &Peer, conns: usize, size: usize, time: Duration) -> Figures {
    let idle = peer.rss();
    let peak = RssPeak::start(peer.proc.pid());
    let probe = Probe::start(&peer.proc.addr());
    let sent = slow_readers(&peer.proc.addr(), conns, size, time).await;
    let (ok, failed) = probe.finish().await;
    let figures = Figures {
        idle,
        peak: peak.kib(),
        ok,
        failed,
        sent,
    };
    println!(
        "{conns} slow reader(s) ({size}-byte echoes), {}: RSS idle {} MiB, peak {} MiB; {} MiB of requests sent; well-behaved calls {ok} answered, {failed} failed",
        peer.name,
        figures.idle / MIB,
        figures.peak / MIB,
        figures.sent >> 20,
    );
    figures
}

async fn slow_readers_case(conns: usize, size: usize, time: Duration) {
    let _one = ONE_AT_A_TIME.lock().await;
    let high_water: u64 = 1 << 20;
    let nestling = Peer {
        name: "nestling",
        proc: nestling_server(&[("HIGH_WATER", high_water.to_string())]).await,
    };
    let ours = slow_readers_against(&nestling, conns, size, time).await;
    // Per connection: the high-water mark, one batch of replies past it, the read buffer.
    let bound = ours.idle + conns as u64 * (high_water / 1024 + 256) + SLACK_KIB;
    assert!(
        ours.peak <= bound,
        "{conns} slow readers made the server hold {} KiB (bound {bound} KiB)",
        ours.peak
    );
    assert!(
        ours.failed == 0 && ours.ok >= 10,
        "the well-behaved client was not served throughout: {} answered, {} failed",
        ours.ok,
        ours.failed
    );
    drop(nestling);
    if let Some(nest) = nest_server(&format!("slow_readers_{conns}")).await {
        let theirs = slow_readers_against(&nest, conns, size, time).await;
        println!(
            "{conns} slow reader(s): peak RSS nestling {} MiB, NestJS {} MiB",
            ours.peak / MIB,
            theirs.peak / MIB
        );
    }
}

#[tokio::test]
async fn one_slow_reader() {
    slow_readers_case(1, 1000, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn twenty_slow_readers() {
    slow_readers_case(20, 1000, Duration::from_secs(4)).await;
}

#[tokio::test]
async fn two_hundred_slow_readers() {
    // Larger payloads: the same bytes for less work per byte, so that within seconds
    // every connection fills the kernel's buffers and then the server's queue.
    slow_readers_case(200, 16_000, Duration::from_secs(8)).await;
}

#[tokio::test]
async fn a_peer_that_never_reads_is_closed_after_the_write_stall_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = nestling_server(&[("WRITE_STALL_MS", "1000".into())]).await;
    let addr = server.addr();
    let attack =
        tokio::spawn(async move { slow_readers(&addr, 1, 1000, Duration::from_secs(4)).await });
    let warned = server
        .stderr
        .wait_for(
            |l| l.contains("write-stall timeout") && l.contains("127.0.0.1:"),
            1,
            Duration::from_secs(10),
        )
        .await;
    assert!(
        warned.is_ok(),
        "no write-stall warning naming the peer: {}",
        server.dump()
    );
    let _ = attack.await;
    let probe = Probe::start(&server.addr());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe.finish().await.1, 0, "the server still serves others");
}

/// `conns` connections each declaring a frame of `declared` UTF-16 units and sending up
/// to `each` bytes of it as fast as the server reads, for at most `time`.
async fn big_frames(addr: &str, conns: usize, declared: usize, each: usize, time: Duration) -> u64 {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sent, stop) = (sent.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let (_rd, mut wr) = stream.into_split();
            let head = format!(r#"{declared}#{{"pattern":"echo","data":""#);
            if wr.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk = vec![b'x'; 256 * 1024];
            let mut left = each;
            while left > 0 {
                tokio::select! {
                    () = stop.cancelled() => break,
                    written = wr.write_all(&chunk[..chunk.len().min(left)]) => match written {
                        Ok(()) => {
                            let n = chunk.len().min(left);
                            left -= n;
                            sent.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    },
                }
            }
            stop.cancelled().await;
        }));
    }
    tokio::time::sleep(time).await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    sent.load(Ordering::Relaxed)
}

#[tokio::test]
async fn maximum_size_frames_on_many_connections_stay_within_the_memory_budget() {
    let _one = ONE_AT_A_TIME.lock().await;
    const CONNS: usize = 8;
    const EACH: usize = 96 << 20;
    let declared = nestling::codec::DEFAULT_MAX_FRAME_LEN;
    let budget: u64 = 64 << 20;
    let time = Duration::from_secs(5);
    let server = nestling_server(&[
        ("MEMORY_BUDGET", budget.to_string()),
        ("BUDGET_GRACE_MS", "500".into()),
    ])
    .await;
    let nestling = Peer {
        name: "nestling",
        proc: server,
    };
    let run = |peer: &Peer| {
        let (addr, pid, idle) = (peer.proc.addr(), peer.proc.pid(), peer.rss());
        async move {
            let peak = RssPeak::start(pid);
            let probe = Probe::start(&addr);
            let sent = big_frames(&addr, CONNS, declared, EACH, time).await;
            let (ok, failed) = probe.finish().await;
            Figures {
                idle,
                peak: peak.kib(),
                ok,
                failed,
                sent,
            }
        }
    };
    let ours = run(&nestling).await;
    println!(
        "{CONNS} connections x maximum frames, nestling (budget {} MiB): RSS idle {} MiB, peak {} MiB; {} MiB sent; well-behaved calls {} answered, {} failed",
        budget >> 20,
        ours.idle / MIB,
        ours.peak / MIB,
        ours.sent >> 20,
        ours.ok,
        ours.failed
    );
    // The budget, plus one read per connection past it (a socket's receive buffer).
    let bound = ours.idle + budget / 1024 + CONNS as u64 * 8 * MIB + SLACK_KIB;
    assert!(
        ours.peak <= bound,
        "maximum frames made the server hold {} KiB (bound {bound} KiB)",
        ours.peak
    );
    assert!(
        ours.sent > 2 * budget,
        "the peers sent only {} bytes: the budget was not put to the test",
        ours.sent
    );
    let evicted = nestling
        .proc
        .stderr
        .matching(|l| l.contains("memory budget stayed exceeded"));
    assert!(
        !evicted.is_empty(),
        "no connection was closed for the budget: {}",
        nestling.proc.dump()
    );
    assert!(
        ours.failed == 0 && ours.ok >= 10,
        "the well-behaved client was not served throughout: {} answered, {} failed",
        ours.ok,
        ours.failed
    );
    drop(nestling);
    if let Some(nest) = nest_server("maximum_size_frames").await {
        let theirs = run(&nest).await;
        println!(
            "{CONNS} connections x maximum frames: peak RSS nestling {} MiB, NestJS {} MiB ({} MiB sent to Nest; its well-behaved calls {} answered, {} failed)",
            ours.peak / MIB,
            theirs.peak / MIB,
            theirs.sent >> 20,
            theirs.ok,
            theirs.failed
        );
    }
}

/// A caller process streaming `pattern(data)` from `addr` and stopping after 10 items;
/// returns its RSS (KiB) before the call and 3 s after it stopped polling, and the
/// process (still alive, its stream open).
async fn stalled_caller(addr: &str, pattern: &str, data: &str) -> (u64, u64, Proc) {
    let caller = child_process(
        "caller",
        &[
            ("ADDR", addr.to_owned()),
            ("PATTERN", pattern.to_owned()),
            ("DATA", data.to_owned()),
        ],
    );
    let line = caller
        .stdout
        .wait_for(|l| l.starts_with("CALLER "), 1, Duration::from_secs(30))
        .await
        .unwrap_or_else(|why| caller.fail(&format!("the caller did not report: {why}")));
    let mut figures = line[0]["CALLER ".len()..]
        .split(' ')
        .map(|n| n.parse::<u64>().expect("KiB"));
    let (before, after) = (figures.next().unwrap(), figures.next().unwrap());
    (before, after, caller)
}

#[tokio::test]
async fn a_streamed_reply_to_a_caller_that_stops_polling_stays_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let high_water: u64 = 1 << 20;
    let server = nestling_server(&[("HIGH_WATER", high_water.to_string())]).await;
    let nestling = Peer {
        name: "nestling",
        proc: server,
    };
    let started = Instant::now();
    let idle = nestling.rss();
    let peak = RssPeak::start(nestling.proc.pid());
    let probe = Probe::start(&nestling.proc.addr());
    // 3,000,000 small items (~100 MB of frames), and 2,000 items of 64 KiB (~128 MiB).
    let (count_before, count_after, count_caller) =
        stalled_caller(&nestling.proc.addr(), "count", "3000000").await;
    let (blobs_before, blobs_after, blobs_caller) =
        stalled_caller(&nestling.proc.addr(), "blobs", "[2000, 65536]").await;
    let (ok, failed) = probe.finish().await;
    let server_peak = peak.kib();
    println!(
        "stream to a stalled caller, nestling: server RSS idle {} MiB, peak {} MiB; caller of count RSS {} -> {} MiB, caller of blobs {} -> {} MiB; well-behaved calls {ok} answered, {failed} failed ({:?})",
        idle / MIB,
        server_peak / MIB,
        count_before / MIB,
        count_after / MIB,
        blobs_before / MIB,
        blobs_after / MIB,
        started.elapsed()
    );
    // Each stalled stream: the high-water mark plus one item, on each side.
    let server_bound = idle + 2 * (high_water / 1024 + 64) + SLACK_KIB;
    assert!(
        server_peak <= server_bound,
        "the server held {server_peak} KiB for stalled streams (bound {server_bound} KiB)"
    );
    let caller_bound = |before: u64| {
        before + nestling::runtime::DEFAULT_MAX_BUFFERED_STREAM_BYTES as u64 / 1024 + 64 + SLACK_KIB
    };
    assert!(
        count_after <= caller_bound(count_before),
        "the caller of count grew from {count_before} to {count_after} KiB"
    );
    assert!(
        blobs_after <= caller_bound(blobs_before),
        "the caller of blobs grew from {blobs_before} to {blobs_after} KiB"
    );
    assert!(
        failed == 0 && ok >= 10,
        "the well-behaved client was not served throughout: {ok} answered, {failed} failed"
    );
    drop((count_caller, blobs_caller, nestling));
    if let Some(nest) = nest_server("stream_to_a_stalled_caller").await {
        let idle = nest.rss();
        let peak = RssPeak::start(nest.proc.pid());
        let (before, after, caller) = stalled_caller(&nest.proc.addr(), "count", "3000000").await;
        println!(
            "stream to a stalled caller: server peak RSS nestling {} MiB, NestJS {} MiB (idle {} MiB); the nestling caller of NestJS {} -> {} MiB",
            server_peak / MIB,
            peak.kib() / MIB,
            idle / MIB,
            before / MIB,
            after / MIB
        );
        assert!(
            after <= caller_bound(before),
            "the caller of NestJS's count grew from {before} to {after} KiB"
        );
        drop(caller);
    }
}
