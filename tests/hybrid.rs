//! The hybrid app of `examples/hybrid.rs` (Nest's `connectMicroservice`,
//! `startAllMicroservices` and `listen`) as a process: HTTP, TCP and NATS answer at once;
//! what RPC writes, HTTP reads (and the other way round); SIGINT stops every part after
//! answering the requests in flight on all three, and the controller's `on_shutdown` runs
//! once, last.
//!
//! Needs `nats-server` (skips loudly without it, fails when `CI` is set).

mod support;

use std::time::Duration;

use nestling::Client;
use serde_json::{json, Value};
use support::nats::{require_nats, NatsServer};
use support::{http_get, init_tracing, spawn_example, WAIT_TIMEOUT};

#[tokio::test]
async fn http_tcp_and_nats_share_state_and_stop_together() {
    init_tracing();
    let Some(bin) = require_nats("http_tcp_and_nats_share_state_and_stop_together") else {
        return;
    };
    let nats = NatsServer::start(&bin).await;
    let nats_url = nats.url();
    let mut app = spawn_example("hybrid", &[("HTTP_PORT", "0"), ("NATS_URL", &nats_url)]).await;
    let http_line = app
        .stdout
        .wait_for(|l| l.starts_with("HTTP "), 1, WAIT_TIMEOUT)
        .await
        .unwrap_or_else(|why| app.fail(&format!("no HTTP line: {why}")));
    let http_port: u16 = http_line[0]["HTTP ".len()..].trim().parse().unwrap();
    assert_eq!(app.count_lines("STARTED"), 1, "on_start runs once");

    // RPC writes over TCP and over NATS…
    let tcp = Client::new(app.addr());
    let over_nats = Client::new(nats_url.clone());
    assert_eq!(
        tcp.send::<_, _, usize>("note.add", "from tcp")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        over_nats
            .send::<_, _, usize>("note.add", "from nats")
            .await
            .unwrap(),
        2
    );
    // …HTTP reads them; HTTP writes, RPC reads.
    let notes = http_get(http_port, "/notes").await.unwrap();
    assert_eq!(notes.status, 200, "{notes:?}");
    let notes: Value = serde_json::from_str(&notes.body).unwrap();
    assert_eq!(notes, json!(["from tcp", "from nats"]));
    let added = http_get(http_port, "/notes/add/from-http").await.unwrap();
    assert_eq!(added.body, "3");
    let seen: Vec<String> = over_nats.send("notes", &()).await.unwrap();
    assert_eq!(seen, ["from tcp", "from nats", "from-http"]);

    // Work in flight on every part when the signal comes.
    let slow_tcp = tokio::spawn({
        let tcp = tcp.clone();
        async move { tcp.send::<_, _, u64>("slow", &700).await }
    });
    let slow_nats = tokio::spawn({
        let over_nats = over_nats.clone();
        async move { over_nats.send::<_, _, u64>("slow", &700).await }
    });
    let slow_http = tokio::spawn(async move {
        support::http_get_within(http_port, "/slow?ms=700", WAIT_TIMEOUT).await
    });
    app.wait_lines("SLOW rpc 700", 2).await;
    app.wait_line("SLOW http 700").await;
    app.interrupt().await;

    assert_eq!(slow_tcp.await.unwrap().unwrap(), 700);
    assert_eq!(slow_nats.await.unwrap().unwrap(), 700);
    let slow_http = slow_http.await.unwrap().unwrap();
    assert_eq!((slow_http.status, slow_http.body.as_str()), (200, "700"));

    // Stopped cleanly: every request answered before on_shutdown, which ran once, last.
    let lines = app.stdout.snapshot();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| l == line)
            .unwrap_or_else(|| app.fail(&format!("no {line:?} line")))
    };
    assert_eq!(
        app.count_lines("SHUTDOWN notes=3"),
        1,
        "on_shutdown runs once"
    );
    assert!(at("SLOW http done") < at("SHUTDOWN notes=3"));
    let last_rpc = lines
        .iter()
        .rposition(|l| l == "SLOW rpc done")
        .unwrap_or_else(|| app.fail("no SLOW rpc done line"));
    assert!(last_rpc < at("SHUTDOWN notes=3"));
    assert!(
        at("SHUTDOWN notes=3") < at("STOPPED"),
        "run returned Ok after the hooks"
    );

    // Nothing listens any more.
    let port = app.port;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err());
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", http_port))
        .await
        .is_err());
    let gone = tokio::time::timeout(
        Duration::from_secs(5),
        over_nats.send::<_, _, Vec<String>>("notes", &()),
    )
    .await
    .expect("a NATS call with nobody subscribed fails at once");
    assert!(gone.is_err(), "{gone:?}");
}
