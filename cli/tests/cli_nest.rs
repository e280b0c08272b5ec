//! The `nestling` binary against a real NestJS service: `tests/nest/user-service.mjs`
//! (`@nestjs/microservices` pinned by tests/nest/package-lock.json).
//!
//! Without Node ≥ 20 or `tests/nest/node_modules` these tests print `SKIPPED: …` and return,
//! or fail when `CI` is set (the rule of the workspace's tests/support/mod.rs).

mod common;

use common::{nestling, require_node, start_nest_user_service, Certs, Proc, WAIT_TIMEOUT};
use serde_json::json;

const NO_HANDLER: &str = "There is no matching message handler defined in the remote service.";

/// Waits for the service's `EVENT log <json>` line.
async fn event_logged(nest: &Proc, json: &str) {
    let want = format!("EVENT log {json}");
    if let Err(why) = nest.stdout.wait_for(|l| l == want, 1, WAIT_TIMEOUT).await {
        nest.fail(&format!("expected {want:?}: {why}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nest_call_and_errors() {
    let Some(node) = require_node("nest_call_and_errors") else {
        return;
    };
    let (_nest, addr) = start_nest_user_service(&node, &[]).await;

    let out = nestling(&["call", &addr, "sum", "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    let out = nestling(&["call", &addr, r#"{"cmd":"sum"}"#, "[4,5]", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "9\n");

    let payload = r#"{"s":"求和1111 a😀b","n":[1,2.5,null],"nested":{"k":"v"}}"#;
    let out = nestling(&["call", &addr, "echo", payload, "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, format!("{payload}\n"));
    let out = nestling(&["call", &addr, "echo", "求和1111", "--raw"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "求和1111\n");

    let out = nestling(&["call", &addr, "fail"]).await;
    out.expect_code(1);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr_json(),
        json!({"status": "error", "message": "bad thing"})
    );
    let out = nestling(&["call", &addr, "fail_obj", "--json"]).await;
    out.expect_code(1);
    assert_eq!(out.stderr, "{\"code\":42,\"message\":\"m\"}\n");
    let out = nestling(&["call", &addr, "boom", "--json"]).await;
    out.expect_code(1);
    assert_eq!(
        out.stderr_json(),
        json!({"status": "error", "message": "Internal server error"})
    );
    let out = nestling(&["call", &addr, "no_such_pattern"]).await;
    out.expect_code(1);
    assert_eq!(out.stderr_json(), json!(NO_HANDLER));

    let out = nestling(&["call", &addr, "slow", "2000", "--timeout", "200"]).await;
    out.expect_code(2);
    assert!(out.stderr.contains("no reply"), "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nest_emit_stream_and_repeat() {
    let Some(node) = require_node("nest_emit_stream_and_repeat") else {
        return;
    };
    let (nest, addr) = start_nest_user_service(&node, &[]).await;

    let out = nestling(&["emit", &addr, "log", "求和1111"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "");
    event_logged(&nest, r#""求和1111""#).await;
    nestling(&["emit", &addr, "log", r#"{"e":"a😀b"}"#])
        .await
        .expect_code(0);
    event_logged(&nest, r#"{"e":"a😀b"}"#).await;

    // Observables: synchronous items, items spaced in time, empty, and an error after items.
    let out = nestling(&["call", &addr, "count", "3", "--stream"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "1\n2\n3\n");
    let out = nestling(&["call", &addr, "ticks", "3", "--stream"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "0\n1\n2\n");
    let out = nestling(&["call", &addr, "empty", "--stream"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "");
    let out = nestling(&["call", &addr, "fails_after", "2", "--stream"]).await;
    out.expect_code(1);
    assert_eq!(out.stdout, "1\n2\n");
    assert_eq!(
        out.stderr,
        "{\"status\":\"error\",\"message\":\"stream broke\"}\n"
    );

    let out = nestling(&[
        "call",
        &addr,
        r#"{"cmd":"sum"}"#,
        "[1,2]",
        "--repeat",
        "100",
        "--concurrency",
        "10",
        "--json",
    ])
    .await;
    out.expect_code(0);
    let s = out.stdout_json();
    assert_eq!(
        (s["count"].as_u64(), s["errors"].as_u64()),
        (Some(100), Some(0)),
        "{s}"
    );
    assert!(s["latency_us"]["p99"].as_u64().is_some(), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nest_over_tls() {
    let Some(node) = require_node("nest_over_tls") else {
        return;
    };
    let certs = Certs::new("nest");
    let (cert, key) = (certs.cert(), certs.key());
    let (nest, addr) =
        start_nest_user_service(&node, &[("TLS_CERT", &cert), ("TLS_KEY", &key)]).await;

    let out = nestling(&["call", &addr, "sum", "[1,2,3]", "--tls", "--ca", &cert]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    let out = nestling(&[
        "call", &addr, "count", "2", "--stream", "--tls", "--ca", &cert,
    ])
    .await;
    out.expect_code(0);
    assert_eq!(out.stdout, "1\n2\n");
    nestling(&[
        "emit",
        &addr,
        "log",
        "求和 over tls",
        "--tls",
        "--ca",
        &cert,
    ])
    .await
    .expect_code(0);
    event_logged(&nest, r#""求和 over tls""#).await;
    // Without --tls the Nest TLS server never answers a plain frame.
    let out = nestling(&["call", &addr, "sum", "[1]", "--timeout", "1000"]).await;
    out.expect_code(2);
}
