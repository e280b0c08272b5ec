//! `ServerBuilder::quickack`: a read that produced no immediate reply is acknowledged at
//! once (`TCP_QUICKACK` on Linux), so that a Nest client — Nagle on, `emit` then `send` as
//! two small segments — is not held up by the server's delayed ACK. These tests check that
//! the behaviour is correct either way, with a real Nest gateway and with a raw Nagle
//! client; how much faster it is is measured by the load benchmark
//! (`cargo run --release -p nestling-bench -- --http`), never asserted here.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{http_get, init_tracing, require_node, spawn_node, RunningServer, WAIT_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tutorial's user service, counting its `log` events.
struct Users {
    logged: Arc<AtomicUsize>,
}

#[nestling::controller]
impl Users {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[event_pattern("log")]
    fn log(&self, _text: String) {
        self.logged.fetch_add(1, Ordering::Relaxed);
    }
}

async fn serve(quickack: bool) -> (RunningServer, Arc<AtomicUsize>) {
    let logged = Arc::new(AtomicUsize::new(0));
    let server = nestling::Server::builder()
        .discover(false)
        .controller(Users {
            logged: logged.clone(),
        })
        .quickack(quickack)
        .build()
        .unwrap();
    assert_eq!(server.config().quickack, quickack);
    (RunningServer::start(server).await, logged)
}

async fn wait_logged(logged: &AtomicUsize, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT_TIMEOUT;
    while logged.load(Ordering::Relaxed) < n && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(logged.load(Ordering::Relaxed), n, "log events handled");
}

/// The real Nest gateway (`tests/nest/gateway.mjs`) against a nestling service, with the
/// option on (the default) and off: every `GET /sum` answers, every `log` arrives.
#[tokio::test]
async fn nest_gateway_gets_every_answer_with_quickack_on_and_off() {
    let Some(node) = require_node("nest_gateway_gets_every_answer_with_quickack_on_and_off") else {
        return;
    };
    init_tracing();
    for quickack in [true, false] {
        let (server, logged) = serve(quickack).await;
        let port = server.port().to_string();
        let gateway = spawn_node(&node, "gateway.mjs", &[("USER_SERVICE_PORT", &port)]).await;
        for i in 1..=20i64 {
            let path = format!("/sum?num={i},{i},1");
            let resp = http_get(gateway.port, &path)
                .await
                .unwrap_or_else(|e| gateway.fail(&e));
            if (resp.status, resp.body.clone()) != (200, (2 * i + 1).to_string()) {
                gateway.fail(&format!("quickack {quickack}: GET {path} gave {resp:?}"));
            }
        }
        wait_logged(&logged, 20).await;
        drop(gateway);
        server.stop().await;
    }
}

/// A client that writes like Nest's (Nagle on, an event then a request as separate
/// writes, with a partial frame split across writes too) gets every reply, in order.
#[tokio::test]
async fn nagle_client_writing_event_then_request_is_answered() {
    init_tracing();
    for quickack in [true, false] {
        let (server, logged) = serve(quickack).await;
        let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        stream.set_nodelay(false).unwrap();
        let event = r#"{"pattern":"log","data":"求和1111"}"#;
        let mut replies = Vec::new();
        for id in 0..30 {
            stream
                .write_all(format!("33#{event}").as_bytes())
                .await
                .unwrap();
            let request = format!(r#"{{"pattern":"sum","data":[{id},1],"id":"{id}"}}"#);
            let frame = format!("{}#{request}", request.len());
            // Half a frame, then the rest: a read that completes nothing.
            let (head, tail) = frame.split_at(frame.len() / 2);
            stream.write_all(head.as_bytes()).await.unwrap();
            stream.write_all(tail.as_bytes()).await.unwrap();
            let want = format!(r#"{{"response":{},"isDisposed":true,"id":"{id}"}}"#, id + 1);
            let want = format!("{}#{want}", want.len());
            let mut got = vec![0u8; want.len()];
            tokio::time::timeout(WAIT_TIMEOUT, stream.read_exact(&mut got))
                .await
                .expect("reply in time")
                .unwrap();
            replies.push((String::from_utf8(got).unwrap(), want));
        }
        for (got, want) in &replies {
            assert_eq!(got, want, "quickack {quickack}");
        }
        wait_logged(&logged, 30).await;
        drop(stream);
        server.stop().await;
    }
}
