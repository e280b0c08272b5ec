//! Health checks end to end: the gateway example's `GET /health` (terminus' JSON and status
//! codes) with its user service up — a nestling service serving the health pattern, and a
//! real Nest service without it — and down; `Client::ping` against nestling and Nest over
//! TCP, NATS and RabbitMQ.
//!
//! Without Node, `nats-server` or `rabbitmq-server` the tests needing them print `SKIPPED`;
//! with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::time::Duration;

use nestling::health::HEALTH_PATTERN;
use nestling::{Client, ClientError, Server};
use serde_json::{json, Value};

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn server(health: bool) -> Server {
    let builder = Server::builder().discover(false).controller(Users);
    let builder = if health { builder.health() } else { builder };
    builder.build().unwrap()
}

/// `GET /health` of a gateway example calling the user service on `port`.
async fn gateway_health(service_port: u16) -> (u16, Value) {
    let port = service_port.to_string();
    let gateway = support::spawn_example(
        "gateway",
        &[("USER_SERVICE_PORT", &port), ("HEALTH_TIMEOUT_MS", "2000")],
    )
    .await;
    let response = support::http_get(gateway.port, "/health").await.unwrap();
    let body: Value =
        serde_json::from_str(&response.body).unwrap_or_else(|e| panic!("{e}: {:?}", response.body));
    (response.status, body)
}

fn latency(body: &Value) -> f64 {
    let ms = body["info"]["user"]["latency_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no latency in {body}"));
    assert!(ms > 0.0 && ms < 2000.0, "{ms} ms");
    ms
}

#[tokio::test]
async fn the_gateway_reports_a_nestling_service_up_with_its_latency() {
    let running = support::RunningServer::start(server(true)).await;
    let (status, body) = gateway_health(running.port()).await;
    assert_eq!(status, 200, "{body}");
    let ms = latency(&body);
    let up = json!({"status": "up", "latency_ms": ms, "health_pattern": true});
    assert_eq!(
        body,
        json!({"status": "ok", "info": {"user": up}, "error": {}, "details": {"user": up}})
    );
}

#[tokio::test]
async fn the_gateway_reports_the_user_service_example_up() {
    let service = support::spawn_example("user_service", &[]).await;
    let (status, body) = gateway_health(service.port).await;
    assert_eq!(status, 200, "{body}");
    latency(&body);
    assert_eq!(body["info"]["user"]["health_pattern"], true, "{body}");
}

#[tokio::test]
async fn the_gateway_reports_a_stopped_service_down_with_503() {
    let running = support::RunningServer::start(server(true)).await;
    let port = running.port();
    running.stop().await;
    let (status, body) = gateway_health(port).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["info"], json!({}));
    let down = &body["error"]["user"];
    assert_eq!(down["status"], "down", "{body}");
    let message = down["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the error names the service: {message}"
    );
    assert_eq!(body["details"]["user"], *down);
}

#[tokio::test]
async fn the_gateway_reports_a_nest_service_up_through_its_no_handler_reply() {
    let test = "the_gateway_reports_a_nest_service_up_through_its_no_handler_reply";
    let Some(node) = support::require_node(test) else {
        return;
    };
    let nest = support::spawn_node(&node, "user-service.mjs", &[]).await;
    let (status, body) = gateway_health(nest.port).await;
    assert_eq!(status, 200, "{body}");
    latency(&body);
    assert_eq!(body["info"]["user"]["status"], "up");
    assert_eq!(body["info"]["user"]["health_pattern"], false, "{body}");
    // What the ping got from Nest: its no-handler reply, a full round trip.
    match Client::new(nest.addr())
        .send::<_, _, Value>(serde_json::from_str::<Value>(HEALTH_PATTERN).unwrap(), &())
        .await
    {
        Err(ClientError::Remote { error, .. }) => assert!(error.is_no_handler(), "{error:?}"),
        other => panic!("expected Nest's no-handler reply, got {other:?}"),
    }
}

#[tokio::test]
async fn a_health_ping_through_a_nest_gateway_client_reaches_a_nestling_service() {
    let test = "a_health_ping_through_a_nest_gateway_client_reaches_a_nestling_service";
    let Some(node) = support::require_node(test) else {
        return;
    };
    // A Nest client sending the health pattern gets nestling's answer (what a Nest
    // terminus check written against the pattern would see).
    let running = support::RunningServer::start(server(true)).await;
    let ops = format!(r#"[{{"op":"send","pattern":{HEALTH_PATTERN},"data":{{}}}}]"#);
    let out = support::run_nest_client(&node, &running.addr.to_string(), &ops).await;
    assert_eq!(out, r#"[{"ok":{"status":"up"}}]"#);
}

#[tokio::test]
async fn without_the_pattern_a_nestling_service_answers_as_nest_does() {
    let running = support::RunningServer::start(server(false)).await;
    let ping = Client::new(running.addr.to_string())
        .ping(Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(!ping.health_pattern);
    assert!(ping.latency > Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_over_nats() {
    let test = "pings_over_nats";
    let (Some(bin), Some(node)) = (
        support::nats::require_nats(test),
        support::nats::require_nest_nats(test),
    ) else {
        return;
    };
    let nats = support::nats::NatsServer::start(&bin).await;
    let listening = server(true)
        .listen_nats(nestling::nats::NatsServe::new(nats.url()))
        .await
        .unwrap();
    let serving = tokio::spawn(listening.serve());
    let client = Client::new(nats.url());
    let ping = client.ping(Some(Duration::from_secs(2))).await.unwrap();
    assert!(ping.health_pattern);
    serving.abort();

    // A Nest service without the pattern: nobody answers its subject over NATS…
    let _nest = support::nats::spawn_nest_nats_service(&node, &nats.url(), None, None).await;
    let report = nestling::health::check([("user", &client)], Duration::from_secs(2)).await;
    assert_eq!(report.http_status(), 503);
    let json = serde_json::to_value(&report).unwrap();
    let message = json["error"]["user"]["message"].as_str().unwrap();
    assert!(message.contains("no service is subscribed"), "{message}");
    // …so ping one of its own patterns instead.
    let ping = client
        .ping_pattern("whoami", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    assert!(!ping.health_pattern);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_over_rabbitmq() {
    let test = "pings_over_rabbitmq";
    let Some(node) = support::rmq::require_nest_rmq(test) else {
        return;
    };
    let Some(broker) = support::rmq::RmqBroker::shared(test) else {
        return;
    };
    let queue = support::rmq::unique_queue("health");
    let listening = server(true)
        .listen_rmq(nestling::rmq::RmqServe::new(broker.url(), &queue))
        .await
        .unwrap();
    let serving = tokio::spawn(listening.serve());
    let ping = Client::new(broker.client_url(&queue))
        .ping(Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(ping.health_pattern);
    serving.abort();

    // A Nest service without the pattern answers its no-handler reply: up.
    let nest_queue = support::rmq::unique_queue("health_nest");
    let _nest = support::rmq::spawn_nest_rmq_service(&node, &broker.url(), &nest_queue, &[]).await;
    let nest = Client::new(broker.client_url(&nest_queue));
    let report = nestling::health::check([("user", &nest)], Duration::from_secs(5)).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.details[0].1.health_pattern, Some(false));
}
