//! Streamed replies (Nest's Observable replies): handlers returning `impl Stream`, and
//! clients consuming them with `send_stream`. Real Nest is the oracle for the wire packets
//! and for what a Nest client observes.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::{Stream, StreamExt};
use nestling::{Client, ClientError, RpcException, Server};
use serde_json::{json, Value};
use support::{require_node, run_nest_client, spawn_node, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The streaming handlers of tests/nest/user-service.mjs, in Rust.
#[derive(Default)]
struct Streams;

#[nestling::controller]
impl Streams {
    /// `from([1..n])`: every item ready at once.
    #[message_pattern("count")]
    fn count(&self, n: u32) -> impl Stream<Item = u32> {
        stream::iter(1..=n)
    }

    /// `interval(5).pipe(take(n))`, completing 20 ms after the last item.
    #[message_pattern("ticks")]
    async fn ticks(&self, n: u32) -> BoxStream<'static, u32> {
        stream::unfold(0u32, move |i| async move {
            if i < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some((i, i + 1))
            } else if i == n {
                tokio::time::sleep(Duration::from_millis(20)).await;
                None
            } else {
                None
            }
        })
        .boxed()
    }

    #[message_pattern("empty")]
    fn empty(&self) -> impl Stream<Item = u32> {
        stream::empty()
    }

    #[message_pattern("fails_after")]
    fn fails_after(&self, n: u32) -> impl Stream<Item = Result<u32, RpcException>> {
        stream::iter(
            (1..=n)
                .map(Ok)
                .chain([Err(RpcException::new("stream broke"))]),
        )
    }

    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

async fn rust_server() -> RunningServer {
    RunningServer::start(
        Server::builder()
            .discover(false)
            .controller(Streams)
            .build()
            .unwrap(),
    )
    .await
}

/// Sends one raw request and returns every frame answering it, up to the one with
/// `isDisposed` (exact JSON text, in arrival order).
async fn raw_exchange(addr: &str, pattern: &str, data: Value) -> Vec<String> {
    let mut sock = TcpStream::connect(addr).await.unwrap();
    let req = json!({"pattern": pattern, "data": data, "id": "s1"}).to_string();
    sock.write_all(format!("{}#{}", req.encode_utf16().count(), req).as_bytes())
        .await
        .unwrap();
    let mut frames = Vec::new();
    let mut buf = Vec::new();
    loop {
        // Parse every complete frame in buf (replies here are ASCII).
        while let Some(hash) = buf.iter().position(|&b| b == b'#') {
            let len: usize = std::str::from_utf8(&buf[..hash]).unwrap().parse().unwrap();
            if buf.len() < hash + 1 + len {
                break;
            }
            let text = String::from_utf8(buf[hash + 1..hash + 1 + len].to_vec()).unwrap();
            buf.drain(..hash + 1 + len);
            let done = text.contains("\"isDisposed\":true");
            frames.push(text);
            if done {
                return frames;
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut chunk))
            .await
            .expect("stream must complete")
            .unwrap();
        assert!(n > 0, "connection closed mid-stream; got {frames:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn stream_cases() -> Vec<(&'static str, Value)> {
    vec![
        ("count", json!(3)),
        ("count", json!(1)),
        ("ticks", json!(3)),
        ("empty", json!(0)),
        ("fails_after", json!(2)),
        ("fails_after", json!(0)),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn wire_packets_match_nest_exactly() {
    let rust = rust_server().await;
    let expected: Vec<(&str, Vec<&str>)> = vec![
        (
            "count 3",
            vec![
                r#"{"response":1,"id":"s1"}"#,
                r#"{"response":2,"id":"s1"}"#,
                r#"{"response":3,"isDisposed":true,"id":"s1"}"#,
            ],
        ),
        (
            "count 1",
            vec![r#"{"response":1,"isDisposed":true,"id":"s1"}"#],
        ),
        (
            "ticks 3",
            vec![
                r#"{"response":0,"id":"s1"}"#,
                r#"{"response":1,"id":"s1"}"#,
                r#"{"response":2,"id":"s1"}"#,
                r#"{"isDisposed":true,"id":"s1"}"#,
            ],
        ),
        ("empty", vec![r#"{"isDisposed":true,"id":"s1"}"#]),
        (
            "fails_after 2",
            vec![
                r#"{"response":1,"id":"s1"}"#,
                r#"{"response":2,"id":"s1"}"#,
                r#"{"err":{"status":"error","message":"stream broke"},"isDisposed":true,"id":"s1"}"#,
            ],
        ),
        (
            "fails_after 0",
            vec![
                r#"{"err":{"status":"error","message":"stream broke"},"isDisposed":true,"id":"s1"}"#,
            ],
        ),
    ];
    let node = require_node("wire_packets_match_nest_exactly");
    let nest = match &node {
        Some(node) => Some(spawn_node(node, "user-service.mjs", &[]).await),
        None => None,
    };
    for ((pattern, data), (name, want)) in stream_cases().into_iter().zip(expected) {
        let got = raw_exchange(&rust.addr.to_string(), pattern, data.clone()).await;
        assert_eq!(got, want, "nestling, {name}");
        if let Some(nest) = &nest {
            let oracle = raw_exchange(&nest.addr(), pattern, data).await;
            assert_eq!(oracle, want, "NestJS, {name} (the oracle changed?)");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn send_stream_yields_every_item_from_nestling_and_nest() {
    let rust = rust_server().await;
    let mut servers = vec![("nestling", rust.addr.to_string())];
    let node = require_node("send_stream_yields_every_item_from_nestling_and_nest");
    let nest = match &node {
        Some(node) => Some(spawn_node(node, "user-service.mjs", &[]).await),
        None => None,
    };
    if let Some(nest) = &nest {
        servers.push(("nest", nest.addr()));
    }
    for (who, addr) in servers {
        let client = Client::new(addr);
        let collect = |pattern: &'static str, n: u32| {
            let client = client.clone();
            async move {
                let mut s = client.send_stream::<_, _, u32>(pattern, &n).await.unwrap();
                let mut items = Vec::new();
                let mut error = None;
                while let Some(item) = s.next().await {
                    match item {
                        Ok(v) => items.push(v),
                        Err(e) => error = Some(e),
                    }
                }
                (items, error)
            }
        };
        let (items, err) = collect("count", 4).await;
        assert_eq!((items, err.is_none()), (vec![1, 2, 3, 4], true), "{who}");
        let (items, err) = collect("ticks", 3).await;
        assert_eq!((items, err.is_none()), (vec![0, 1, 2], true), "{who}");
        let (items, err) = collect("empty", 0).await;
        assert_eq!((items, err.is_none()), (vec![], true), "{who}");
        let (items, err) = collect("fails_after", 2).await;
        assert_eq!(items, vec![1, 2], "{who}");
        let err = err.expect("stream error");
        assert_eq!(
            err.remote().unwrap().value(),
            &json!({"status": "error", "message": "stream broke"}),
            "{who}"
        );
        // `send` on a streaming pattern gives the last item, like `lastValueFrom`.
        let last: u32 = client.send("ticks", &3).await.unwrap();
        assert_eq!(last, 2, "{who}");
        let e = client.send::<_, _, u32>("empty", &0).await.unwrap_err();
        assert!(matches!(e, ClientError::EmptyReply { .. }), "{who}: {e:?}");
        // Many streams interleaved on one connection stay apart.
        let all = futures_util::future::join_all((1..=20u32).map(|n| collect("count", n))).await;
        for (n, (items, err)) in (1..=20u32).zip(all) {
            assert!(err.is_none(), "{who}");
            assert_eq!(items, (1..=n).collect::<Vec<_>>(), "{who}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_client_streams() {
    let rust = rust_server().await;
    let typed = StreamsClient::new(Client::new(rust.addr.to_string()));
    let items: Vec<u32> = typed
        .count(3)
        .await
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3]);
    let mut failing = typed.fails_after(1).await.unwrap();
    assert_eq!(failing.next().await.unwrap().unwrap(), 1);
    assert!(failing.next().await.unwrap().is_err());
    assert!(failing.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn nest_client_sees_the_same_streams_from_both_servers() {
    let Some(node) = require_node("nest_client_sees_the_same_streams_from_both_servers") else {
        return;
    };
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let rust = rust_server().await;
    let ops: Vec<Value> = stream_cases()
        .into_iter()
        .map(|(p, d)| json!({"op": "collect", "pattern": p, "data": d}))
        .chain([json!({"op": "send", "pattern": "ticks", "data": 2})])
        .collect();
    let ops = Value::Array(ops).to_string();
    let from_nest = run_nest_client(&node, &nest.addr(), &ops).await;
    let from_rust = run_nest_client(&node, &rust.addr.to_string(), &ops).await;
    let expected = json!([
        {"ok": {"items": [1, 2, 3], "complete": true}},
        {"ok": {"items": [1], "complete": true}},
        {"ok": {"items": [0, 1, 2], "complete": true}},
        {"ok": {"items": [], "complete": true}},
        {"ok": {"items": [1, 2], "err": {"status": "error", "message": "stream broke"}}},
        {"ok": {"items": [], "err": {"status": "error", "message": "stream broke"}}},
        {"ok": 1}
    ]);
    assert_eq!(serde_json::from_str::<Value>(&from_nest).unwrap(), expected);
    assert_eq!(from_rust, from_nest);
}
