//! The NATS transport end to end through a real `nats-server`: nestling serving and
//! calling over NATS (request, event, object pattern, stream, errors, no responders,
//! non-Nest messages, graceful drain). Interop with real Nest is in `nats_interop.rs`,
//! scale-out over a queue group in `nats_scale.rs`.
//!
//! Without `nats-server` these tests print `SKIPPED`; with `CI` set they fail.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, Stream, StreamExt};
use nestling::nats::NatsServe;
use nestling::{Client, ClientError, Context, RpcException, Server};
use serde_json::{json, Value};
use support::nats::{require_nats, NatsServer};

#[derive(Default)]
struct Users {
    logged: Arc<AtomicUsize>,
}

#[nestling::controller]
impl Users {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern({"cmd": "sum"})]
    async fn sum_cmd(&self, nums: Vec<i64>) -> i64 {
        tokio::task::yield_now().await; // answered through the spawned-reply path
        nums.iter().sum()
    }

    #[message_pattern("count")]
    fn count(&self, n: u32) -> impl Stream<Item = u32> {
        stream::iter(1..=n)
    }

    #[message_pattern("fail")]
    fn fail(&self) -> Result<u32, RpcException> {
        Err(RpcException::new("nope"))
    }

    #[message_pattern("where")]
    fn where_(&self, ctx: &Context) -> Value {
        json!({"subject": ctx.subject(), "pattern": ctx.pattern()})
    }

    #[message_pattern("slow")]
    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    #[event_pattern("log")]
    fn log(&self, _text: Value) {
        self.logged.fetch_add(1, Ordering::SeqCst);
    }
}

struct Service {
    logged: Arc<AtomicUsize>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), nestling::ServerError>>,
}

async fn serve(nats: &NatsServer, queue: Option<&str>) -> Service {
    let logged = Arc::new(AtomicUsize::new(0));
    let server = Server::builder()
        .discover(false)
        .controller(Users {
            logged: logged.clone(),
        })
        .build()
        .unwrap();
    let mut options = NatsServe::new(nats.url());
    if let Some(q) = queue {
        options = options.queue(q);
    }
    let listening = server.listen_nats(options).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(listening.serve_with_shutdown(async {
        let _ = stopped.await;
    }));
    Service { logged, stop, task }
}

fn client(nats: &NatsServer) -> Client {
    Client::builder(nats.url())
        .request_timeout(Some(Duration::from_secs(10)))
        .build()
}

#[tokio::test]
async fn send_emit_stream_and_errors_over_nats() {
    let Some(bin) = require_nats("send_emit_stream_and_errors_over_nats") else {
        return;
    };
    let nats = NatsServer::start(&bin).await;
    let service = serve(&nats, None).await;
    let client = client(&nats);

    let sum: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(sum, 6);
    let sum: i64 = client.send(json!({"cmd": "sum"}), &[4, 5]).await.unwrap();
    assert_eq!(sum, 9);
    let items: Vec<u32> = client
        .send_stream::<_, _, u32>("count", &3)
        .await
        .unwrap()
        .map(|i| i.unwrap())
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3]);
    match client.send::<_, _, u32>("fail", &()).await {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(
                error.value(),
                &json!({"status": "error", "message": "nope"})
            )
        }
        other => panic!("expected the service's error, got {other:?}"),
    }
    let whereabouts: Value = client.send("where", &()).await.unwrap();
    assert_eq!(whereabouts, json!({"subject": "where", "pattern": "where"}));

    // Many concurrent calls on the one NATS connection.
    let calls = (0..200i64).map(|i| {
        let client = client.clone();
        async move { client.send::<_, _, i64>("sum", &[i, 1]).await.unwrap() }
    });
    let answers = futures_util::future::join_all(calls).await;
    assert_eq!(answers, (0..200).map(|i| i + 1).collect::<Vec<_>>());

    for _ in 0..5 {
        client.emit("log", "求和1111").await.unwrap();
    }
    support::eventually(Duration::from_secs(5), || {
        (service.logged.load(Ordering::SeqCst) == 5).then_some(())
    })
    .await
    .expect("5 events handled");

    let _ = service.stop.send(());
    service.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_pattern_nobody_serves_fails_fast_with_no_responders() {
    let Some(bin) = require_nats("a_pattern_nobody_serves_fails_fast_with_no_responders") else {
        return;
    };
    let nats = NatsServer::start(&bin).await;
    let client = client(&nats);
    let started = std::time::Instant::now();
    match client.send::<_, _, i64>("nobody", &1).await {
        Err(ClientError::NoResponders { pattern }) => assert_eq!(pattern, "\"nobody\""),
        other => panic!("expected NoResponders, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not a timeout");
}
