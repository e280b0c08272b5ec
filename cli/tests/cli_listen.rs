//! `nestling listen` over real sockets: packets sent by `nestling::Client` (and by the CLI
//! itself) are printed, `--echo` answers requests, bad frames close only their connection,
//! and Ctrl-C stops it cleanly.

mod common;

use std::time::Duration;

use common::{listen, nestling, WAIT_TIMEOUT};
use nestling::{Client, ClientError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The JSON lines printed so far, parsed.
async fn packets(proc: &common::Proc, count: usize) -> Vec<Value> {
    let lines = proc
        .stdout
        .wait_for(|l| l.starts_with('{'), count, WAIT_TIMEOUT)
        .await
        .unwrap_or_else(|why| proc.fail(&why));
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| proc.fail(&format!("{l:?}: {e}"))))
        .collect()
}

fn client(addr: &str) -> Client {
    Client::builder(addr)
        .request_timeout(Some(Duration::from_secs(5)))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_json_prints_events_and_requests() {
    let (proc, addr) = listen(&["--json"]).await;
    let client = client(&addr);

    client.emit("log", "求和1111").await.unwrap();
    client
        .emit(json!({"ev": "audit", "a": 1}), &json!({"u": "😀"}))
        .await
        .unwrap();
    let first = packets(&proc, 2).await;
    let peer = first[0]["peer"].as_str().unwrap().to_string();
    assert!(peer.starts_with("127.0.0.1:"), "{first:?}");
    assert_eq!(
        first[0],
        json!({"peer": peer, "kind": "event", "pattern": "log", "data": "求和1111"})
    );
    // `emit` sends object patterns in Nest's normalised string form.
    assert_eq!(
        first[1],
        json!({
            "peer": peer,
            "kind": "event",
            "pattern": r#"{"a":1,"ev":"audit"}"#,
            "data": {"u": "😀"},
        })
    );

    // listen answers nothing: the request times out, but it was printed with its id.
    let err = client
        .send_with_timeout::<_, _, Value>("sum", &[1, 2, 3], Some(Duration::from_millis(300)))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
    let all = packets(&proc, 3).await;
    assert_eq!(all[2]["kind"], "request", "{all:?}");
    assert_eq!(all[2]["pattern"], "sum");
    assert_eq!(all[2]["data"], json!([1, 2, 3]));
    assert!(all[2]["id"].is_string(), "{all:?}");
    assert_eq!(all[2]["peer"], peer.as_str(), "same client connection");

    // Object pattern on a request: sent as the raw object.
    let _ = client
        .send_with_timeout::<_, _, Value>(
            json!({"cmd": "sum"}),
            &[4],
            Some(Duration::from_millis(100)),
        )
        .await;
    let all = packets(&proc, 4).await;
    assert_eq!(all[3]["pattern"], json!({"cmd": "sum"}), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_text_mode_shows_kind_pattern_data_and_id() {
    let (proc, addr) = listen(&[]).await;
    nestling(&["emit", &addr, "log", "求和1111"])
        .await
        .expect_code(0);
    let line = proc
        .wait_stdout("an event line", |l| l.contains(" event "))
        .await;
    assert!(
        line.ends_with(r#"event     pattern="log" data="求和1111""#),
        "{line:?}"
    );
    let _ = client(&addr)
        .send_with_timeout::<_, _, Value>("sum", &[1, 2], Some(Duration::from_millis(100)))
        .await;
    let line = proc
        .wait_stdout("a request line", |l| l.contains(" request "))
        .await;
    assert!(
        line.ends_with(r#"request   pattern="sum" data=[1,2] id="1""#),
        "{line:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_echo_answers_requests() {
    let (proc, addr) = listen(&["--echo", "--json"]).await;
    let client = client(&addr);

    // Astral characters: the reply frame's length must count UTF-16 units.
    let data = json!({"s": "a😀b 求和1111", "n": [1, 2.5, null]});
    let back: Value = client.send("anything", &data).await.unwrap();
    assert_eq!(back, data);
    let back: Value = client.send(json!({"cmd": "sum"}), &"😀😀😀").await.unwrap();
    assert_eq!(back, json!("😀😀😀"));
    // Events get no reply, and the connection keeps working.
    client.emit("log", "x").await.unwrap();
    let back: i64 = client.send("n", &7).await.unwrap();
    assert_eq!(back, 7);
    packets(&proc, 4).await;

    // The CLI against the CLI.
    let out = nestling(&["call", &addr, "echo", r#"{"x":"求和"}"#, "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "{\"x\":\"求和\"}\n");
    let out = nestling(&[
        "call",
        &addr,
        "echo",
        "[1,2]",
        "--repeat",
        "50",
        "--concurrency",
        "5",
        "--json",
    ])
    .await;
    out.expect_code(0);
    assert_eq!(out.stdout_json()["errors"], 0);
}

/// Writes raw bytes and waits (bounded) for the peer to close the connection.
async fn closed_after(addr: &str, bytes: &[u8]) -> bool {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    sock.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT_TIMEOUT, sock.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_survives_bad_frames() {
    let (proc, addr) = listen(&["--json"]).await;

    // A corrupted length and invalid JSON each close their own connection…
    assert!(closed_after(&addr, b"abc#{}").await, "{}", proc.dump());
    assert!(closed_after(&addr, b"5#{abc}").await, "{}", proc.dump());
    proc.wait_stderr("a bad-frame log line", |l| l.contains("bad frame"))
        .await;
    proc.wait_stderr("an invalid-JSON log line", |l| l.contains("not valid JSON"))
        .await;

    // …while valid non-packet JSON is an undefined packet, and the listener keeps serving.
    let mut sock = TcpStream::connect(&addr).await.unwrap();
    sock.write_all(b"1#5").await.unwrap();
    let first = packets(&proc, 1).await;
    assert_eq!(first[0]["kind"], "undefined");
    assert_eq!(first[0]["frame"], 5);
    // (The client must outlive the emit: `Client::emit` only queues the frame, and a client
    // dropped at once closes its connection before the frame is written.)
    let live = client(&addr);
    live.emit("log", "still here").await.unwrap();
    let all = packets(&proc, 2).await;
    assert_eq!(all[1]["data"], "still here", "{all:?}");
    assert!(proc.child.id().is_some(), "still running");
}

/// Sends `signal` (e.g. `-INT`) to the process and checks it exits 0 with `stopped (why)`.
#[cfg(unix)]
async fn stops_on(proc: &mut common::Proc, signal: &str, why: &str) {
    let pid = proc.child.id().expect("running").to_string();
    let kill = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = tokio::time::timeout(WAIT_TIMEOUT, proc.child.wait())
        .await
        .unwrap_or_else(|_| proc.fail(&format!("did not stop after {signal}")))
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", proc.dump());
    proc.wait_stderr("the stop line", |l| l.contains(&format!("stopped ({why})")))
        .await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_stops_cleanly_on_ctrl_c() {
    let (mut proc, addr) = listen(&["--json"]).await;
    // An open connection must not keep it alive.
    let _idle = TcpStream::connect(&addr).await.unwrap();
    let live = client(&addr);
    live.emit("log", &1).await.unwrap();
    packets(&proc, 1).await;
    stops_on(&mut proc, "-INT", "interrupted").await;
    proc.wait_stderr("the packet count", |l| {
        l.ends_with("; 1 packet(s) received")
    })
    .await;

    // A signal right after the `listening on` line is handled too; so is SIGTERM.
    let (mut proc, _) = listen(&[]).await;
    stops_on(&mut proc, "-INT", "interrupted").await;
    let (mut proc, _) = listen(&[]).await;
    stops_on(&mut proc, "-TERM", "terminated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_on_a_busy_port_exits_2() {
    let (_proc, addr) = listen(&[]).await;
    let out = nestling(&["listen", &addr]).await;
    out.expect_code(2);
    assert!(out.stderr.contains("could not listen"), "{out:#?}");
}
