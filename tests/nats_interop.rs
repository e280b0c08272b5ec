//! NATS interop with real NestJS (`tests/nest`, `Transport.NATS`, `@nats-io/transport-node`)
//! through a real `nats-server`, both directions:
//!
//! * Nest's `ClientNats` gets the same answers from a nestling service as from the Nest
//!   service (requests, object patterns, streams, errors, events with object patterns);
//! * nestling's `Client` calls the Nest service;
//! * the raw replies of both services to the same NATS messages are equal byte for byte,
//!   including messages Nest treats specially (no `id`, not a Nest packet, no reply
//!   subject, invalid JSON).
//!
//! Without `nats-server` or Node these tests print `SKIPPED`; with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod mirror;
mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use mirror::Mirror;
use nestling::nats::{async_nats, NatsServe};
use nestling::{Client, ClientError, Server};
use serde_json::{json, Value};
use support::nats::{
    require_nats, require_nest_nats, run_nest_nats_client, spawn_nest_nats_service, NatsServer,
};

/// A nestling service with the mirror controller, subscribed on `nats`.
async fn nestling_service(nats: &NatsServer) -> tokio::task::JoinHandle<()> {
    let listening = Server::builder()
        .discover(false)
        .controller(Mirror::default())
        .build()
        .unwrap()
        .listen_nats(NatsServe::new(nats.url()))
        .await
        .unwrap();
    tokio::spawn(async move {
        listening.serve().await.unwrap();
    })
}

/// Both services, each on a NATS server of its own (they subscribe the same subjects).
struct Pair {
    nest_nats: NatsServer,
    rust_nats: NatsServer,
    _nest: support::Proc,
    rust: tokio::task::JoinHandle<()>,
    node: std::path::PathBuf,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.rust.abort();
    }
}

async fn pair(test: &str) -> Option<Pair> {
    let bin = require_nats(test)?;
    let node = require_nest_nats(test)?;
    let nest_nats = NatsServer::start(&bin).await;
    let rust_nats = NatsServer::start(&bin).await;
    let nest = spawn_nest_nats_service(&node, &nest_nats.url(), None, None).await;
    let rust = nestling_service(&rust_nats).await;
    Some(Pair {
        nest_nats,
        rust_nats,
        _nest: nest,
        rust,
        node,
    })
}

async fn nest_client(node: &Path, nats: &NatsServer, ops: &Value) -> Value {
    let out = run_nest_nats_client(node, &nats.url(), &ops.to_string()).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("client.mjs printed {out:?}: {e}"))
}

#[tokio::test]
async fn nest_client_gets_the_same_answers_from_nestling_as_from_nest() {
    let Some(p) = pair("nest_client_gets_the_same_answers_from_nestling_as_from_nest").await else {
        return;
    };
    let calls = json!([
        {"op": "send", "pattern": "sum", "data": [1, 2, 3]},
        {"op": "send", "pattern": {"cmd": "sum"}, "data": [4, 5]},
        {"op": "send", "pattern": "echo", "data": {"text": "求和1111 😀", "n": [1.5, null, true]}},
        {"op": "send", "pattern": "fail", "data": null},
        {"op": "send", "pattern": "fail_obj", "data": null},
        {"op": "send", "pattern": "boom", "data": null},
        {"op": "collect", "pattern": "count", "data": 3},
        {"op": "collect", "pattern": "ticks", "data": 3},
        {"op": "collect", "pattern": "empty", "data": null},
        {"op": "collect", "pattern": "fails_after", "data": 2},
        {"op": "send", "pattern": "nobody_serves_this", "data": 1},
        {"op": "emit", "pattern": "record", "data": {"key": "k1", "value": "求和"}},
        {"op": "emit", "pattern": {"v": 2, "ev": "record"}, "data": {"key": "k2", "value": 2}},
    ]);
    let from_nest = nest_client(&p.node, &p.nest_nats, &calls).await;
    let from_rust = nest_client(&p.node, &p.rust_nats, &calls).await;
    eprintln!("Nest ClientNats -> Nest:     {from_nest}");
    eprintln!("Nest ClientNats -> nestling: {from_rust}");
    assert_eq!(from_rust, from_nest);
    assert_eq!(from_nest[0], json!({"ok": 6}), "sanity: {from_nest}");

    // The events arrived, the string and the object pattern alike, to every handler.
    let check = json!([
        {"op": "send", "pattern": "recorded", "data": {"key": "k1", "n": 1}},
        {"op": "send", "pattern": "recorded", "data": {"key": "k1:also", "n": 1}},
        {"op": "send", "pattern": "recorded", "data": {"key": "k2:obj", "n": 1}},
    ]);
    let from_nest = nest_client(&p.node, &p.nest_nats, &check).await;
    let from_rust = nest_client(&p.node, &p.rust_nats, &check).await;
    assert_eq!(from_rust, from_nest);
    assert_eq!(
        from_nest,
        json!([{"ok": ["求和"]}, {"ok": ["求和"]}, {"ok": [2]}])
    );
}

#[tokio::test]
async fn nestling_client_calls_nest_over_nats() {
    let test = "nestling_client_calls_nest_over_nats";
    let Some(bin) = require_nats(test) else {
        return;
    };
    let Some(node) = require_nest_nats(test) else {
        return;
    };
    let nats = NatsServer::start(&bin).await;
    let _nest = spawn_nest_nats_service(&node, &nats.url(), None, None).await;
    let client = Client::builder(nats.url())
        .request_timeout(Some(Duration::from_secs(10)))
        .build();

    mirror::calls::nestling_client_gets_nests_answers(&client).await;
    match client.send::<_, _, i64>("nobody_serves_this", &1).await {
        Err(ClientError::NoResponders { .. }) => {}
        other => panic!("expected NoResponders, got {other:?}"),
    }
}

/// Publishes `payload` on `subject` (with a reply subject unless `reply` is false) and
/// collects the reply payloads until one has `isDisposed` or 300 ms pass without one.
async fn exchange(nats: &NatsServer, subject: &str, payload: &[u8], reply: bool) -> Vec<String> {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let subject = subject.to_owned();
    let payload = payload.to_vec();
    if reply {
        client
            .publish_with_reply(subject, inbox, payload.into())
            .await
            .unwrap();
    } else {
        client.publish(subject, payload.into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut replies = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
        let text = String::from_utf8_lossy(&m.payload).into_owned();
        let done = text.contains("\"isDisposed\":true") || text.contains("\"err\"");
        replies.push(text);
        if done {
            break;
        }
    }
    replies
}

#[tokio::test]
async fn raw_replies_match_nest_byte_for_byte() {
    let Some(p) = pair("raw_replies_match_nest_byte_for_byte").await else {
        return;
    };
    let cases: &[(&str, &str, bool)] = &[
        ("sum", r#"{"pattern":"sum","data":[1,2,3],"id":"a1"}"#, true),
        (
            r#"{"cmd":"sum"}"#,
            r#"{"pattern":{"cmd":"sum"},"data":[4,5],"id":"a2"}"#,
            true,
        ),
        (
            "echo",
            r#"{"pattern":"echo","data":"求和😀","id":"a3"}"#,
            true,
        ),
        ("echo", r#"{"pattern":"echo","data":null,"id":"a4"}"#, true),
        ("fail", r#"{"pattern":"fail","data":null,"id":"a5"}"#, true),
        (
            "fail_obj",
            r#"{"pattern":"fail_obj","data":null,"id":"a6"}"#,
            true,
        ),
        ("boom", r#"{"pattern":"boom","data":null,"id":"a7"}"#, true),
        ("count", r#"{"pattern":"count","data":3,"id":"a8"}"#, true),
        ("ticks", r#"{"pattern":"ticks","data":2,"id":"a9"}"#, true),
        (
            "empty",
            r#"{"pattern":"empty","data":null,"id":"b1"}"#,
            true,
        ),
        (
            "fails_after",
            r#"{"pattern":"fails_after","data":2,"id":"b2"}"#,
            true,
        ),
        // The subject routes, not the body's pattern.
        ("sum", r#"{"pattern":"echo","data":[2,2],"id":"b3"}"#, true),
        // A number id is echoed as a number.
        ("sum", r#"{"pattern":"sum","data":[1],"id":7}"#, true),
        // No `id`: an event, never answered.
        ("sum", r#"{"pattern":"sum","data":[1,2]}"#, true),
        // Not a Nest packet: handed whole to the subject's handler as an event.
        ("sum", r#"[1,2,3]"#, true),
        ("echo", r#"{"id":"c1","hello":1}"#, true),
        // No reply subject: the handler runs, the reply goes nowhere.
        ("sum", r#"{"pattern":"sum","data":[1],"id":"c2"}"#, false),
        // Invalid JSON: dropped with a log line; the service goes on.
        ("sum", r#"{"pattern":"sum","#, true),
        ("sum", r#"{"pattern":"sum","data":[40,2],"id":"c3"}"#, true),
    ];
    let mut mismatches = Vec::new();
    for (subject, payload, reply) in cases {
        let nest = exchange(&p.nest_nats, subject, payload.as_bytes(), *reply).await;
        let rust = exchange(&p.rust_nats, subject, payload.as_bytes(), *reply).await;
        eprintln!("{subject} {payload}\n  nest:     {nest:?}\n  nestling: {rust:?}");
        if nest != rust {
            mismatches.push(format!(
                "{subject} {payload}: nest {nest:?} vs nestling {rust:?}"
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
