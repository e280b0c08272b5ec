//! End-to-end tests over real sockets: nestling client ↔ nestling server, and raw sockets
//! speaking the Nest wire by hand where a test needs to misbehave.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestling::{Client, ClientError, Context, RpcException, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Notify};

/// Test controller with state shared with the test body.
#[derive(Default, Clone)]
struct Calc {
    logs: Arc<Mutex<Vec<String>>>,
    gate: Arc<Notify>,
    events: Arc<AtomicUsize>,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Pair {
    a: i64,
    b: i64,
}

#[nestling::controller]
impl Calc {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern({ cmd: "sum", v: 2 })]
    fn sum_v2(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum::<i64>() * 100
    }

    #[message_pattern("add")]
    async fn add(&self, p: Pair) -> i64 {
        p.a + p.b
    }

    #[message_pattern("echo")]
    fn echo(&self, v: Value) -> Value {
        v
    }

    #[message_pattern("whoami")]
    fn whoami(&self, ctx: &Context) -> String {
        format!("{}|{}", ctx.pattern(), ctx.peer_addr().ip())
    }

    #[message_pattern("nothing")]
    fn nothing(&self) {}

    #[message_pattern("fail")]
    fn fail(&self) -> Result<i64, RpcException> {
        Err(RpcException::new("bad thing"))
    }

    #[message_pattern("fail_obj")]
    fn fail_obj(&self) -> Result<i64, RpcException> {
        Err(RpcException::new(json!({"code": 42, "message": "m"})))
    }

    #[message_pattern("boom")]
    async fn boom(&self) -> Result<i64, std::io::Error> {
        Err(std::io::Error::other("secret cause"))
    }

    #[message_pattern("panic")]
    fn panics(&self, _: Value) -> i64 {
        panic!("handler bug")
    }

    /// Blocks until "release" is called: proves requests on one connection run concurrently.
    #[message_pattern("wait")]
    async fn wait(&self, tag: String) -> String {
        self.gate.notified().await;
        tag
    }

    #[message_pattern("release")]
    fn release(&self) -> bool {
        self.gate.notify_waiters();
        true
    }

    #[message_pattern("sleep")]
    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    #[event_pattern("log")]
    fn log(&self, text: String) {
        self.logs.lock().unwrap().push(text);
        self.events.fetch_add(1, Ordering::SeqCst);
    }
}

/// A second controller with an event on the same pattern: both must run.
#[derive(Default, Clone)]
struct Audit {
    seen: Arc<Mutex<Vec<String>>>,
}

#[nestling::controller]
impl Audit {
    #[event_pattern("log")]
    async fn audit(&self, text: String) {
        self.seen.lock().unwrap().push(format!("audit:{text}"));
    }
}

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.task.await;
    }
}

async fn start(calc: Calc, audit: Audit) -> Running {
    let listening = Server::builder()
        .discover(false)
        .controller(calc)
        .controller(audit)
        .build()
        .unwrap()
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listening.local_addr();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(async move {
        listening
            .serve_with_shutdown(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

async fn eventually(mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

/// Reads one Nest frame from a raw socket (ASCII-only replies in these tests).
async fn read_frame(sock: &mut TcpStream) -> Option<String> {
    let mut header = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if sock.read(&mut b).await.ok()? == 0 {
            return None;
        }
        if b[0] == b'#' {
            break;
        }
        header.push(b[0]);
    }
    let len: usize = String::from_utf8(header).ok()?.trim().parse().ok()?;
    let mut body = vec![0u8; len];
    sock.read_exact(&mut body).await.ok()?;
    String::from_utf8(body).ok()
}

fn frame(json: &str) -> Vec<u8> {
    format!("{}#{}", json.encode_utf16().count(), json).into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn send_and_emit_round_trip() {
    let calc = Calc::default();
    let audit = Audit::default();
    let server = start(calc.clone(), audit.clone()).await;
    let client = Client::new(server.addr.to_string());

    let total: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(total, 6);
    let added: i64 = client.send("add", &Pair { a: 2, b: 40 }).await.unwrap();
    assert_eq!(added, 42);
    client.emit("log", "求和1111").await.unwrap();
    // Both event handlers for "log" run, as in Nest.
    eventually(|| calc.logs.lock().unwrap().as_slice() == ["求和1111"]).await;
    eventually(|| audit.seen.lock().unwrap().as_slice() == ["audit:求和1111"]).await;

    // Unicode round-trips byte-exactly through the UTF-16 framing.
    for s in ["求和1111", "a😀b", "#12#", "\u{2028}\u{0001}\"\\", "👨‍👩‍👧 𝄞"] {
        let back: String = client.send("echo", s).await.unwrap();
        assert_eq!(back, s);
    }
    let nested = json!({"response": 1, "id": "x", "err": null, "isDisposed": false, "list": [null, false, 0, ""]});
    let back: Value = client.send("echo", &nested).await.unwrap();
    assert_eq!(back, nested);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_client_generated_for_the_controller() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    let typed = CalcClient::new(Client::new(server.addr.to_string()));
    assert_eq!(typed.sum(vec![4, 5]).await.unwrap(), 9);
    assert_eq!(typed.sum_v2(vec![1]).await.unwrap(), 100);
    assert_eq!(typed.add(Pair { a: 1, b: 1 }).await.unwrap(), 2);
    typed.nothing().await.unwrap();
    typed.log("typed".into()).await.unwrap();
    eventually(|| calc.logs.lock().unwrap().contains(&"typed".to_string())).await;
    let err = typed.fail().await.unwrap_err();
    assert_eq!(
        err.remote().unwrap().value(),
        &json!({"status": "error", "message": "bad thing"})
    );
    server.shutdown().await;
}

#[nestling::client]
trait RemoteCalc {
    #[message_pattern("sum")]
    async fn sum(nums: Vec<i64>) -> i64;
    #[message_pattern({ v: 2, cmd: "sum" })]
    async fn sum_v2(&self, nums: Vec<i64>) -> i64;
    #[event_pattern("log")]
    async fn log(text: String);
    #[message_pattern("missing")]
    async fn missing() -> i64;
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_remote_client() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    let remote = RemoteCalcClient::new(Client::new(server.addr.to_string()));
    assert_eq!(remote.sum(vec![1, 2]).await.unwrap(), 3);
    // Same object pattern declared with another key order reaches the same handler.
    assert_eq!(remote.sum_v2(vec![2]).await.unwrap(), 200);
    remote.log("remote".into()).await.unwrap();
    eventually(|| calc.logs.lock().unwrap().contains(&"remote".to_string())).await;
    let err = remote.missing().await.unwrap_err();
    assert!(err.remote().unwrap().is_no_handler(), "{err}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn object_patterns_match_like_nest() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    for pattern in [
        json!({"cmd": "sum", "v": 2}),
        json!({"v": 2, "cmd": "sum"}),
        json!("{\"v\":2,\"cmd\":\"sum\"}"),
    ] {
        let n: i64 = client.send(pattern.clone(), &[1, 1]).await.unwrap();
        assert_eq!(n, 200, "pattern {pattern}");
    }
    let err = client
        .send::<_, _, i64>(json!({"cmd": "sum", "v": "2"}), &[1])
        .await
        .unwrap_err();
    assert!(err.remote().unwrap().is_no_handler());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_have_nest_shapes() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    let remote = |e: ClientError| e.remote().unwrap().value().clone();

    let e = client.send::<_, _, i64>("fail", &()).await.unwrap_err();
    assert_eq!(
        remote(e),
        json!({"status": "error", "message": "bad thing"})
    );
    let e = client.send::<_, _, i64>("fail_obj", &()).await.unwrap_err();
    assert_eq!(remote(e), json!({"code": 42, "message": "m"}));
    // The real cause stays server-side.
    let e = client.send::<_, _, i64>("boom", &()).await.unwrap_err();
    assert_eq!(
        remote(e),
        json!({"status": "error", "message": "Internal server error"})
    );
    let e = client.send::<_, _, i64>("panic", &1).await.unwrap_err();
    assert_eq!(
        remote(e),
        json!({"status": "error", "message": "Internal server error"})
    );
    let e = client.send::<_, _, i64>("nope", &1).await.unwrap_err();
    assert_eq!(
        remote(e),
        json!("There is no matching message handler defined in the remote service.")
    );
    // A payload of the wrong type is rejected with a message saying so.
    let e = client.send::<_, _, i64>("sum", "x").await.unwrap_err();
    let msg = e.remote().unwrap().message().unwrap().to_string();
    assert!(msg.contains("invalid payload for pattern sum"), "{msg}");
    // After all that, the same connection still works.
    let n: i64 = client.send("sum", &[2, 2]).await.unwrap();
    assert_eq!(n, 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn context_and_unit_replies() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    let who: String = client.send("whoami", &()).await.unwrap();
    assert_eq!(who, "whoami|127.0.0.1");
    // `()` is Nest's undefined: the reply has no value, and `()` accepts that.
    client.send::<_, _, ()>("nothing", &()).await.unwrap();
    let e = client.send::<_, _, i64>("nothing", &()).await.unwrap_err();
    assert!(matches!(e, ClientError::EmptyReply { .. }), "{e:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_on_one_connection_run_concurrently() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    // "wait" only returns once "release" ran: a server handling one connection's requests
    // in order would never answer.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.send::<_, _, String>("wait", "first").await })
    };
    let released = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _: bool = client.send("release", &()).await.unwrap();
            if waiting.is_finished() {
                break waiting.await.unwrap().unwrap();
            }
        }
    })
    .await
    .expect("a request blocked on one connection must not block the next one");
    assert_eq!(released, "first");

    // 500 calls in flight on one connection, completing out of order, each gets its own reply.
    let calls = (0..500u64).map(|i| {
        let client = client.clone();
        async move {
            let ms = (i * 7919) % 23;
            let got: u64 = client.send("sleep", &ms).await.unwrap();
            assert_eq!(got, ms);
            let s: i64 = client.send("sum", &[i as i64, 1]).await.unwrap();
            assert_eq!(s, i as i64 + 1);
        }
    });
    futures_util::future::join_all(calls).await;
    server.shutdown().await;
}

/// A payload that cannot be JSON fails that call alone, with the pattern named; the
/// connection and the next calls are unaffected (and no half-written frame went out).
#[tokio::test]
async fn an_unserialisable_payload_fails_only_its_call() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    let mut bad = std::collections::BTreeMap::new();
    bad.insert((1, 2), "tuple keys are not JSON object keys");
    let e = client.send::<_, _, Value>("echo", &bad).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::Encode { pattern, .. } if pattern == r#""echo""#),
        "{e:?}"
    );
    let e = client.emit("log", &bad).await.unwrap_err();
    assert!(matches!(e, ClientError::Encode { .. }), "{e:?}");
    let s: i64 = client.send("sum", &[2, 3]).await.unwrap();
    assert_eq!(s, 5);
    server.shutdown().await;
}

/// The client's write queue is bounded: with room for 2 frames and 300 calls plus 300
/// events started at once on a multi-threaded runtime, callers wait for the writer and
/// every frame still goes out whole, once, and each call gets its own reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_client_write_queue_makes_callers_wait_and_loses_nothing() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    let client = Client::builder(server.addr.to_string())
        .max_queued_frames(2)
        .build();
    let tasks: Vec<_> = (0..300i64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let s: i64 = client.send("sum", &[i, 1000]).await.unwrap();
                assert_eq!(s, i + 1000);
                client.emit("log", &format!("event {i}")).await.unwrap();
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(20), async {
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await
    .expect("callers waiting for room are woken as the writer drains the queue");
    // Every emit resolved once its frame was handed to the socket; the server has them all.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let logs = calc.logs.lock().unwrap().len();
            if logs >= 300 {
                break logs;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("all 300 events arrive");
    assert_eq!(seen, 300);
    let mut logs = calc.logs.lock().unwrap().clone();
    logs.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("event {i}")).collect();
    want.sort();
    assert_eq!(logs, want, "each event arrives once, intact");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_frame_closes_only_its_connection() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    // An in-flight call on another connection...
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.send::<_, _, String>("wait", "survivor").await })
    };
    client.send::<_, _, i64>("sum", &[1]).await.unwrap();

    for garbage in [
        &b"abc#{}"[..],
        b"-5#{}",
        b"5#{abc}",
        b"999999999999#",
        b"0#",
    ] {
        let mut bad = TcpStream::connect(server.addr).await.unwrap();
        bad.write_all(garbage).await.unwrap();
        // The server closes this connection without replying.
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), bad.read(&mut buf))
            .await
            .expect("server should close a connection that sent a bad frame")
            .unwrap_or(0);
        assert_eq!(n, 0, "no reply to {:?}", String::from_utf8_lossy(garbage));
    }
    // ...is untouched: release it and it answers.
    let survivor = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let _: bool = client.send("release", &()).await.unwrap();
            if waiting.is_finished() {
                break waiting.await.unwrap().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the in-flight call on the healthy connection must complete");
    assert_eq!(survivor, "survivor");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_wire_frames_split_and_batched() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    let mut sock = TcpStream::connect(server.addr).await.unwrap();
    // The exact frame a Nest ClientTCP emits, fed one byte at a time.
    let event = "33#{\"pattern\":\"log\",\"data\":\"求和1111\"}".as_bytes();
    for b in event {
        sock.write_all(&[*b]).await.unwrap();
        sock.flush().await.unwrap();
    }
    eventually(|| calc.logs.lock().unwrap().as_slice() == ["求和1111"]).await;

    // Two requests and an event in one write; odd ids are echoed verbatim.
    let mut batch = frame(r#"{"pattern":"sum","data":[1,2],"id":5}"#);
    batch.extend(frame(r#"{"pattern":"log","data":"x😀"}"#));
    batch.extend(frame(r#"{"pattern":"nope","data":1,"id":null}"#));
    sock.write_all(&batch).await.unwrap();
    let mut replies = vec![
        read_frame(&mut sock).await.unwrap(),
        read_frame(&mut sock).await.unwrap(),
    ];
    replies.sort();
    assert_eq!(
        replies,
        [
            r#"{"id":null,"status":"error","err":"There is no matching message handler defined in the remote service."}"#,
            r#"{"response":3,"isDisposed":true,"id":5}"#,
        ]
    );
    eventually(|| calc.logs.lock().unwrap().len() == 2).await;
    // Undefined packets (no pattern, no data) are dropped with a log, connection stays.
    sock.write_all(&frame("{}")).await.unwrap();
    sock.write_all(&frame("[]")).await.unwrap();
    sock.write_all(&frame(r#"{"pattern":"nothing","id":"u"}"#))
        .await
        .unwrap();
    assert_eq!(
        read_frame(&mut sock).await.unwrap(),
        r#"{"isDisposed":true,"id":"u"}"#
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_calls_fail_at_once_when_the_connection_drops_then_reconnect() {
    // A fake service: the first connection reads a request and hangs up; the second one
    // answers properly.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        read_frame(&mut first).await.unwrap();
        read_frame(&mut first).await.unwrap();
        drop(first);
        let (mut second, _) = listener.accept().await.unwrap();
        let req: Value = serde_json::from_str(&read_frame(&mut second).await.unwrap()).unwrap();
        let reply = json!({"response": 99, "isDisposed": true, "id": req["id"]}).to_string();
        second.write_all(&frame(&reply)).await.unwrap();
        // Keep the socket open until the client has read the reply.
        let _ = read_frame(&mut second).await;
    });
    let client = Client::new(addr.to_string());
    let a = client.send::<_, _, i64>("a", &1);
    let b = client.send::<_, _, i64>("b", &2);
    let (a, b) = tokio::time::timeout(Duration::from_secs(5), async { tokio::join!(a, b) })
        .await
        .expect("pending calls must fail when the connection drops, not hang");
    for r in [a, b] {
        assert!(
            matches!(r, Err(ClientError::ConnectionClosed { .. })),
            "{r:?}"
        );
    }
    let again: i64 = client.send("c", &3).await.unwrap();
    assert_eq!(again, 99);
    client.close();
    fake.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_refused_connections_are_distinct_errors() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    let e = client
        .send_with_timeout::<_, _, u64>("sleep", &2_000u64, Some(Duration::from_millis(50)))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    // The late reply is discarded; the connection keeps working.
    let n: i64 = client.send("sum", &[5]).await.unwrap();
    assert_eq!(n, 5);
    let addr = server.addr;
    server.shutdown().await;

    let dead = Client::new(addr.to_string());
    let e = dead.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("check that the service is running"));
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let server = start(Calc::default(), Audit::default()).await;
    let client = Client::new(server.addr.to_string());
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { client.send::<_, _, u64>("sleep", &300u64).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let addr = server.addr;
    server.shutdown().await;
    assert_eq!(slow.await.unwrap().unwrap(), 300);
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn explicit_instances_and_discovery_are_separate() {
    // discover(false) serves only what was added: here nothing.
    let listening = Server::builder()
        .discover(false)
        .build()
        .unwrap()
        .listen("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listening.local_addr();
    let task = tokio::spawn(listening.serve());
    let client = Client::new(addr.to_string());
    let e = client.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(e.remote().unwrap().is_no_handler());
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_connects_back_off_then_recover() {
    // Reserve a port, then free it: nothing listens there for now.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let client = Client::builder(addr.to_string())
        .reconnect_backoff(Duration::from_millis(200), Duration::from_millis(200))
        .build();
    let first = client.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(matches!(first, ClientError::Connect { .. }), "{first:?}");
    // Within the backoff window the call fails fast without dialing.
    let second = client.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(
        matches!(second, ClientError::Unavailable { .. }),
        "{second:?}"
    );
    assert!(second.to_string().contains("next attempt in"), "{second}");

    let listening = Server::builder()
        .discover(false)
        .controller(Calc::default())
        .build()
        .unwrap()
        .listen(addr)
        .await
        .unwrap();
    let task = tokio::spawn(listening.serve());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let n: i64 = client.send("sum", &[1, 2]).await.unwrap();
    assert_eq!(n, 3);
    task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn client_in_flight_limit_is_backpressure() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    let client = Client::builder(server.addr.to_string())
        .max_in_flight(1)
        .build();
    let blocked = {
        let client = client.clone();
        tokio::spawn(async move { client.send::<_, _, String>("wait", "held").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The only slot is taken: this call waits for it and times out without being sent.
    let e = client
        .send_with_timeout::<_, _, i64>("sum", &[1], Some(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    // Free the slot through another client; the held call completes, then calls flow.
    let other = Client::new(server.addr.to_string());
    let _: bool = other.send("release", &()).await.unwrap();
    assert_eq!(blocked.await.unwrap().unwrap(), "held");
    let n: i64 = client.send("sum", &[2]).await.unwrap();
    assert_eq!(n, 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_is_written_before_it_returns() {
    let calc = Calc::default();
    let server = start(calc.clone(), Audit::default()).await;
    // A fresh client per event, dropped right after `emit`: nothing may be lost.
    for i in 0..100 {
        let client = Client::new(server.addr.to_string());
        client.emit("log", &format!("e{i}")).await.unwrap();
    }
    eventually(|| calc.events.load(Ordering::SeqCst) == 100).await;
    server.shutdown().await;
}
