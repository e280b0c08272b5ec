//! Lone UTF-16 surrogates (a JavaScript string cut in the middle of an emoji, `'\ud83d'`)
//! against real Nest, on every transport: a Nest client's payload reaches a nestling
//! handler's `String` / `serde_json::Value` with each lone surrogate as U+FFFD (what Node's
//! own UTF-8 encoder makes of it), and a nestling client decodes a Nest service's reply
//! holding one the same way — values, streamed items and errors. The TCP frames' lengths
//! (UTF-16 units) stay right both ways: every op of a run shares one connection.
//!
//! Without Node, `nats-server` or `rabbitmq-server` the tests needing them print `SKIPPED`;
//! with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod support;

use futures_util::StreamExt;
use nestling::{Client, ClientError, Server};
use serde_json::value::RawValue;
use serde_json::{json, Value};

#[derive(Default)]
struct Texts;

#[nestling::controller]
impl Texts {
    #[message_pattern("echo_string")]
    fn echo_string(&self, text: String) -> String {
        text
    }

    /// `async`: the payload is decoded after the packet was handed over whole.
    #[message_pattern("echo_value")]
    async fn echo_value(&self, value: Value) -> Value {
        value
    }

    /// The string's length in UTF-16 units, as JavaScript counts it.
    #[message_pattern("units")]
    fn units(&self, text: String) -> usize {
        text.encode_utf16().count()
    }
}

fn server() -> Server {
    Server::builder()
        .discover(false)
        .controller(Texts)
        .build()
        .unwrap()
}

/// What a Nest client sends (as JSON text, `JSON.parse`d by `client.mjs`: the escapes
/// become lone surrogates in JavaScript strings)…
const NEST_OPS: &str = r#"[
    {"op":"send","pattern":"echo_string","data":"a\ud83db"},
    {"op":"send","pattern":"echo_value","data":{"k":"\ud83d","list":["\udc00x","😀\ud83d",1]}},
    {"op":"send","pattern":"echo_string","data":"\ud83d\ude00 pair"},
    {"op":"send","pattern":"units","data":"ab\ud83d\udc00\ud83d"},
    {"op":"send","pattern":"echo_string","data":"求和1111 😀"}
]"#;

/// …and what it receives from the nestling service.
fn nest_expects() -> Value {
    json!([
        {"ok": "a\u{FFFD}b"},
        {"ok": {"k": "\u{FFFD}", "list": ["\u{FFFD}x", "😀\u{FFFD}", 1]}},
        {"ok": "😀 pair"},
        {"ok": 5}, // "ab", a pair (two units), U+FFFD
        {"ok": "求和1111 😀"}
    ])
}

fn parsed(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A nestling client calling a Nest `user-service.mjs` (any transport) whose handlers
/// answer with lone surrogates.
async fn nestling_client_decodes_nests_lone_surrogates(client: &Client) {
    let cut = RawValue::from_string(r#""a\ud83db""#.into()).unwrap();
    let text: String = client.send("echo", &cut).await.unwrap();
    assert_eq!(text, "a\u{FFFD}b");

    let nested = RawValue::from_string(r#"{"k":["\udc00","\ud83d\ude00"]}"#.into()).unwrap();
    let value: Value = client.send("echo", &nested).await.unwrap();
    assert_eq!(value, json!({"k": ["\u{FFFD}", "😀"]}));

    let items = RawValue::from_string(r#"["\ud83d","x\udfff"]"#.into()).unwrap();
    let streamed: Vec<String> = client
        .send_stream::<_, _, String>("stream_items", &items)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(streamed, ["\u{FFFD}", "x\u{FFFD}"]);

    // An error holding one: RpcException('\ud83d') → {"status":"error","message":"\ud83d"}.
    let lone = RawValue::from_string(r#""\ud83d""#.into()).unwrap();
    match client.send::<_, _, Value>("raise", &lone).await {
        Err(ClientError::Remote { error, .. }) => assert_eq!(error.message(), Some("\u{FFFD}")),
        other => panic!("expected Nest's error, got {other:?}"),
    }

    // Still one good connection: the lengths were right.
    let six: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(six, 6);
}

#[tokio::test]
async fn over_tcp_a_nest_client_and_a_nestling_service() {
    let Some(node) = support::require_node("over_tcp_a_nest_client_and_a_nestling_service") else {
        return;
    };
    let running = support::RunningServer::start(server()).await;
    let out = support::run_nest_client(&node, &running.addr.to_string(), NEST_OPS).await;
    assert_eq!(parsed(&out), nest_expects());
}

#[tokio::test]
async fn over_tcp_a_nestling_client_and_a_nest_service() {
    let Some(node) = support::require_node("over_tcp_a_nestling_client_and_a_nest_service") else {
        return;
    };
    let nest = support::spawn_node(&node, "user-service.mjs", &[]).await;
    nestling_client_decodes_nests_lone_surrogates(&Client::new(nest.addr())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_both_ways() {
    let test = "over_nats_both_ways";
    let (Some(bin), Some(node)) = (
        support::nats::require_nats(test),
        support::nats::require_nest_nats(test),
    ) else {
        return;
    };
    let nats = support::nats::NatsServer::start(&bin).await;
    let listening = server()
        .listen_nats(nestling::nats::NatsServe::new(nats.url()))
        .await
        .unwrap();
    let serving = tokio::spawn(listening.serve());
    let out = support::nats::run_nest_nats_client(&node, &nats.url(), NEST_OPS).await;
    assert_eq!(parsed(&out), nest_expects());
    serving.abort();

    let _nest = support::nats::spawn_nest_nats_service(&node, &nats.url(), None, None).await;
    nestling_client_decodes_nests_lone_surrogates(&Client::new(nats.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rabbitmq_both_ways() {
    let test = "over_rabbitmq_both_ways";
    let Some(node) = support::rmq::require_nest_rmq(test) else {
        return;
    };
    let Some(broker) = support::rmq::RmqBroker::shared(test) else {
        return;
    };
    let queue = support::rmq::unique_queue("surrogates");
    let listening = server()
        .listen_rmq(nestling::rmq::RmqServe::new(broker.url(), &queue))
        .await
        .unwrap();
    let serving = tokio::spawn(listening.serve());
    let out = support::rmq::run_nest_rmq_client(&node, &broker.url(), &queue, NEST_OPS).await;
    assert_eq!(parsed(&out), nest_expects());
    serving.abort();

    let nest_queue = support::rmq::unique_queue("surrogates_nest");
    let _nest = support::rmq::spawn_nest_rmq_service(&node, &broker.url(), &nest_queue, &[]).await;
    nestling_client_decodes_nests_lone_surrogates(&Client::new(broker.client_url(&nest_queue)))
        .await;
}
