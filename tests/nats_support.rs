//! Self-test of the NATS test infrastructure (`tests/support/nats.rs`): a real `nats-server`
//! and the NestJS peers of `tests/nest` in NATS mode, talking to each other (Nest ↔ Nest).
//!
//! Without `nats-server` or Node these tests print `SKIPPED`; with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::time::Duration;

use support::nats::{
    require_nats, require_nest_nats, run_nest_nats_client, spawn_nest_nats_service, NatsServer,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;

/// Reads the `INFO` line a fresh connection to `addr` gets.
async fn info_line(addr: &str) -> String {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(stream).read_line(&mut line),
    )
    .await
    .expect("no INFO line within 5 s")
    .expect("read INFO");
    line
}

/// Nest client → nats-server → Nest user service: a request, an emit, and a request nobody
/// subscribes to (the no-responders path).
#[tokio::test]
async fn nest_client_reaches_nest_service_over_nats() {
    let test = "nest_client_reaches_nest_service_over_nats";
    let Some(nats) = require_nats(test) else {
        return;
    };
    let Some(node) = require_nest_nats(test) else {
        return;
    };
    let server = NatsServer::start(&nats).await;
    let nest = spawn_nest_nats_service(&node, &server.url(), None, None).await;

    let out = run_nest_nats_client(
        &node,
        &server.url(),
        r#"[{"op":"send","pattern":"sum","data":[1,2,3]},
            {"op":"emit","pattern":"log","data":"求和1111"},
            {"op":"send","pattern":{"cmd":"sum"},"data":[1,2]},
            {"op":"send","pattern":"whoami","data":1},
            {"op":"send","pattern":"nope","data":1}]"#,
    )
    .await;
    assert_eq!(
        out,
        concat!(
            r#"[{"ok":6},{"ok":null},{"ok":3},{"ok":"nest"},"#,
            r#"{"err":{"message":"Empty response. There are no subscribers listening to that message (\"nope\")","name":"Error"}}]"#
        ),
        "{}",
        server.output()
    );
    nest.wait_line(r#"EVENT log "求和1111""#).await;
}

/// Two Nest services in one queue group: requests are spread over both instances.
#[tokio::test]
async fn queue_group_spreads_requests_over_instances() {
    let test = "queue_group_spreads_requests_over_instances";
    let Some(nats) = require_nats(test) else {
        return;
    };
    let Some(node) = require_nest_nats(test) else {
        return;
    };
    let server = NatsServer::start(&nats).await;
    let url = server.url();
    let (_a, _b) = tokio::join!(
        spawn_nest_nats_service(&node, &url, Some("users"), Some("a")),
        spawn_nest_nats_service(&node, &url, Some("users"), Some("b")),
    );
    let ops = format!(
        "[{}]",
        vec![r#"{"op":"send","pattern":"whoami","data":1}"#; 40].join(",")
    );
    let out = run_nest_nats_client(&node, &server.url(), &ops).await;
    let a = out.matches(r#"{"ok":"a"}"#).count();
    let b = out.matches(r#"{"ok":"b"}"#).count();
    assert_eq!(a + b, 40, "every request answered once: {out}");
    // Random spread: both instances answering 0 of 40 has probability 2^-39.
    assert!(a > 0 && b > 0, "both instances answer: {out}");
}

/// `stop` / `restart` keep the URL: a client gets a fresh `INFO` on the same port.
#[tokio::test]
async fn nats_server_restarts_on_the_same_port() {
    let Some(nats) = require_nats("nats_server_restarts_on_the_same_port") else {
        return;
    };
    let mut server = NatsServer::start(&nats).await;
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    assert!(info_line(&server.addr()).await.starts_with("INFO {"));

    server.stop().await;
    assert!(!server.is_running());
    assert!(
        TcpStream::connect(server.addr()).await.is_err(),
        "nothing listens while stopped"
    );

    server.restart().await;
    assert_eq!(server.port(), port);
    assert!(info_line(&server.addr()).await.starts_with("INFO {"));
}
