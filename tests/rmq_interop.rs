//! RabbitMQ interop with real NestJS (`tests/nest`, `Transport.RMQ` on amqplib and
//! amqp-connection-manager) through a real `rabbitmq-server`, both directions:
//!
//! * Nest's `ClientRMQ` gets the same answers from a nestling service as from the Nest
//!   service (requests, object patterns, unicode, streams, every error shape, events with
//!   several handlers, `RmqRecordBuilder` headers and properties reaching the handler);
//! * nestling's `Client` calls the Nest service;
//! * the raw replies of both services to the same AMQP messages are equal, including
//!   messages Nest treats specially (no `id`, not a packet, invalid JSON, no `replyTo`).
//!
//! Without rabbitmq-server or Node these tests print `SKIPPED`; with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod mirror;
mod support;

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use mirror::Mirror;
use nestling::rmq::lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions,
};
use nestling::rmq::lapin::types::{AMQPValue, FieldTable};
use nestling::rmq::lapin::{self, BasicProperties};
use nestling::rmq::{RmqConnector, RmqServe};
use nestling::{Client, ClientError, Server};
use serde_json::{json, Value};
use support::rmq::{
    require_nest_rmq, run_nest_rmq_client, spawn_nest_rmq_service, unique_queue, RmqBroker,
};

/// A nestling service with the mirror controller, consuming `queue`.
async fn nestling_service(broker: &RmqBroker, queue: &str) -> tokio::task::JoinHandle<()> {
    let listening = Server::builder()
        .discover(false)
        .controller(Mirror::default())
        .build()
        .unwrap()
        .listen_rmq(RmqServe::new(broker.url(), queue))
        .await
        .unwrap();
    tokio::spawn(async move {
        listening.serve().await.unwrap();
    })
}

/// Both services on one broker, each on a queue of its own.
struct Pair {
    broker: &'static RmqBroker,
    nest_queue: String,
    rust_queue: String,
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
    let broker = RmqBroker::shared(test)?;
    let node = require_nest_rmq(test)?;
    let nest_queue = unique_queue("nest");
    let rust_queue = unique_queue("rust");
    let nest = spawn_nest_rmq_service(&node, &broker.url(), &nest_queue, &[]).await;
    let rust = nestling_service(broker, &rust_queue).await;
    Some(Pair {
        broker,
        nest_queue,
        rust_queue,
        _nest: nest,
        rust,
        node,
    })
}

async fn nest_client(node: &Path, broker: &RmqBroker, queue: &str, ops: &Value) -> Value {
    let out = run_nest_rmq_client(node, &broker.url(), queue, &ops.to_string()).await;
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
        {"op": "send", "pattern": "rmq_message", "data": 1,
         "rmq": {"headers": {"x-tenant": "t1", "x-n": 7}, "priority": 3}},
        {"op": "emit", "pattern": "record", "data": {"key": "k1", "value": "求和"}},
        {"op": "emit", "pattern": {"v": 2, "ev": "record"}, "data": {"key": "k2", "value": 2}},
    ]);
    let from_nest = nest_client(&p.node, p.broker, &p.nest_queue, &calls).await;
    let from_rust = nest_client(&p.node, p.broker, &p.rust_queue, &calls).await;
    eprintln!("Nest ClientRMQ -> Nest:     {from_nest}");
    eprintln!("Nest ClientRMQ -> nestling: {from_rust}");
    assert_eq!(from_rust, from_nest);
    assert_eq!(from_nest[0], json!({"ok": 6}), "sanity: {from_nest}");
    assert_eq!(
        from_nest[11]["ok"]["headers"],
        json!({"x-tenant": "t1", "x-n": 7}),
        "{from_nest}"
    );

    // The events arrived, the string and the object pattern alike, to every handler.
    let check = json!([
        {"op": "send", "pattern": "recorded", "data": {"key": "k1", "n": 1}},
        {"op": "send", "pattern": "recorded", "data": {"key": "k1:also", "n": 1}},
        {"op": "send", "pattern": "recorded", "data": {"key": "k2:obj", "n": 1}},
    ]);
    let from_nest = nest_client(&p.node, p.broker, &p.nest_queue, &check).await;
    let from_rust = nest_client(&p.node, p.broker, &p.rust_queue, &check).await;
    assert_eq!(from_rust, from_nest);
    assert_eq!(
        from_nest,
        json!([{"ok": ["求和"]}, {"ok": ["求和"]}, {"ok": [2]}])
    );
}

#[tokio::test]
async fn nestling_client_calls_nest_over_rmq() {
    let test = "nestling_client_calls_nest_over_rmq";
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let Some(node) = require_nest_rmq(test) else {
        return;
    };
    let queue = unique_queue("nest");
    let _nest = spawn_nest_rmq_service(&node, &broker.url(), &queue, &[]).await;
    let client = Client::builder(broker.client_url(&queue))
        .request_timeout(Some(Duration::from_secs(10)))
        .build();

    mirror::calls::nestling_client_gets_nests_answers(&client).await;
    match client.send::<_, _, i64>("nobody_serves_this", &1).await {
        Err(e @ ClientError::Remote { .. }) => {
            assert!(e.to_string().contains("no matching message handler"), "{e}")
        }
        other => panic!("expected Nest's no-handler error, got {other:?}"),
    }
    // What the Nest handler's RmqContext sees of a nestling client's message.
    let seen: Value = client.send("rmq_message", &1).await.unwrap();
    assert_eq!(seen["directReplyTo"], json!(true), "{seen}");
    assert_eq!(seen["hasCorrelationId"], json!(true), "{seen}");
    assert_eq!(seen["pattern"], json!("rmq_message"), "{seen}");

    // Message properties of one's choosing (Nest's RmqRecordBuilder.setOptions): the Nest
    // handler's RmqContext sees them.
    let mut headers = FieldTable::default();
    headers.insert("x-tenant".into(), AMQPValue::LongString("t1".into()));
    headers.insert("x-n".into(), AMQPValue::LongInt(7));
    let with_options = Client::builder(broker.client_url(&queue))
        .transport(
            RmqConnector::new().properties(
                BasicProperties::default()
                    .with_headers(headers)
                    .with_priority(3),
            ),
        )
        .request_timeout(Some(Duration::from_secs(10)))
        .build();
    let seen: Value = with_options.send("rmq_message", &1).await.unwrap();
    assert_eq!(
        seen["headers"],
        json!({"x-tenant": "t1", "x-n": 7}),
        "{seen}"
    );
    assert_eq!(seen["priority"], json!(3), "{seen}");
    assert_eq!(seen["directReplyTo"], json!(true), "{seen}");
    let sum: i64 = with_options.send("sum", &[2, 2]).await.unwrap();
    assert_eq!(sum, 4);

    // 50 calls at once over the one connection, each answered by its own correlation id.
    let calls = (0..50).map(|i| {
        let client = client.clone();
        async move { client.send::<_, _, i64>("sum", &[i, 1]).await.unwrap() }
    });
    let sums = futures_util::future::join_all(calls).await;
    assert_eq!(sums, (0..50).map(|i| i + 1).collect::<Vec<_>>());
}

/// Publishes `body` to `queue` (with `replyTo` a fresh queue of ours and `correlationId`
/// `corr`, unless `reply` is false) and collects the reply bodies, parsed, until one ends
/// the reply or 500 ms pass without one.
async fn exchange(broker: &RmqBroker, queue: &str, body: &[u8], reply: bool) -> Vec<Value> {
    let connection = lapin::Connection::connect(&broker.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let replies = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            replies.name().clone(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut properties = BasicProperties::default();
    if reply {
        properties = properties
            .with_reply_to(replies.name().clone())
            .with_correlation_id("corr-1".into());
    }
    channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(delivery))) =
        tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
    {
        assert_eq!(
            delivery
                .properties
                .correlation_id()
                .as_ref()
                .map(|c| c.as_str()),
            Some("corr-1"),
            "replies carry the request's correlationId"
        );
        let text = String::from_utf8_lossy(&delivery.data).into_owned();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        let done = value.get("isDisposed").is_some() || value.get("err").is_some();
        got.push(value);
        if done {
            break;
        }
    }
    let _ = connection.close(200, "done".into()).await;
    got
}

#[tokio::test]
async fn raw_replies_match_nest() {
    let Some(p) = pair("raw_replies_match_nest").await else {
        return;
    };
    let cases: &[(&str, bool)] = &[
        (r#"{"pattern":"sum","data":[1,2,3],"id":"a1"}"#, true),
        (r#"{"pattern":{"cmd":"sum"},"data":[4,5],"id":"a2"}"#, true),
        (r#"{"pattern":"echo","data":"求和😀","id":"a3"}"#, true),
        (r#"{"pattern":"echo","data":null,"id":"a4"}"#, true),
        (r#"{"pattern":"fail","data":null,"id":"a5"}"#, true),
        (r#"{"pattern":"fail_obj","data":null,"id":"a6"}"#, true),
        (r#"{"pattern":"boom","data":null,"id":"a7"}"#, true),
        (r#"{"pattern":"count","data":3,"id":"a8"}"#, true),
        (r#"{"pattern":"ticks","data":2,"id":"a9"}"#, true),
        (r#"{"pattern":"empty","data":null,"id":"b1"}"#, true),
        (r#"{"pattern":"fails_after","data":2,"id":"b2"}"#, true),
        (r#"{"pattern":"nope","data":1,"id":"b3"}"#, true),
        // A number id.
        (r#"{"pattern":"sum","data":[1],"id":7}"#, true),
        // No `id`: an event, never answered.
        (r#"{"pattern":"sum","data":[1,2]}"#, true),
        // Not a Nest packet, invalid JSON: dropped with a log line; the service goes on.
        (r#"[1,2,3]"#, true),
        (r#"{"pattern":"sum","#, true),
        // No replyTo: the handler runs, the reply goes nowhere.
        (r#"{"pattern":"sum","data":[1],"id":"c2"}"#, false),
        (r#"{"pattern":"sum","data":[40,2],"id":"c3"}"#, true),
    ];
    let mut mismatches = Vec::new();
    for (body, reply) in cases {
        let nest = exchange(p.broker, &p.nest_queue, body.as_bytes(), *reply).await;
        let rust = exchange(p.broker, &p.rust_queue, body.as_bytes(), *reply).await;
        eprintln!("{body}\n  nest:     {nest:?}\n  nestling: {rust:?}");
        if nest != rust {
            mismatches.push(format!("{body}: nest {nest:?} vs nestling {rust:?}"));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
