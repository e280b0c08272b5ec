//! The `nestling` binary over RabbitMQ (`amqp://…?queue=NAME` addresses), against a real
//! RabbitMQ node (one per test binary, each test on queues of its own), the workspace's
//! `user_service` example, and the real NestJS user service and client of `tests/nest`
//! (`Transport.RMQ`).
//!
//! Without rabbitmq-server, Node ≥ 20 or `tests/nest/node_modules` these tests print
//! `SKIPPED: …` and return, or fail when `CI` is set.

mod common;

use common::brokers::{
    listen_on, require_nest_rmq, run_nest_client, spawn_nest_service, spawn_user_service_example,
    terminate, unique_queue, RmqBroker,
};
use common::{nestling, refused_addr, Proc, WAIT_TIMEOUT};
use serde_json::{json, Value};

async fn stdout_line(proc: &Proc, line: &str) {
    if let Err(why) = proc.stdout.wait_for(|l| l == line, 1, WAIT_TIMEOUT).await {
        proc.fail(&format!("expected the line {line:?}: {why}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_call_and_emit_reach_the_nestling_example() {
    let test = "rmq_call_and_emit_reach_the_nestling_example";
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("example");
    let service = spawn_user_service_example(
        &[("RMQ_URL", &broker.url()), ("RMQ_QUEUE", &queue)],
        "READY rmq",
    )
    .await;
    let addr = broker.queue_url(&queue);

    let out = nestling(&["call", &addr, "sum", "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    let out = nestling(&["call", &addr, "whoami", "--raw"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "user-service\n");
    let out = nestling(&[
        "call",
        &addr,
        "sum",
        "[1,2]",
        "--repeat",
        "40",
        "--concurrency",
        "8",
        "--json",
    ])
    .await;
    out.expect_code(0);
    let summary = out.stdout_json();
    assert_eq!(
        (summary["ok"].clone(), summary["errors"].clone()),
        (json!(40), json!(0))
    );

    // A wrong payload type: the service's error, exit 1.
    let out = nestling(&["call", &addr, "sum", r#""not numbers""#, "--json"]).await;
    out.expect_code(1);
    assert!(out.stderr.starts_with('{'), "{out:#?}");

    let out = nestling(&["emit", &addr, "log", "求和1111 via rmq"]).await;
    out.expect_code(0);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    stdout_line(&service, "求和1111 via rmq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_call_and_emit_reach_a_nest_service() {
    let test = "rmq_call_and_emit_reach_a_nest_service";
    let Some(node) = require_nest_rmq(test) else {
        return;
    };
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("nest");
    let nest = spawn_nest_service(
        &node,
        &[
            ("TRANSPORT", "rmq"),
            ("RMQ_URL", &broker.url()),
            ("RMQ_QUEUE", &queue),
        ],
        "READY rmq",
    )
    .await;
    let addr = broker.queue_url(&queue);

    let out = nestling(&["call", &addr, "sum", "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    let out = nestling(&["call", &addr, r#"{"cmd":"sum"}"#, "[4,5]", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "9\n");
    let payload = r#"{"s":"求和1111 a😀b","n":[1,2.5,null]}"#;
    let out = nestling(&["call", &addr, "echo", payload, "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{payload}\n"));

    let out = nestling(&["call", &addr, "fail", "--json"]).await;
    out.expect_code(1);
    assert_eq!(
        out.stderr_json(),
        json!({"status": "error", "message": "bad thing"})
    );

    let out = nestling(&["call", &addr, "count", "3", "--stream"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "1\n2\n3\n");

    // No reply within the limit: exit 2.
    let out = nestling(&["call", &addr, "slow", "3000", "--timeout", "300"]).await;
    out.expect_code(2);
    assert!(out.stderr.contains("300"), "{out:#?}");

    let out = nestling(&["emit", &addr, "log", "求和1111"]).await;
    out.expect_code(0);
    stdout_line(&nest, r#"EVENT log "求和1111""#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_listen_echo_answers_a_nest_client() {
    let test = "rmq_listen_echo_answers_a_nest_client";
    let Some(node) = require_nest_rmq(test) else {
        return;
    };
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("listen");
    let addr = broker.queue_url(&queue);
    let mut listen = listen_on(&addr, &["--json", "--echo"]).await;
    let announced = listen.stderr.snapshot().join("\n");
    assert!(
        announced.contains(&format!(r#"queue "{queue}""#)),
        "{announced}"
    );

    let ops = r#"[{"op":"send","pattern":"sum","data":[1,2]},
                  {"op":"send","pattern":"echo","data":{"a":"😀"}},
                  {"op":"emit","pattern":"log","data":"x"}]"#;
    let env = [
        ("TRANSPORT", "rmq"),
        ("RMQ_URL", &broker.url() as &str),
        ("RMQ_QUEUE", &queue),
    ];
    let result = run_nest_client(&node, &env, ops).await;
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result,
        json!([{"ok": [1, 2]}, {"ok": {"a": "😀"}}, {"ok": null}])
    );

    let lines = match listen.stdout.wait_for(|_| true, 3, WAIT_TIMEOUT).await {
        Ok(lines) => lines,
        Err(why) => listen.fail(&why),
    };
    let packets: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| listen.fail(&format!("{l}: {e}"))))
        .collect();
    let with = |pattern: &str| {
        packets
            .iter()
            .find(|p| p["pattern"] == pattern)
            .unwrap_or_else(|| listen.fail(&format!("no {pattern} packet")))
    };
    let sum = with("sum");
    assert_eq!(sum["queue"], queue.as_str());
    assert_eq!(sum["kind"], "request");
    assert_eq!(sum["data"], json!([1, 2]));
    // Nest's ClientRMQ: correlationId = the packet's id, replyTo = direct reply-to.
    assert_eq!(sum["correlationId"], sum["id"], "{sum}");
    assert!(
        sum["replyTo"]
            .as_str()
            .is_some_and(|r| r.starts_with("amq.rabbitmq.reply-to")),
        "{sum}"
    );
    let log = with("log");
    assert_eq!(
        (log["kind"].clone(), log["data"].clone()),
        (json!("event"), json!("x"))
    );
    assert!(
        log.get("replyTo").is_none() && log.get("id").is_none(),
        "{log}"
    );

    // nestling's own emit arrives too.
    let out = nestling(&["emit", &addr, r#"{"ev":"audit"}"#, "[1]"]).await;
    out.expect_code(0);
    let line = listen
        .wait_stdout("the audit event", |l| l.contains("audit"))
        .await;
    let audit: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(audit["pattern"], r#"{"ev":"audit"}"#);
    assert_eq!(audit["data"], json!([1]));

    assert_eq!(terminate(&mut listen).await, Some(0));
    listen
        .wait_stderr("the stop line", |l| {
            l == "nestling: stopped (terminated); 4 packet(s) received"
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_listen_prints_text_and_answers_nestling_calls() {
    let test = "rmq_listen_prints_text_and_answers_nestling_calls";
    let Some(broker) = RmqBroker::shared(test) else {
        return;
    };
    let queue = unique_queue("text");
    let addr = broker.queue_url(&queue);
    let listen = listen_on(&addr, &["--echo"]).await;
    let out = nestling(&["call", &addr, "anything", r#"{"k":"求和"}"#, "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "{\"k\":\"求和\"}\n");
    let line = listen
        .wait_stdout("the request", |l| l.contains("anything"))
        .await;
    let prefix = format!(r#"{queue} request   pattern="anything" data={{"k":"求和"}} id="#);
    assert!(line.starts_with(&prefix), "{line}");
    assert!(
        line.contains(r#" replyTo="amq.rabbitmq.reply-to"#),
        "{line}"
    );
    assert!(line.contains(" headers={}"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rmq_address_errors_are_clear() {
    let out = nestling(&["call", "amqp://127.0.0.1:5672", "sum", "[1]"]).await;
    out.expect_code(3);
    assert!(
        out.stderr.contains("names no queue: add ?queue=NAME"),
        "{out:#?}"
    );
    let out = nestling(&["listen", "amqp://u:secret@127.0.0.1:5672/"]).await;
    out.expect_code(3);
    assert!(out.stderr.contains("?queue=NAME"), "{out:#?}");
    assert!(!out.stderr.contains("secret"), "{out:#?}");
    let out = nestling(&["emit", "amqp://h?queue=q&durable=maybe", "log"]).await;
    out.expect_code(3);
    assert!(out.stderr.contains("durable=maybe"), "{out:#?}");
    let out = nestling(&["emit", "amqp://h?queue=q", "log", "--tls", "--insecure"]).await;
    out.expect_code(3);

    // No broker there: a connection error, exit 2.
    let refused = format!("amqp://{}?queue=q", refused_addr().await);
    let out = nestling(&["call", &refused, "sum", "[1]", "--timeout", "3000"]).await;
    out.expect_code(2);
    let out = nestling(&["emit", &refused, "log", "--timeout", "3000"]).await;
    out.expect_code(2);
    let out = nestling(&["listen", &refused]).await;
    out.expect_code(2);
    assert!(out.stderr.contains("could not connect"), "{out:#?}");
}
