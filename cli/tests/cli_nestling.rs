//! The `nestling` binary against an in-process nestling server (and a few raw sockets), over
//! real TCP on 127.0.0.1: replies, output formats, patterns, unicode, errors and exit codes,
//! events, `--stream`, `--repeat`, and TLS.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{nestling, nestling_with_stdin, refused_addr, Certs, Proc, WAIT_TIMEOUT};
use futures_util::stream::{self, Stream};
use nestling::tls::ServerTls;
use nestling::{Context, RpcException, Server};
use serde_json::{json, Value};
use tokio::sync::Notify;

const NO_HANDLER: &str = "There is no matching message handler defined in the remote service.";

#[derive(Default, Clone)]
struct Calc {
    /// Events received: (handler, data).
    events: Arc<Mutex<Vec<(String, Value)>>>,
    /// Peers that called `slow`.
    peers: Arc<Mutex<HashSet<SocketAddr>>>,
    /// Releases the second item of `gated`.
    gate: Arc<Notify>,
}

#[nestling::controller]
impl Calc {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern({ cmd: "sum" })]
    fn sum_cmd(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern({ cmd: "sum", v: 2 })]
    fn sum_v2(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum::<i64>() * 100
    }

    #[message_pattern("求和")]
    fn sum_zh(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("echo")]
    fn echo(&self, v: Value) -> Value {
        v
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

    /// Sleeps `ms` and records the caller's address.
    #[message_pattern("slow")]
    async fn slow(&self, ms: u64, ctx: &Context) -> u64 {
        self.peers.lock().unwrap().insert(ctx.peer_addr());
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// 1..=n, holding item 2 back until the test releases the gate.
    #[message_pattern("gated")]
    fn gated(&self, n: u32) -> impl Stream<Item = u32> + Send {
        let gate = self.gate.clone();
        stream::unfold(1u32, move |i| {
            let gate = gate.clone();
            async move {
                if i > n {
                    return None;
                }
                if i == 2 {
                    gate.notified().await;
                }
                Some((i, i + 1))
            }
        })
    }

    /// 1..=n, then an RpcException.
    #[message_pattern("fails_after")]
    fn fails_after(&self, n: u32) -> impl Stream<Item = Result<u32, RpcException>> + Send {
        stream::iter(
            (1..=n)
                .map(Ok)
                .chain([Err(RpcException::new("stream broke"))]),
        )
    }

    #[event_pattern("log")]
    fn log(&self, data: Value) {
        self.events.lock().unwrap().push(("log".into(), data));
    }

    #[event_pattern({ ev: "audit" })]
    fn audit(&self, data: Value) {
        self.events.lock().unwrap().push(("audit".into(), data));
    }
}

/// Serves `calc` on 127.0.0.1 (optionally over TLS) until the test's runtime ends.
async fn start_with(calc: &Calc, tls: Option<ServerTls>) -> String {
    let mut builder = Server::builder().discover(false).controller(calc.clone());
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let listening = builder
        .build()
        .expect("build server")
        .listen("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listening.local_addr().to_string();
    tokio::spawn(listening.serve());
    addr
}

async fn start(calc: &Calc) -> String {
    start_with(calc, None).await
}

/// Waits (bounded) until `calc` recorded `count` events.
async fn events(calc: &Calc, count: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let seen = calc.events.lock().unwrap().clone();
        if seen.len() >= count {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} events, got {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_pretty_json_by_default_and_compact_with_json() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&["call", &addr, "sum", "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    assert_eq!(out.stderr, "");

    // Key order is kept as the service sent it.
    let payload = r#"{"b":[1,2],"a":"x"}"#;
    let out = nestling(&["call", &addr, "echo", payload]).await;
    out.expect_code(0);
    assert_eq!(
        out.stdout,
        "{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": \"x\"\n}\n"
    );
    let out = nestling(&["call", &addr, "echo", payload, "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{payload}\n"));

    // A handler returning nothing (Nest's undefined) prints null.
    let out = nestling(&["call", &addr, "nothing"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "null\n");

    // A bare port means 127.0.0.1.
    let port = addr.rsplit_once(':').unwrap().1;
    let out = nestling(&["call", port, "sum", "[2,2]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "4\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_patterns_are_sent_as_json() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&["call", &addr, r#"{"cmd":"sum"}"#, "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    // Key order does not matter to the server; the value types do.
    let out = nestling(&["call", &addr, r#"{"v":2,"cmd":"sum"}"#, "[1,2]", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "300\n");
    let out = nestling(&["call", &addr, r#"{"v":"2","cmd":"sum"}"#, "[1,2]", "--json"]).await;
    out.expect_code(1);
    assert_eq!(out.stderr_json(), json!(NO_HANDLER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_patterns_and_payloads() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&["call", &addr, "求和", "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");

    // Text that is not JSON is sent as a JSON string.
    let out = nestling(&["call", &addr, "echo", "求和1111"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "\"求和1111\"\n");
    let out = nestling(&["call", &addr, "echo", "求和1111", "--raw"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "求和1111\n");

    // Astral characters count 2 UTF-16 units in the frame length.
    let payload = r#"{"s":"a😀b 求和1111","e":["😀😀"]}"#;
    let out = nestling(&["call", &addr, "echo", payload, "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{payload}\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_defaults_strings_and_files() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&["call", &addr, "echo"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "null\n");
    let out = nestling(&["call", &addr, "echo", "hello world", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "\"hello world\"\n");
    let out = nestling(&["call", &addr, "echo", "42", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "42\n");

    let out = nestling_with_stdin(
        &["call", &addr, "echo", "--data-file", "-", "--json"],
        Some("{\"from\": \"stdin\", \"n\": [1, 2]}\n"),
    )
    .await;
    out.expect_code(0);
    assert_eq!(out.stdout, "{\"from\":\"stdin\",\"n\":[1,2]}\n");

    // A file must hold JSON.
    let out = nestling_with_stdin(
        &["call", &addr, "echo", "--data-file", "-"],
        Some("not json"),
    )
    .await;
    out.expect_code(3);
    assert!(out.stderr.contains("not valid JSON"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_errors_print_the_err_value_on_stderr_and_exit_1() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&["call", &addr, "fail"]).await;
    out.expect_code(1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr_json(),
        json!({"status": "error", "message": "bad thing"})
    );

    let out = nestling(&["call", &addr, "fail", "--json"]).await;
    out.expect_code(1);
    assert_eq!(
        out.stderr,
        "{\"status\":\"error\",\"message\":\"bad thing\"}\n"
    );

    let out = nestling(&["call", &addr, "fail_obj", "--json"]).await;
    out.expect_code(1);
    assert_eq!(out.stderr_json(), json!({"code": 42, "message": "m"}));

    let out = nestling(&["call", &addr, "no_such_pattern"]).await;
    out.expect_code(1);
    assert_eq!(out.stderr_json(), json!(NO_HANDLER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_exits_2() {
    let addr = refused_addr().await;
    for args in [
        vec!["call", &addr, "sum", "[1]"],
        vec!["call", &addr, "sum", "[1]", "--stream"],
        vec!["call", &addr, "sum", "[1]", "--repeat", "5"],
        vec!["emit", &addr, "log", "x"],
    ] {
        let out = nestling(&args).await;
        out.expect_code(2);
        assert!(
            out.stderr
                .starts_with("nestling: error: could not connect to"),
            "{args:?}: {out:#?}"
        );
        assert_eq!(out.stdout, "", "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_service_times_out_with_exit_2() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });

    for extra in [&[][..], &["--stream"][..]] {
        let mut args = vec!["call", &addr, "sum", "[1]", "--timeout", "300"];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let out = nestling(&args).await;
        out.expect_code(2);
        assert!(out.stderr.contains("no reply"), "{out:#?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(10),
            "{args:?} took {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_3() {
    for (args, needle) in [
        (vec![], "Usage"),
        (vec!["call"], "required"),
        (
            vec!["call", "127.0.0.1:1", "{cmd:sum}", "[1]"],
            "not valid JSON",
        ),
        (
            vec!["call", "127.0.0.1:1", "p", "--repeat", "0"],
            "--repeat",
        ),
        (
            vec!["call", "127.0.0.1:1", "p", "--concurrency", "2"],
            "--repeat",
        ),
        (
            vec!["call", "127.0.0.1:1", "p", "--stream", "--repeat", "2"],
            "cannot be used",
        ),
        (vec!["call", "127.0.0.1:1", "p", "--tls"], "--ca"),
        (vec!["call", "127.0.0.1:1", "p", "--insecure"], "--tls"),
        (vec!["emit", "127.0.0.1:1", "p", "--tls"], "--ca"),
        (vec!["nope"], "unrecognized subcommand"),
    ] {
        let out = nestling(&args).await;
        assert_eq!(out.code, Some(3), "{args:?}: {out:#?}");
        assert!(out.stderr.contains(needle), "{args:?}: {out:#?}");
    }
    let out = nestling(&["--help"]).await;
    out.expect_code(0);
    for command in ["call", "emit", "listen"] {
        assert!(out.stdout.contains(command), "{out:#?}");
    }
    let out = nestling(&["call", "--help"]).await;
    out.expect_code(0);
    assert!(out.stdout.contains("--concurrency"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_delivers_events() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&["emit", &addr, "log", "求和1111"]).await;
    out.expect_code(0);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    assert_eq!(events(&calc, 1).await[0], ("log".into(), json!("求和1111")));

    nestling(&["emit", &addr, "log", r#"{"e":"a😀b"}"#])
        .await
        .expect_code(0);
    assert_eq!(
        events(&calc, 2).await[1],
        ("log".into(), json!({"e": "a😀b"}))
    );

    // Object patterns go out in Nest's normalised event form.
    nestling(&["emit", &addr, r#"{"ev":"audit"}"#, r#"{"user":1}"#])
        .await
        .expect_code(0);
    assert_eq!(
        events(&calc, 3).await[2],
        ("audit".into(), json!({"user": 1}))
    );

    // Every emit arrives even though the process exits right after writing.
    for i in 0..20 {
        nestling(&["emit", &addr, "log", &i.to_string()])
            .await
            .expect_code(0);
    }
    let seen = events(&calc, 23).await;
    assert_eq!(seen.len(), 23, "{seen:?}");
}

/// `name: value` of a text summary.
fn summary_field(stdout: &str, name: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no `{name}:` line in {stdout:?}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_prints_a_latency_summary() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let out = nestling(&[
        "call",
        &addr,
        "sum",
        "[1,2]",
        "--repeat",
        "200",
        "--concurrency",
        "8",
    ])
    .await;
    out.expect_code(0);
    assert_eq!(summary_field(&out.stdout, "count"), "200");
    assert_eq!(summary_field(&out.stdout, "errors"), "0");
    assert_eq!(summary_field(&out.stdout, "concurrency"), "8");
    let rate: f64 = summary_field(&out.stdout, "req/s").parse().unwrap();
    assert!(rate > 0.0, "{out:#?}");
    let micros = |name: &str| -> u64 {
        summary_field(&out.stdout, name)
            .strip_suffix(" µs")
            .unwrap_or_else(|| panic!("{name} without µs: {out:#?}"))
            .parse()
            .unwrap()
    };
    assert!(micros("p50") <= micros("p90"), "{out:#?}");
    assert!(micros("p90") <= micros("p99"), "{out:#?}");
    assert!(micros("p99") <= micros("max"), "{out:#?}");

    let out = nestling(&[
        "call",
        &addr,
        "sum",
        "[1,2]",
        "--repeat",
        "300",
        "--concurrency",
        "16",
        "--json",
    ])
    .await;
    out.expect_code(0);
    let s = out.stdout_json();
    assert_eq!(s["count"], 300, "{s}");
    assert_eq!(s["ok"], 300, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["concurrency"], 16, "{s}");
    assert!(s["req_per_s"].as_f64().unwrap() > 0.0, "{s}");
    let l = &s["latency_us"];
    let q = |k: &str| l[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
    assert!(q("min") <= q("p50") && q("p50") <= q("p90"), "{s}");
    assert!(q("p90") <= q("p99") && q("p99") <= q("max"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_keeps_c_calls_in_flight_on_one_connection() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    // 8 calls of 200 ms with 8 in flight take ~200 ms, not 1.6 s.
    let out = nestling(&[
        "call",
        &addr,
        "slow",
        "200",
        "--repeat",
        "8",
        "--concurrency",
        "8",
        "--json",
    ])
    .await;
    out.expect_code(0);
    let s = out.stdout_json();
    let elapsed = s["elapsed_ms"].as_f64().unwrap();
    assert!((200.0..1200.0).contains(&elapsed), "{s}");
    assert!(s["latency_us"]["min"].as_u64().unwrap() >= 200_000, "{s}");
    assert_eq!(
        calc.peers.lock().unwrap().len(),
        1,
        "all calls share one connection"
    );

    // Concurrency 1 (the default) runs them one after another.
    let out = nestling(&["call", &addr, "slow", "100", "--repeat", "4", "--json"]).await;
    out.expect_code(0);
    let s = out.stdout_json();
    assert!(s["elapsed_ms"].as_f64().unwrap() >= 400.0, "{s}");
    assert_eq!(s["concurrency"], 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeat_counts_errors_and_exits_1() {
    let calc = Calc::default();
    let addr = start(&calc).await;
    let out = nestling(&[
        "call",
        &addr,
        "fail",
        "--repeat",
        "20",
        "--concurrency",
        "4",
        "--json",
    ])
    .await;
    out.expect_code(1);
    let s = out.stdout_json();
    assert_eq!(
        (s["count"].as_u64(), s["errors"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(s["latency_us"], Value::Null, "{s}");
    assert!(out.stderr.contains("20 of 20 calls failed"), "{out:#?}");
    assert!(out.stderr.contains("bad thing"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_prints_items_as_they_arrive() {
    let calc = Calc::default();
    let addr = start(&calc).await;

    let mut proc = Proc::nestling(&["call", &addr, "gated", "3", "--stream"]);
    proc.wait_stdout("`1`", |l| l == "1").await;
    // Item 2 is held back by the service: item 1 was printed on its own, and the
    // command is still waiting.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proc.stdout.snapshot(), vec!["1"], "{}", proc.dump());
    assert!(proc.child.try_wait().unwrap().is_none(), "{}", proc.dump());
    calc.gate.notify_one();
    let status = tokio::time::timeout(WAIT_TIMEOUT, proc.child.wait())
        .await
        .expect("exits after the stream completes")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", proc.dump());
    proc.stdout
        .wait_for(|_| true, 3, WAIT_TIMEOUT)
        .await
        .unwrap_or_else(|why| proc.fail(&why));
    assert_eq!(proc.stdout.snapshot(), vec!["1", "2", "3"]);

    // A plain reply is a one-item stream.
    let out = nestling(&["call", &addr, "sum", "[1,2]", "--stream"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "3\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_error_after_items_exits_1() {
    let calc = Calc::default();
    let addr = start(&calc).await;
    let out = nestling(&["call", &addr, "fails_after", "2", "--stream"]).await;
    out.expect_code(1);
    assert_eq!(out.stdout, "1\n2\n");
    assert_eq!(
        out.stderr,
        "{\"status\":\"error\",\"message\":\"stream broke\"}\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_call_and_emit() {
    let certs = Certs::new("ok");
    let other = Certs::new("other");
    let calc = Calc::default();
    let addr = start_with(
        &calc,
        Some(ServerTls::from_pem_files(certs.cert(), certs.key()).unwrap()),
    )
    .await;
    let ca = certs.cert();

    let out = nestling(&["call", &addr, "sum", "[1,2,3]", "--tls", "--ca", &ca]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    let out = nestling(&[
        "call",
        &addr,
        "echo",
        "求和1111 😀",
        "--tls",
        "--ca",
        &ca,
        "--server-name",
        "localhost",
        "--raw",
    ])
    .await;
    out.expect_code(0);
    assert_eq!(out.stdout, "求和1111 😀\n");
    let out = nestling(&["call", &addr, "sum", "[1]", "--tls", "--insecure"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "1\n");

    nestling(&["emit", &addr, "log", "over tls", "--tls", "--ca", &ca])
        .await
        .expect_code(0);
    assert_eq!(events(&calc, 1).await[0], ("log".into(), json!("over tls")));

    // An untrusted certificate or a wrong name fails the handshake: exit 2.
    let wrong = other.cert();
    for args in [
        vec!["call", &addr, "sum", "[1]", "--tls", "--ca", &wrong],
        vec!["emit", &addr, "log", "x", "--tls", "--ca", &wrong],
        vec![
            "call",
            &addr,
            "sum",
            "[1]",
            "--tls",
            "--ca",
            &ca,
            "--server-name",
            "example.com",
        ],
    ] {
        let out = nestling(&args).await;
        out.expect_code(2);
        assert!(out.stderr.contains("TLS handshake"), "{args:?}: {out:#?}");
    }
    // Plain TCP against the TLS service does not get a reply.
    let out = nestling(&["call", &addr, "sum", "[1]", "--timeout", "2000"]).await;
    out.expect_code(2);
    // A file that is not a certificate is a usage error.
    let key = certs.key();
    let out = nestling(&["call", &addr, "sum", "[1]", "--tls", "--ca", &key]).await;
    out.expect_code(3);
    assert!(out.stderr.contains("no certificate"), "{out:#?}");
}
