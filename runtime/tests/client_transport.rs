//! A client transport written against the public interface alone
//! (`nestling_runtime::transport`): an in-memory link to a hand-rolled service, driven
//! through `Client` — `send`, `emit`, `send_stream`, a remote error, a dropped link and
//! reconnecting, connect failures and their pacing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use nestling_runtime::packet::Wire;
use nestling_runtime::transport::{ClientTransport, ReplyRouter, TransportFuture};
use nestling_runtime::{Client, ClientError, Pattern};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The service side: what it was sent, and how it answers.
#[derive(Default)]
struct Service {
    events: Mutex<Vec<Value>>,
    connects: AtomicUsize,
}

impl Service {
    /// Answers packets from `inbox` on `outbox` until either end goes away. `quit` ends the
    /// connection (as a server going down would).
    async fn run(
        self: Arc<Self>,
        mut inbox: mpsc::UnboundedReceiver<Bytes>,
        outbox: mpsc::UnboundedSender<Bytes>,
    ) {
        while let Some(packet) = inbox.recv().await {
            let packet: Value = serde_json::from_slice(&packet).expect("the client sends JSON");
            let pattern = packet["pattern"].as_str().unwrap_or_default().to_owned();
            let data = &packet["data"];
            let Some(id) = packet.get("id").cloned() else {
                self.events.lock().unwrap().push(packet.clone());
                continue;
            };
            let mut replies = Vec::new();
            match pattern.as_str() {
                "sum" => {
                    let sum: i64 = data
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(Value::as_i64)
                        .sum();
                    replies.push(json!({"response": sum, "isDisposed": true, "id": id}));
                }
                "count" => {
                    for i in 0..data.as_u64().unwrap() {
                        replies.push(json!({"response": i, "id": id}));
                    }
                    replies.push(json!({"isDisposed": true, "id": id}));
                }
                "fail" => replies.push(json!({
                    "err": {"status": "error", "message": "bad thing"},
                    "isDisposed": true,
                    "id": id,
                })),
                "hang" => {}
                "quit" => return,
                _ => replies.push(json!({
                    "id": id,
                    "status": "error",
                    "err": nestling_runtime::NO_HANDLER_MESSAGE,
                })),
            }
            for reply in replies {
                let _ = outbox.send(Bytes::from(reply.to_string()));
            }
        }
    }
}

/// The transport: packets go to the service over one channel; a reader task hands the
/// service's answers to the router.
struct MemoryLink {
    to_service: mpsc::UnboundedSender<Bytes>,
    replies: ReplyRouter,
    reader: tokio::task::JoinHandle<()>,
    addr: String,
}

impl MemoryLink {
    fn connect(addr: String, service: Arc<Service>) -> Self {
        service.connects.fetch_add(1, Ordering::SeqCst);
        let (to_service, inbox) = mpsc::unbounded_channel();
        let (outbox, mut from_service) = mpsc::unbounded_channel::<Bytes>();
        tokio::spawn(service.run(inbox, outbox));
        let replies = ReplyRouter::new();
        let reader = tokio::spawn({
            let replies = replies.clone();
            async move {
                while let Some(packet) = from_service.recv().await {
                    if let Err(e) = replies.deliver_packet(&packet) {
                        replies.close_all(&format!("unreadable reply: {e}"));
                        return;
                    }
                }
                replies.close_all("the service went away");
            }
        });
        MemoryLink {
            to_service,
            replies,
            reader,
            addr,
        }
    }

    fn send(&self, packet: Bytes) -> Result<(), ClientError> {
        self.to_service
            .send(packet)
            .map_err(|_| ClientError::ConnectionClosed {
                addr: self.addr.clone(),
                reason: "the service went away".into(),
            })
    }
}

impl ClientTransport for MemoryLink {
    fn wire(&self) -> Wire {
        Wire::Bare
    }

    fn replies(&self) -> &ReplyRouter {
        &self.replies
    }

    fn request<'a>(
        &'a self,
        _pattern: &'a Pattern,
        _id: u64,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        let sent = self.send(packet);
        Box::pin(async move { sent })
    }

    fn event<'a>(
        &'a self,
        _pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        let sent = self.send(packet);
        Box::pin(async move { sent })
    }

    fn close(&self, reason: &str) {
        self.replies.close_all(reason);
        self.reader.abort();
    }
}

fn client_for(service: &Arc<Service>) -> Client {
    let service = service.clone();
    Client::builder("memory://service")
        .transport(move |addr: String| {
            let service = service.clone();
            async move { Ok::<_, ClientError>(MemoryLink::connect(addr, service)) }
        })
        .build()
}

#[tokio::test]
async fn send_emit_streams_and_remote_errors_go_through_a_custom_transport() {
    let service = Arc::new(Service::default());
    let client = client_for(&service);

    let sum: i64 = client.send("sum", &[1, 2, 3]).await.unwrap();
    assert_eq!(sum, 6);

    // Many calls at once on the one link, each resolved by its id.
    let calls = (0..50).map(|i| {
        let client = client.clone();
        async move { client.send::<_, _, i64>("sum", &[i, i]).await.unwrap() }
    });
    let sums = futures_util::future::join_all(calls).await;
    assert_eq!(sums, (0..50).map(|i| 2 * i).collect::<Vec<i64>>());

    let items: Vec<u64> = client
        .send_stream::<_, _, u64>("count", &4)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [0, 1, 2, 3]);
    // `send` on a streamed reply resolves with its last value.
    assert_eq!(client.send::<_, _, u64>("count", &3).await.unwrap(), 2);

    match client.send::<_, _, i64>("fail", &()).await {
        Err(ClientError::Remote { pattern, error }) => {
            assert_eq!(pattern, r#""fail""#, "the pattern as JSON");
            assert_eq!(
                error.value(),
                &json!({"status": "error", "message": "bad thing"})
            );
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    let mut failing = client.send_stream::<_, _, u64>("fail", &()).await.unwrap();
    match failing.next().await {
        Some(Err(ClientError::Remote { error, .. })) => {
            assert_eq!(error.message(), Some("bad thing"));
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    assert!(failing.next().await.is_none());
    match client.send::<_, _, i64>("nobody", &()).await {
        Err(ClientError::Remote { error, .. }) => assert!(error.is_no_handler()),
        other => panic!("expected no handler, got {other:?}"),
    }

    client.emit("log", "求和1111").await.unwrap();
    client
        .emit(json!({"cmd": "audit", "v": 1}), &json!({"who": "me"}))
        .await
        .unwrap();
    // Events carry no id; a request after them is answered after they were taken in.
    let _: i64 = client.send("sum", &[0]).await.unwrap();
    let events = service.events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            json!({"pattern": "log", "data": "求和1111"}),
            // Object patterns go out in Nest's normalised form for events.
            json!({"pattern": r#"{"cmd":"audit","v":1}"#, "data": {"who": "me"}}),
        ]
    );
    assert_eq!(
        service.connects.load(Ordering::SeqCst),
        1,
        "one link for all calls"
    );
}

#[tokio::test]
async fn a_dropped_link_fails_its_calls_and_the_next_call_reconnects() {
    let service = Arc::new(Service::default());
    let client = client_for(&service);
    client.connect().await.unwrap();

    let hanging = tokio::spawn({
        let client = client.clone();
        async move { client.send::<_, _, i64>("hang", &()).await }
    });
    let stream = client.send_stream::<_, _, u64>("hang", &()).await.unwrap();
    tokio::task::yield_now().await;
    // The service goes away: every waiting call fails at once.
    let quit = client.send::<_, _, i64>("quit", &()).await;
    for result in [quit, hanging.await.unwrap()] {
        match result {
            Err(ClientError::ConnectionClosed { addr, reason }) => {
                assert_eq!(addr, "memory://service");
                assert_eq!(reason, "the service went away");
            }
            other => panic!("expected the link to close, got {other:?}"),
        }
    }
    let streamed: Vec<_> = stream.collect().await;
    assert!(
        matches!(
            streamed.as_slice(),
            [Err(ClientError::ConnectionClosed { .. })]
        ),
        "{streamed:?}"
    );

    // The next call opens a new link through the connector.
    assert_eq!(client.send::<_, _, i64>("sum", &[2, 2]).await.unwrap(), 4);
    assert_eq!(service.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn timeouts_and_close_reach_the_transport() {
    let service = Arc::new(Service::default());
    let client = client_for(&service);
    match client
        .send_with_timeout::<_, _, i64>("hang", &(), Some(Duration::from_millis(20)))
        .await
    {
        Err(ClientError::Timeout { pattern, .. }) => assert_eq!(pattern, r#""hang""#),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let hanging = tokio::spawn({
        let client = client.clone();
        async move { client.send::<_, _, i64>("hang", &()).await }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.close();
    match hanging.await.unwrap() {
        Err(ClientError::ConnectionClosed { reason, .. }) => {
            assert_eq!(reason, "closed by the client");
        }
        other => panic!("expected the close, got {other:?}"),
    }
    assert_eq!(client.send::<_, _, i64>("sum", &[1]).await.unwrap(), 1);
    assert_eq!(service.connects.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connect_failures_are_reported_and_paced() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = Client::builder("memory://down")
        .reconnect_backoff(Duration::from_secs(60), Duration::from_secs(60))
        .transport({
            let attempts = attempts.clone();
            move |addr: String| {
                attempts.fetch_add(1, Ordering::SeqCst);
                async move {
                    Err::<MemoryLink, _>(ClientError::Connect {
                        addr,
                        source: std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            "refused",
                        ),
                    })
                }
            }
        })
        .build();
    match client.send::<_, _, i64>("sum", &[1]).await {
        Err(ClientError::Connect { addr, .. }) => assert_eq!(addr, "memory://down"),
        other => panic!("expected a connect error, got {other:?}"),
    }
    match client.emit("log", &1).await {
        Err(ClientError::Unavailable {
            addr, last_error, ..
        }) => {
            assert_eq!(addr, "memory://down");
            assert!(last_error.contains("refused"), "{last_error}");
        }
        other => panic!("expected the backoff, got {other:?}"),
    }
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "no dial while backing off"
    );

    let stuck = Client::builder("memory://slow")
        .connect_timeout(Duration::from_millis(20))
        .transport(|_addr: String| std::future::pending::<Result<MemoryLink, ClientError>>())
        .build();
    match stuck.connect().await {
        Err(ClientError::ConnectTimeout { addr, timeout }) => {
            assert_eq!(
                (addr.as_str(), timeout),
                ("memory://slow", Duration::from_millis(20))
            );
        }
        other => panic!("expected a connect timeout, got {other:?}"),
    }
}
