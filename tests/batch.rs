//! `Client::send_batch`: many requests to one pattern sent and awaited together, each
//! answered as a `send` would be — against a nestling server over TCP, against real
//! NestJS (the wire is Nest's: one frame per request), and through a custom transport
//! (the in-process client), with per-call errors, timeouts and parts.

mod support;

use std::time::Duration;

use nestling::{testing, ClientError, RpcException, Server};
use serde_json::json;
use support::{require_node, spawn_node, RunningServer};

struct Calc;

#[nestling::controller]
impl Calc {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("checked")]
    fn checked(&self, n: i64) -> Result<i64, RpcException> {
        if n % 3 == 0 {
            Err(RpcException::new(json!({ "divisible": n })))
        } else {
            Ok(n * 10)
        }
    }

    #[message_pattern("slow")]
    async fn slow(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

fn calc() -> Server {
    Server::builder()
        .discover(false)
        .controller(Calc)
        .build()
        .unwrap()
}

fn sums(n: i64) -> Vec<Vec<i64>> {
    (0..n).map(|i| vec![i, i * 2, 1]).collect()
}

fn expected(n: i64) -> Vec<i64> {
    (0..n).map(|i| i * 3 + 1).collect()
}

fn values<R: std::fmt::Debug>(results: Vec<Result<R, ClientError>>) -> Vec<R> {
    results
        .into_iter()
        .map(|r| r.expect("every call of the batch succeeds"))
        .collect()
}

#[tokio::test]
async fn replies_come_back_in_the_order_of_the_data() {
    let server = RunningServer::start(calc()).await;
    let client = nestling::Client::new(server.addr.to_string());
    let got = client
        .send_batch::<_, _, i64>("sum", sums(500))
        .await
        .unwrap();
    assert_eq!(values(got), expected(500));
    // The same client goes on with single calls and more batches on the same connection.
    assert_eq!(client.send::<_, _, i64>("sum", &[4, 5]).await.unwrap(), 9);
    let empty = client
        .send_batch::<_, Vec<i64>, i64>("sum", Vec::new())
        .await
        .unwrap();
    assert!(empty.is_empty());
    let (a, b) = tokio::join!(
        client.send_batch::<_, _, i64>("sum", sums(64)),
        client.send_batch::<_, _, i64>("sum", sums(32)),
    );
    assert_eq!(values(a.unwrap()), expected(64));
    assert_eq!(values(b.unwrap()), expected(32));
    server.stop().await;
}

#[tokio::test]
async fn each_call_keeps_its_own_error() {
    let server = RunningServer::start(calc()).await;
    let client = nestling::Client::new(server.addr.to_string());
    let got = client
        .send_batch::<_, _, i64>("checked", 1..=7)
        .await
        .unwrap();
    assert_eq!(got.len(), 7);
    for (n, result) in (1..=7).zip(got) {
        match result {
            Ok(v) => assert_eq!(v, n * 10, "call {n}"),
            Err(ClientError::Remote { error, .. }) => {
                assert_eq!(n % 3, 0, "only multiples of 3 fail");
                assert_eq!(error.value(), &json!({ "divisible": n }));
            }
            Err(other) => panic!("call {n}: {other}"),
        }
    }
    // A pattern nobody serves fails every call of the batch alike, with Nest's message.
    let got = client
        .send_batch::<_, _, i64>("nope", [1, 2])
        .await
        .unwrap();
    for result in got {
        let err = result.unwrap_err();
        assert!(
            err.to_string()
                .contains("There is no matching message handler"),
            "{err}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn a_batch_larger_than_the_in_flight_limit_goes_in_parts() {
    let server = RunningServer::start(calc()).await;
    let client = nestling::Client::builder(server.addr.to_string())
        .max_in_flight(8)
        .max_queued_frames(5)
        .build();
    let got = client
        .send_batch::<_, _, i64>("sum", sums(103))
        .await
        .unwrap();
    assert_eq!(values(got), expected(103));
    server.stop().await;
}

#[tokio::test]
async fn the_timeout_ends_only_the_calls_still_waiting() {
    let server = RunningServer::start(calc()).await;
    let client = nestling::Client::builder(server.addr.to_string())
        .request_timeout(Some(Duration::from_millis(400)))
        .build();
    let got = client
        .send_batch::<_, _, u64>("slow", [1, 5_000, 2, 5_000])
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(*got[0].as_ref().unwrap(), 1);
    assert_eq!(*got[2].as_ref().unwrap(), 2);
    for late in [&got[1], &got[3]] {
        assert!(
            matches!(late, Err(ClientError::Timeout { timeout, .. }) if *timeout == Duration::from_millis(400)),
            "{late:?}"
        );
    }
    // The late replies, when they come, are ignored; the connection serves on.
    assert_eq!(client.send::<_, _, i64>("sum", &[1, 1]).await.unwrap(), 2);
    server.stop().await;
}

#[tokio::test]
async fn a_payload_that_does_not_serialise_fails_the_batch_before_sending() {
    let server = RunningServer::start(calc()).await;
    let client = nestling::Client::new(server.addr.to_string());
    let mut bad = std::collections::BTreeMap::new();
    bad.insert(vec![1u8], 1); // a map with non-string keys is not JSON
    let err = client
        .send_batch::<_, _, i64>("sum", [bad])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Encode { .. }), "{err}");
    server.stop().await;
}

#[tokio::test]
async fn a_custom_transport_takes_the_calls_one_by_one() {
    let client = testing::client(&calc());
    let got = client
        .send_batch::<_, _, i64>("sum", sums(40))
        .await
        .unwrap();
    assert_eq!(values(got), expected(40));
    let got = client
        .send_batch::<_, _, i64>("checked", [3, 4])
        .await
        .unwrap();
    assert!(matches!(got[0], Err(ClientError::Remote { .. })));
    assert_eq!(*got[1].as_ref().unwrap(), 40);
}

#[tokio::test]
async fn nest_answers_a_batch_as_separate_calls() {
    let Some(node) = require_node("nest_answers_a_batch_as_separate_calls") else {
        return;
    };
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let client = nestling::Client::new(nest.addr());
    let got = client
        .send_batch::<_, _, i64>("sum", sums(300))
        .await
        .unwrap();
    assert_eq!(values(got), expected(300));
    // Nest's errors per call: an RpcException's object, a plain Error's generic shape.
    let got = client
        .send_batch::<_, _, i64>("fail_obj", [(), ()])
        .await
        .unwrap();
    for result in &got {
        match result {
            Err(ClientError::Remote { error, .. }) => {
                assert_eq!(error.value(), &json!({ "code": 42, "message": "m" }))
            }
            other => panic!("{other:?}"),
        }
    }
    let slow = nestling::Client::builder(nest.addr())
        .request_timeout(Some(Duration::from_millis(500)))
        .build();
    let got = slow
        .send_batch::<_, _, u64>("slow", [10, 3_000, 20])
        .await
        .unwrap();
    assert_eq!(*got[0].as_ref().unwrap(), 10);
    assert!(
        matches!(got[1], Err(ClientError::Timeout { .. })),
        "{:?}",
        got[1]
    );
    assert_eq!(*got[2].as_ref().unwrap(), 20);
}
