//! RabbitMQ, nestling to nestling, through a real `rabbitmq-server`: the client and the
//! server over one queue, what a handler sees of the message, the delivery rules (what
//! cannot be handled is dead-lettered once, never redelivered in a loop), Nest 11's
//! wildcard patterns on a topic exchange, and a clear error for a broker that is not there.
//!
//! Without rabbitmq-server these tests print `SKIPPED`; with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod mirror;
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use mirror::Mirror;
use nestling::rmq::lapin::options::{
    BasicGetOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use nestling::rmq::lapin::types::{AMQPValue, FieldTable};
use nestling::rmq::lapin::{self, BasicProperties, ExchangeKind};
use nestling::rmq::RmqServe;
use nestling::{Client, ClientError, Server, ServerError};
use serde_json::{json, Value};
use support::rmq::{unique_queue, RmqBroker};

/// Serves `controller` on `rmq` in the background.
async fn serve<C: nestling::Controller>(
    controller: C,
    rmq: RmqServe,
) -> tokio::task::JoinHandle<()> {
    let listening = Server::builder()
        .discover(false)
        .controller(controller)
        .build()
        .unwrap()
        .listen_rmq(rmq)
        .await
        .unwrap();
    tokio::spawn(async move { listening.serve().await.unwrap() })
}

fn client(url: String) -> Client {
    Client::builder(url)
        .request_timeout(Some(Duration::from_secs(10)))
        .build()
}

#[tokio::test]
async fn client_and_server_over_one_queue() {
    let Some(broker) = RmqBroker::shared("client_and_server_over_one_queue") else {
        return;
    };
    let queue = unique_queue("basic");
    let server = serve(Mirror::default(), RmqServe::new(broker.url(), &queue)).await;
    let client = client(broker.client_url(&queue));

    assert_eq!(
        client.send::<_, _, i64>("sum", &[1, 2, 3]).await.unwrap(),
        6
    );
    assert_eq!(
        client
            .send::<_, _, i64>(json!({"cmd": "sum"}), &[4, 5])
            .await
            .unwrap(),
        9
    );
    let items: Vec<u32> = client
        .send_stream::<_, _, u32>("count", &3)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3]);
    match client.send::<_, _, i64>("fail_obj", &()).await {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(error.value(), &json!({"code": 42, "message": "m"}))
        }
        other => panic!("expected the handler's error, got {other:?}"),
    }
    client
        .emit("record", &json!({"key": "k", "value": "求和1111"}))
        .await
        .unwrap();
    let got: Vec<Value> = client
        .send("recorded", &json!({"key": "k:also", "n": 1}))
        .await
        .unwrap();
    assert_eq!(got, [json!("求和1111")]);

    // What the handler sees of the message (Nest's RmqContext).
    let seen: Value = client.send("rmq_message", &1).await.unwrap();
    assert_eq!(seen["pattern"], json!("rmq_message"));
    assert_eq!(
        seen["exchange"],
        json!(""),
        "published straight to the queue: {seen}"
    );
    assert_eq!(seen["directReplyTo"], json!(true), "{seen}");
    assert_eq!(seen["redelivered"], json!(false), "{seen}");
    server.abort();
}

/// Declares a fanout exchange and a queue bound to it, for dead letters.
async fn dead_letter_queue(channel: &lapin::Channel, name: &str) {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            name.into(),
            name.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn what_cannot_be_handled_is_dead_lettered_once() {
    let Some(broker) = RmqBroker::shared("what_cannot_be_handled_is_dead_lettered_once") else {
        return;
    };
    let queue = unique_queue("dlx");
    let dead = format!("{queue}.dead");
    let connection = lapin::Connection::connect(&broker.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    dead_letter_queue(&channel, &dead).await;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(dead.as_str().into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let rmq = RmqServe::new(broker.url(), &queue).queue_options(durable, arguments);
    let server = serve(Mirror::default(), rmq).await;

    let publish = |body: &'static str| {
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default(),
                )
                .await
                .unwrap();
        }
    };
    let rejected = [
        r#"{"pattern":"sum","#,                         // not JSON
        r#"[1,2,3]"#,                                   // JSON, not a packet
        r#"{"pattern":"nobody_serves_this","data":1}"#, // an event nobody handles
        r#"{"pattern":"nope","data":1,"id":"r1"}"#,     // a request nobody handles
    ];
    for body in rejected {
        publish(body).await;
    }
    // Handled, even if the handler fails or cannot decode the payload: acknowledged.
    publish(r#"{"pattern":"sum","data":"not numbers","id":"r2"}"#).await;
    publish(r#"{"pattern":"record","data":{"key":"d","value":1}}"#).await;

    // The service goes on, and a caller gets its answer. (`no_assert`: the queue has
    // arguments this client does not know, and RabbitMQ refuses a declaration without them.)
    let client = client(format!("{}&no_assert=true", broker.client_url(&queue)));
    assert_eq!(client.send::<_, _, i64>("sum", &[40, 2]).await.unwrap(), 42);
    let got: Vec<Value> = client
        .send("recorded", &json!({"key": "d", "n": 1}))
        .await
        .unwrap();
    assert_eq!(got, [json!(1)]);

    // Exactly the four that nothing could handle reached the dead-letter queue, in order,
    // once each; none is left in (or back in) the service's queue.
    let mut dead_letters = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while dead_letters.len() < rejected.len() && tokio::time::Instant::now() < deadline {
        match channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(message) => {
                dead_letters.push(String::from_utf8(message.delivery.data.clone()).unwrap())
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = channel
        .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert_eq!(dead_letters, rejected, "dead-lettered, in order");
    assert!(extra.is_none(), "nothing else was dead-lettered");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let left = channel
        .queue_declare(queue.as_str().into(), passive, FieldTable::default())
        .await
        .unwrap();
    assert_eq!(
        left.message_count(),
        0,
        "nothing redelivered to the service queue"
    );
    server.abort();
    let _ = connection.close(200, "done".into()).await;
}

/// Handlers whose patterns are topics (Nest 11's `wildcards`).
#[derive(Default)]
struct Topics;

#[nestling::controller]
impl Topics {
    #[message_pattern("user.*")]
    fn user(&self, ctx: &nestling::Context) -> String {
        format!("user.* got {}", ctx.pattern())
    }

    #[message_pattern("orders.#")]
    fn orders(&self, ctx: &nestling::Context) -> String {
        format!("orders.# got {}", ctx.pattern())
    }

    #[message_pattern("exact")]
    fn exact(&self) -> &'static str {
        "exact"
    }
}

#[tokio::test]
async fn wildcard_patterns_route_through_a_topic_exchange() {
    let Some(broker) = RmqBroker::shared("wildcard_patterns_route_through_a_topic_exchange") else {
        return;
    };
    let queue = unique_queue("topics");
    let server = serve(Topics, RmqServe::new(broker.url(), &queue).wildcards(true)).await;
    // Nest's ClientRMQ with `wildcards: true` publishes to the exchange named after the
    // queue, the pattern as routing key.
    let client = client(format!("{}&wildcards=true", broker.client_url(&queue)));
    for (pattern, expected) in [
        ("user.created", "user.* got user.created"),
        ("orders.eu.paid", "orders.# got orders.eu.paid"),
        ("exact", "exact"),
    ] {
        let got: String = client.send(pattern, &()).await.unwrap();
        assert_eq!(got, expected);
    }
    // A routing key no binding matches: the broker drops it, the caller times out.
    let quick = Client::builder(format!("{}&wildcards=true", broker.client_url(&queue)))
        .request_timeout(Some(Duration::from_millis(500)))
        .build();
    match quick.send::<_, _, String>("nobody.listens", &()).await {
        Err(ClientError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    server.abort();
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_error() {
    // A port nobody listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("amqp://127.0.0.1:{port}");
    let err = Server::builder()
        .discover(false)
        .controller(Mirror::default())
        .build()
        .unwrap()
        .listen_rmq(RmqServe::new(&url, "q").connect_timeout(Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(matches!(err, ServerError::Rmq { .. }), "{err:?}");
    assert!(
        err.to_string().contains("rabbitmq-server is running"),
        "{err}"
    );

    let client = Client::builder(format!("{url}?queue=q"))
        .connect_timeout(Duration::from_secs(2))
        .build();
    let err = client.send::<_, _, i64>("sum", &[1]).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    let err = Client::new(format!("amqp://127.0.0.1:{port}"))
        .send::<_, _, i64>("sum", &[1])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("queue=user_service"), "{err}");
}

#[tokio::test]
async fn typed_clients_and_a_named_reply_queue() {
    let Some(broker) = RmqBroker::shared("typed_clients_and_a_named_reply_queue") else {
        return;
    };
    let queue = unique_queue("typed");
    let server = serve(Mirror::default(), RmqServe::new(broker.url(), &queue)).await;
    // The generated typed client, unchanged over RabbitMQ.
    let typed = mirror::MirrorClient::new(client(broker.client_url(&queue)));
    assert_eq!(typed.sum(vec![1, 2, 3]).await.unwrap(), 6);

    // Nest's `replyQueue`: replies through a queue of one's own instead of direct reply-to.
    let replies = format!("{queue}.replies");
    let connection = lapin::Connection::connect(&broker.url(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let named = client(format!(
        "{}&reply_queue={replies}",
        broker.client_url(&queue)
    ));
    assert_eq!(named.send::<_, _, i64>("sum", &[20, 22]).await.unwrap(), 42);
    let items: Vec<u32> = named
        .send_stream::<_, _, u32>("count", &2)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items, [1, 2]);
    server.abort();
    let _ = connection.close(200, "done".into()).await;
}
