//! Interop with real NestJS processes (`tests/nest`, `@nestjs/microservices` over TCP).
//!
//! Every test runs over real sockets on 127.0.0.1 with ephemeral ports, in both
//! directions: Nest → Rust (the Nest gateway and Nest's own `ClientTCP` against nestling
//! servers) and Rust → Nest (nestling's clients and the Rust gateway against Nest's
//! microservice). The Nest user service is the oracle: the same client script run against
//! it and against a nestling server must print the same line.
//!
//! Needs Node >= 20 and `npm ci` in `tests/nest`. Without them the tests print `SKIPPED`
//! and pass, except when `CI` is set: then they fail.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestling::{Client, ClientError, RpcException, Server, NO_HANDLER_MESSAGE};
use serde_json::{json, Value};
use support::{
    eventually, http_get, http_get_within, init_tracing, require_node, run_nest_client,
    spawn_example, spawn_node, RunningServer, WAIT_TIMEOUT,
};

/// What the seed's gateway emits before every sum.
const SEED_LOG: &str = "求和1111";

/// Strings received by a `log` event handler.
type Received = Arc<Mutex<Vec<String>>>;

fn received(log: &Received) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Waits until `log` holds at least `n` entries and returns them.
async fn wait_received(log: &Received, n: usize) -> Vec<String> {
    match eventually(WAIT_TIMEOUT, || {
        let now = received(log);
        (now.len() >= n).then_some(now)
    })
    .await
    {
        Some(v) => v,
        None => panic!(
            "the Rust `log` handler received {:?} within {WAIT_TIMEOUT:?}; expected {n} entries",
            received(log)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Rust controllers served in-process
// ---------------------------------------------------------------------------------------

/// The seed's user service, with state: `log` records what it receives.
struct RecordingUsers {
    logs: Received,
}

#[nestling::controller]
impl RecordingUsers {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[event_pattern("log")]
    fn log(&self, text: String) {
        self.logs.lock().unwrap().push(text);
    }
}

/// Mirrors every handler of `tests/nest/user-service.mjs`.
struct NestMirror {
    logs: Received,
}

#[nestling::controller]
impl NestMirror {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern({ cmd: "sum" })]
    fn sum_cmd(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[event_pattern("log")]
    fn log(&self, text: String) {
        self.logs.lock().unwrap().push(text);
    }

    #[message_pattern("echo")]
    fn echo(&self, data: Value) -> Value {
        data
    }

    #[message_pattern("fail")]
    fn fail(&self) -> Result<i64, RpcException> {
        Err(RpcException::new("bad thing"))
    }

    #[message_pattern("fail_obj")]
    fn fail_obj(&self) -> Result<i64, RpcException> {
        Err(RpcException::new(json!({"code": 42, "message": "m"})))
    }

    #[message_pattern("boom")]
    fn boom(&self) -> Result<i64, std::io::Error> {
        Err(std::io::Error::other("boom"))
    }

    #[message_pattern("slow")]
    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

async fn start_recording_users() -> (RunningServer, Received) {
    let logs = Received::default();
    let server = Server::builder()
        .discover(false)
        .controller(RecordingUsers { logs: logs.clone() })
        .build()
        .expect("build server");
    (RunningServer::start(server).await, logs)
}

async fn start_nest_mirror() -> (RunningServer, Received) {
    let logs = Received::default();
    let server = Server::builder()
        .discover(false)
        .controller(NestMirror { logs: logs.clone() })
        .build()
        .expect("build server");
    (RunningServer::start(server).await, logs)
}

// ---------------------------------------------------------------------------------------
// The Nest user service's patterns, as a typed Rust client
// ---------------------------------------------------------------------------------------

#[nestling::client]
pub trait UserService {
    #[message_pattern("sum")]
    async fn sum(nums: Vec<i64>) -> i64;

    #[message_pattern({ cmd: "sum" })]
    async fn sum_cmd(nums: Vec<i64>) -> i64;

    #[event_pattern("log")]
    async fn log(text: String);

    #[message_pattern("echo")]
    async fn echo(data: Value) -> Value;

    #[message_pattern("fail")]
    async fn fail(data: i64) -> i64;

    #[message_pattern("slow")]
    async fn slow(ms: u64) -> u64;
}

/// The raw `err` of a [`ClientError::Remote`]; panics on anything else.
fn remote_err<T: std::fmt::Debug>(what: &str, r: Result<T, ClientError>) -> nestling::RemoteError {
    match r {
        Err(ClientError::Remote { error, .. }) => error,
        other => panic!("{what}: expected ClientError::Remote, got {other:?}"),
    }
}

/// Payloads that must survive a round trip through `echo` unchanged, the last one a long
/// string of `long_repeats` × `求和😀#` (5 UTF-16 units, 11 UTF-8 bytes each).
///
/// `client.mjs` prints its result and then calls `process.exit`, which cuts a pipe write
/// after 64 KiB, so runs through it stay well below that.
fn echo_payloads(long_repeats: usize) -> Vec<Value> {
    let long: String = "求和😀#".repeat(long_repeats);
    vec![
        json!(SEED_LOG),
        json!("a😀b"),
        json!("求和1111 😀"),
        json!("##12#34#"),
        json!("10#{\"pattern\":\"sum\",\"data\":[1]}"),
        json!("say \"hi\" \\ back\\slash \\u0041 \\\" end"),
        json!("line\u{2028}sep\u{2029}para"),
        json!("\u{0}\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1b}\u{1f}\u{7f}\u{80}\u{9f}"),
        json!("\u{feff}bom \u{fffd} \u{10ffff} 𝄞 👩‍👩‍👧 é"),
        json!(""),
        json!(0),
        json!(false),
        json!(-17),
        json!(0.5),
        json!(1e21),
        json!(9_007_199_254_740_991i64),
        json!([]),
        json!({}),
        json!([1, "二", [3, ["😀"]], {"k": null}]),
        json!({
            "a": [1, {"b": "😀", "c": [null, true, false, -1.25]}],
            "k#": "v#1",
            "": {"ü": "\u{2028}", "q\"": "\\"},
            "nested": {"deeper": {"deepest": {"x": ["求和1111"]}}}
        }),
        Value::String(long),
    ]
}

// ---------------------------------------------------------------------------------------
// 1. Nest gateway → Rust user service (in-process)
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn nest_gateway_calls_rust_user_service() {
    let Some(node) = require_node("nest_gateway_calls_rust_user_service") else {
        return;
    };
    init_tracing();
    let (server, logs) = start_recording_users().await;
    let port = server.port().to_string();
    let gateway = spawn_node(&node, "gateway.mjs", &[("USER_SERVICE_PORT", &port)]).await;

    let cases = [
        ("1,2,3", "6"),
        ("-5,3", "-2"),
        ("10,-20,7,0", "-3"),
        ("-1,-2,-3", "-6"),
    ];
    for (i, (num, want)) in cases.iter().enumerate() {
        let resp = http_get(gateway.port, &format!("/sum?num={num}"))
            .await
            .unwrap_or_else(|e| gateway.fail(&e));
        if resp.status != 200 || resp.body != *want {
            gateway.fail(&format!(
                "GET /sum?num={num}: expected 200 {want:?}, got {} {:?}",
                resp.status, resp.body
            ));
        }
        // Every request emits `log` once; the Rust handler must have recorded each.
        let got = wait_received(&logs, i + 1).await;
        assert!(
            got.iter().all(|s| s == SEED_LOG),
            "the Rust log handler received {got:?}"
        );
    }
    assert_eq!(received(&logs), vec![SEED_LOG.to_string(); cases.len()]);
    drop(gateway);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 2. Rust client → Nest user service
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rust_client_calls_nest_user_service() {
    let Some(node) = require_node("rust_client_calls_nest_user_service") else {
        return;
    };
    init_tracing();
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let client = Client::builder(nest.addr())
        .request_timeout(Some(Duration::from_secs(10)))
        .build();
    let users = UserServiceClient::new(client.clone());

    // sum, string and object patterns, untyped and typed.
    let sum: i64 = client.send("sum", &[1, 2, 3]).await.expect("send sum");
    assert_eq!(sum, 6);
    let sum: i64 = client.send("sum", &[-5, 3, -10]).await.expect("send sum");
    assert_eq!(sum, -12);
    let sum: i64 = client
        .send(json!({"cmd": "sum"}), &[1, 2])
        .await
        .expect("send {cmd:sum}");
    assert_eq!(sum, 3);
    assert_eq!(users.sum(vec![4, 5, 6]).await.expect("typed sum"), 15);
    assert_eq!(users.sum(vec![]).await.expect("typed sum of nothing"), 0);
    assert_eq!(
        users.sum_cmd(vec![7, -8]).await.expect("typed {cmd:sum}"),
        -1
    );

    // Echo round trips, untyped and typed.
    for payload in echo_payloads(50_000) {
        let back: Value = client.send("echo", &payload).await.expect("send echo");
        assert_eq!(back, payload, "echo changed the payload");
        let back = users.echo(payload.clone()).await.expect("typed echo");
        assert_eq!(back, payload, "typed echo changed the payload");
    }
    let text: String = client.send("echo", SEED_LOG).await.expect("echo &str");
    assert_eq!(text, SEED_LOG);
    // `null` data is refused by Nest's client but a Nest server takes it: echoed as null.
    let back: Value = client.send("echo", &Value::Null).await.expect("echo null");
    assert_eq!(back, Value::Null);

    // Errors keep Nest's `err` value intact.
    let e = remote_err("fail", client.send::<_, _, Value>("fail", &1).await);
    assert_eq!(
        e.value(),
        &json!({"status": "error", "message": "bad thing"})
    );
    assert_eq!(e.message(), Some("bad thing"));
    assert!(!e.is_no_handler());
    let e = remote_err("typed fail", users.fail(1).await);
    assert_eq!(
        e.value(),
        &json!({"status": "error", "message": "bad thing"})
    );
    let e = remote_err("fail_obj", client.send::<_, _, Value>("fail_obj", &1).await);
    assert_eq!(e.value(), &json!({"code": 42, "message": "m"}));
    let e = remote_err("boom", client.send::<_, _, Value>("boom", &1).await);
    assert_eq!(
        e.value(),
        &json!({"status": "error", "message": "Internal server error"})
    );
    let e = remote_err("nope", client.send::<_, _, Value>("nope", &1).await);
    assert_eq!(e.value(), &json!(NO_HANDLER_MESSAGE));
    assert_eq!(
        e.value(),
        &json!("There is no matching message handler defined in the remote service.")
    );
    assert!(e.is_no_handler());
    let e = remote_err(
        "unknown object pattern",
        client.send::<_, _, Value>(json!({"cmd": "nope"}), &1).await,
    );
    assert!(e.is_no_handler(), "{e:?}");

    // The connection survives errors.
    assert_eq!(users.sum(vec![1, 1]).await.expect("sum after errors"), 2);

    // Events: Nest prints one `EVENT log <json>` line per event.
    client.emit("log", SEED_LOG).await.expect("emit log");
    nest.wait_lines("EVENT log \"求和1111\"", 1).await;
    users
        .log(SEED_LOG.to_string())
        .await
        .expect("typed emit log");
    nest.wait_lines("EVENT log \"求和1111\"", 2).await;
    users
        .log("a😀b \"q\"".to_string())
        .await
        .expect("emit emoji");
    nest.wait_line(r#"EVENT log "a😀b \"q\"""#).await;

    // 200 concurrent requests on one connection, each with its own delay (a permutation of
    // 0..200 ms), so replies complete out of order; each caller gets its own value.
    let delays: Vec<u64> = (0..200u64).map(|i| (i * 73) % 200).collect();
    let calls = delays.iter().enumerate().map(|(i, &ms)| {
        let client = client.clone();
        let users = users.clone();
        async move {
            if i % 2 == 0 {
                client.send::<_, _, u64>("slow", &ms).await
            } else {
                users.slow(ms).await
            }
        }
    });
    let results = futures_util::future::join_all(calls).await;
    for (ms, got) in delays.iter().zip(results) {
        assert_eq!(got.expect("slow"), *ms, "a reply reached the wrong caller");
    }
    // Everything above used one connection; it is still fine.
    assert_eq!(users.sum(vec![2, 2]).await.expect("sum at the end"), 4);
}

// ---------------------------------------------------------------------------------------
// 3. Nest client → Rust server, differential against the Nest user service
// ---------------------------------------------------------------------------------------

/// The op list for `client.mjs`, and the result each op must give.
fn differential_ops() -> (Vec<Value>, Vec<Value>) {
    let send =
        |pattern: Value, data: Value| json!({"op": "send", "pattern": pattern, "data": data});
    let mut ops = Vec::new();
    let mut want = Vec::new();
    let mut case = |op: Value, expected: Value| {
        ops.push(op);
        want.push(expected);
    };
    case(send(json!("sum"), json!([1, 2, 3])), json!({"ok": 6}));
    case(send(json!("sum"), json!([-5, 10, -20])), json!({"ok": -15}));
    case(send(json!({"cmd": "sum"}), json!([1, 2])), json!({"ok": 3}));
    // The object pattern as a JSON string reaches the same handler (Nest re-parses it).
    case(
        send(json!("{\"cmd\":\"sum\"}"), json!([4, 5])),
        json!({"ok": 9}),
    );
    for payload in echo_payloads(2_000) {
        case(send(json!("echo"), payload.clone()), json!({"ok": payload}));
    }
    case(
        send(json!("fail"), json!(1)),
        json!({"err": {"status": "error", "message": "bad thing"}}),
    );
    case(
        send(json!("fail_obj"), json!(1)),
        json!({"err": {"code": 42, "message": "m"}}),
    );
    case(
        send(json!("boom"), json!(1)),
        json!({"err": {"status": "error", "message": "Internal server error"}}),
    );
    case(
        send(json!("nope"), json!(1)),
        json!({"err": "There is no matching message handler defined in the remote service."}),
    );
    case(
        send(json!({"cmd": "nope"}), json!(1)),
        json!({"err": "There is no matching message handler defined in the remote service."}),
    );
    case(send(json!("slow"), json!(60)), json!({"ok": 60}));
    case(send(json!("slow"), json!(0)), json!({"ok": 0}));
    case(send(json!("slow"), json!(25)), json!({"ok": 25}));
    case(
        json!({"op": "emit", "pattern": "log", "data": "求和1111 😀"}),
        json!({"ok": null}),
    );
    case(
        json!({"op": "emit", "pattern": "log", "data": SEED_LOG}),
        json!({"ok": null}),
    );
    (ops, want)
}

#[tokio::test(flavor = "multi_thread")]
async fn nest_client_gets_identical_results_from_rust_and_nest_servers() {
    let Some(node) = require_node("nest_client_gets_identical_results_from_rust_and_nest_servers")
    else {
        return;
    };
    init_tracing();
    let (ops, want) = differential_ops();
    let ops_text = serde_json::to_string(&ops).unwrap();

    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let (server, logs) = start_nest_mirror().await;

    let from_nest = run_nest_client(&node, &nest.addr(), &ops_text).await;
    let from_rust = run_nest_client(&node, &server.addr.to_string(), &ops_text).await;

    // The oracle first: the Nest service gives the expected literal values.
    let parsed: Vec<Value> = serde_json::from_str(&from_nest).expect("client.mjs JSON");
    assert_eq!(parsed.len(), want.len());
    for ((op, got), expected) in ops.iter().zip(&parsed).zip(&want) {
        assert_eq!(got, expected, "Nest server, op {op}");
    }
    // The Rust server must be indistinguishable, byte for byte.
    if from_rust != from_nest {
        let rust: Vec<Value> = serde_json::from_str(&from_rust).unwrap_or_default();
        for (i, op) in ops.iter().enumerate() {
            let n = parsed.get(i);
            let r = rust.get(i);
            if n != r {
                eprintln!("op {op}\n  nest: {n:?}\n  rust: {r:?}");
            }
        }
        panic!("client.mjs output differs:\nnest: {from_nest}\nrust: {from_rust}");
    }

    // Both servers got the events.
    nest.wait_line("EVENT log \"求和1111 😀\"").await;
    nest.wait_line("EVENT log \"求和1111\"").await;
    let mut got = wait_received(&logs, 2).await;
    got.sort();
    assert_eq!(got, vec![SEED_LOG.to_string(), "求和1111 😀".to_string()]);
    server.stop().await;
}

/// `echo` that keeps the payload's JSON text as received, like a JS handler returning `data`.
struct RawEcho;

#[nestling::controller]
impl RawEcho {
    #[message_pattern("echo")]
    fn echo(&self, data: Box<serde_json::value::RawValue>) -> Box<serde_json::value::RawValue> {
        data
    }

    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

/// A lone surrogate (`"x\ud800y"`) is valid JSON text and a JS string holds it; Nest echoes
/// it back escaped. `serde_json` cannot hold one in a `String`/`Value`, but a handler taking
/// the raw JSON text (`Box<RawValue>`) must pass it through exactly as Nest does.
#[tokio::test(flavor = "multi_thread")]
async fn nest_client_lone_surrogate_echo_matches_nest() {
    let Some(node) = require_node("nest_client_lone_surrogate_echo_matches_nest") else {
        return;
    };
    init_tracing();
    let ops = r#"[{"op":"send","pattern":"echo","data":"x\ud800y"},{"op":"send","pattern":"echo","data":{"s":["\udfff😀\ud83d"]}},{"op":"send","pattern":"sum","data":[1,2]}]"#;
    let expected = r#"[{"ok":"x\ud800y"},{"ok":{"s":["\udfff😀\ud83d"]}},{"ok":3}]"#;
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let server = RunningServer::start(
        Server::builder()
            .discover(false)
            .controller(RawEcho)
            .build()
            .expect("build server"),
    )
    .await;
    let from_nest = run_nest_client(&node, &nest.addr(), ops).await;
    assert_eq!(from_nest, expected, "Nest server");
    let from_rust = run_nest_client(&node, &server.addr.to_string(), ops).await;
    assert_eq!(from_rust, from_nest, "the Rust server differs from Nest");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. Rust gateway example → Nest user service
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn rust_gateway_example_calls_nest_user_service() {
    let Some(node) = require_node("rust_gateway_example_calls_nest_user_service") else {
        return;
    };
    init_tracing();
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let nest_port = nest.port.to_string();
    let gateway = spawn_example("gateway", &[("USER_SERVICE_PORT", &nest_port)]).await;

    let resp = http_get(gateway.port, "/sum?num=1,2,3")
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
    assert_eq!((resp.status, resp.body.as_str()), (200, "6"), "{resp:?}");
    nest.wait_lines("EVENT log \"求和1111\"", 1).await;

    let resp = http_get(gateway.port, "/sum?num=-4,10,-20")
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
    assert_eq!((resp.status, resp.body.as_str()), (200, "-14"), "{resp:?}");
    nest.wait_lines("EVENT log \"求和1111\"", 2).await;

    // A bad number is the caller's mistake: 400 with a message, and nothing is sent.
    let resp = http_get(gateway.port, "/sum?num=1,x")
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(
        resp.body.contains("integer") && resp.body.contains('x'),
        "400 without a useful message: {resp:?}"
    );
}

/// Once the Nest service is gone, every request answers 503 promptly instead of hanging:
/// the first one (whose connection just died) and the ones after it.
#[tokio::test(flavor = "multi_thread")]
async fn rust_gateway_example_answers_503_when_nest_user_service_is_down() {
    let Some(node) =
        require_node("rust_gateway_example_answers_503_when_nest_user_service_is_down")
    else {
        return;
    };
    init_tracing();
    let mut nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let nest_port = nest.port.to_string();
    let gateway = spawn_example("gateway", &[("USER_SERVICE_PORT", &nest_port)]).await;

    // Connected and working first.
    let resp = http_get(gateway.port, "/sum?num=1,2,3")
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
    assert_eq!((resp.status, resp.body.as_str()), (200, "6"), "{resp:?}");
    nest.wait_lines("EVENT log \"求和1111\"", 1).await;

    nest.kill().await;
    for (i, num) in ["1", "2", "3"].iter().enumerate() {
        let resp = http_get_within(
            gateway.port,
            &format!("/sum?num={num}"),
            Duration::from_secs(8),
        )
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
        if resp.status != 503 || resp.body.is_empty() {
            gateway.fail(&format!(
                "request {} after the service died: expected 503 with a message, got {resp:?}",
                i + 1
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------
// 5. Nest gateway → Rust user_service example
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn nest_gateway_calls_rust_user_service_example() {
    let Some(node) = require_node("nest_gateway_calls_rust_user_service_example") else {
        return;
    };
    init_tracing();
    let users = spawn_example("user_service", &[]).await;
    let users_port = users.port.to_string();
    let gateway = spawn_node(&node, "gateway.mjs", &[("USER_SERVICE_PORT", &users_port)]).await;

    let resp = http_get(gateway.port, "/sum?num=1,2,3")
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
    if (resp.status, resp.body.as_str()) != (200, "6") {
        users.fail(&format!(
            "GET /sum?num=1,2,3: expected 200 \"6\", got {resp:?}"
        ));
    }
    users.wait_lines(SEED_LOG, 1).await;

    let resp = http_get(gateway.port, "/sum?num=-7,2")
        .await
        .unwrap_or_else(|e| gateway.fail(&e));
    if (resp.status, resp.body.as_str()) != (200, "-5") {
        users.fail(&format!(
            "GET /sum?num=-7,2: expected 200 \"-5\", got {resp:?}"
        ));
    }
    users.wait_lines(SEED_LOG, 2).await;
}
