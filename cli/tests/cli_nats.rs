//! The `nestling` binary over NATS (`nats://` addresses), against a real `nats-server` and
//! the real NestJS user service and client of `tests/nest` (`Transport.NATS`).
//!
//! Without nats-server, Node ≥ 20 or `tests/nest/node_modules` these tests print
//! `SKIPPED: …` and return, or fail when `CI` is set.

mod common;

use common::brokers::{
    listen_on, require_nats, require_nest_nats, run_nest_client, spawn_nest_service, terminate,
    NatsServer,
};
use common::{nestling, refused_addr, WAIT_TIMEOUT};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_call_and_emit_reach_a_nest_service() {
    let test = "nats_call_and_emit_reach_a_nest_service";
    let (Some(bin), Some(node)) = (require_nats(test), require_nest_nats(test)) else {
        return;
    };
    let server = NatsServer::start(&bin).await;
    let url = server.url();
    let nest = spawn_nest_service(
        &node,
        &[("TRANSPORT", "nats"), ("NATS_URL", &url)],
        "READY nats",
    )
    .await;

    let out = nestling(&["call", &url, "sum", "[1,2,3]"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "6\n");
    let out = nestling(&["call", &url, r#"{"cmd":"sum"}"#, "[4,5]", "--json"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "9\n");
    let out = nestling(&["call", &url, "echo", "求和1111", "--raw"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "求和1111\n");

    // The service's error: its `err` JSON on stderr, exit 1.
    let out = nestling(&["call", &url, "fail", "--json"]).await;
    out.expect_code(1);
    assert_eq!(
        out.stderr_json(),
        json!({"status": "error", "message": "bad thing"})
    );

    let out = nestling(&["call", &url, "count", "3", "--stream"]).await;
    out.expect_code(0);
    assert_eq!(out.stdout, "1\n2\n3\n");

    let out = nestling(&[
        "call",
        &url,
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

    // A subject nothing subscribes to: NATS says "no responders" at once.
    let out = nestling(&["call", &url, "no_such_pattern"]).await;
    out.expect_code(2);
    assert!(out.stderr.starts_with("nestling: error: "), "{out:#?}");

    let out = nestling(&["emit", &url, "log", "求和1111"]).await;
    out.expect_code(0);
    assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", ""));
    if let Err(why) = nest
        .stdout
        .wait_for(|l| l == r#"EVENT log "求和1111""#, 1, WAIT_TIMEOUT)
        .await
    {
        nest.fail(&format!("the event did not arrive: {why}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_listen_echo_answers_a_nest_client() {
    let test = "nats_listen_echo_answers_a_nest_client";
    let (Some(bin), Some(node)) = (require_nats(test), require_nest_nats(test)) else {
        return;
    };
    let server = NatsServer::start(&bin).await;
    let url = server.url();
    let mut all = listen_on(&url, &["--json", "--echo"]).await;
    // A second listener on one subject only, in text form.
    let logs = listen_on(&url, &["--subject", "log"]).await;

    let ops = r#"[{"op":"send","pattern":"sum","data":[1,2]},
                  {"op":"send","pattern":{"cmd":"x"},"data":{"a":"😀"}},
                  {"op":"emit","pattern":"log","data":"求和1111"}]"#;
    let result = run_nest_client(&node, &[("TRANSPORT", "nats"), ("NATS_URL", &url)], ops).await;
    let result: Value = serde_json::from_str(&result).unwrap();
    assert_eq!(
        result,
        json!([{"ok": [1, 2]}, {"ok": {"a": "😀"}}, {"ok": null}])
    );

    let lines = match all.stdout.wait_for(|_| true, 3, WAIT_TIMEOUT).await {
        Ok(lines) => lines,
        Err(why) => all.fail(&why),
    };
    let packets: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| all.fail(&format!("{l}: {e}"))))
        .collect();
    let on = |subject: &str| {
        packets
            .iter()
            .find(|p| p["subject"] == subject)
            .unwrap_or_else(|| all.fail(&format!("no packet on subject {subject}")))
    };
    let sum = on("sum");
    assert_eq!(sum["subject"], "sum");
    assert_eq!(sum["kind"], "request");
    assert_eq!(sum["pattern"], "sum");
    assert_eq!(sum["data"], json!([1, 2]));
    assert!(sum["id"].is_string(), "{sum}");
    assert!(
        sum["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("_INBOX.")),
        "{sum}"
    );
    let cmd = on(r#"{"cmd":"x"}"#);
    assert_eq!(cmd["subject"], r#"{"cmd":"x"}"#);
    assert_eq!(cmd["pattern"], json!({"cmd": "x"}));
    let log = on("log");
    assert_eq!(
        (
            log["subject"].clone(),
            log["kind"].clone(),
            log["data"].clone()
        ),
        (json!("log"), json!("event"), json!("求和1111"))
    );
    assert!(
        log.get("reply").is_none() && log.get("id").is_none(),
        "{log}"
    );

    // Only the subject asked for, as text.
    let line = logs
        .wait_stdout("the log event", |l| l.starts_with("log "))
        .await;
    assert_eq!(line, r#"log event     pattern="log" data="求和1111""#);
    assert_eq!(logs.stdout.snapshot().len(), 1, "{}", logs.dump());

    // Replies (our echoes, on `_INBOX.` subjects) are not packets: nothing more was printed.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(all.stdout.snapshot().len(), 3, "{}", all.dump());

    assert_eq!(terminate(&mut all).await, Some(0));
    all.wait_stderr("the stop line", |l| {
        l == "nestling: stopped (terminated); 3 packet(s) received"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_address_errors_are_clear() {
    // A server that is not there: a connection error (exit 2) that names it.
    let refused = format!("nats://{}", refused_addr().await);
    let out = nestling(&["call", &refused, "sum", "[1]", "--timeout", "2000"]).await;
    out.expect_code(2);
    assert!(out.stderr.contains(&refused), "{out:#?}");
    let out = nestling(&["listen", &refused]).await;
    out.expect_code(2);
    assert!(
        out.stderr.contains("could not connect to NATS") && out.stderr.contains(&refused),
        "{out:#?}"
    );
    // Usage errors, exit 3.
    let out = nestling(&["call", "nats://", "sum"]).await;
    out.expect_code(3);
    assert!(out.stderr.contains("nats://host:4222"), "{out:#?}");
    let out = nestling(&[
        "call",
        "nats://127.0.0.1:4222",
        "sum",
        "--tls",
        "--insecure",
    ])
    .await;
    out.expect_code(3);
    assert!(
        out.stderr.contains("--tls applies to host:port"),
        "{out:#?}"
    );
    let out = nestling(&["listen", "127.0.0.1:0", "--subject", "x"]).await;
    out.expect_code(3);
    assert!(out.stderr.contains("--subject is for nats://"), "{out:#?}");
    let out = nestling(&["emit", "redis://127.0.0.1:6379", "log"]).await;
    out.expect_code(3);
    assert!(
        out.stderr.contains("unsupported address scheme `redis://`"),
        "{out:#?}"
    );
}
