//! `nestling::testing`: a controller called through the whole pipeline with no socket —
//! routing, payload decoding, layers, error shapes, streams and events — in a line or two.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use nestling::middleware::guard;
use nestling::{testing, Context, Request, RpcException, Server};
use serde_json::{json, Value};

struct Shop {
    logged: Arc<AtomicUsize>,
}

fn staff_only() -> nestling::middleware::DynLayer {
    nestling::middleware::DynLayer::new(guard(|req: &Request| {
        req.payload::<Value>().is_ok_and(|v| v["role"] == "staff")
    }))
}

#[nestling::controller]
impl Shop {
    #[message_pattern({ cmd: "price" })]
    fn price(&self, (qty, each): (u32, u32)) -> u32 {
        qty * each
    }

    #[message_pattern("stock")]
    async fn stock(&self, item: String) -> Result<u32, RpcException> {
        match item.as_str() {
            "apple" => Ok(3),
            _ => Err(RpcException::new(json!({ "status": 404, "item": item }))),
        }
    }

    #[message_pattern("restock", layer = staff_only)]
    fn restock(&self, _order: Value) -> bool {
        true
    }

    #[message_pattern("boom")]
    fn boom(&self) -> u32 {
        panic!("handler bug")
    }

    #[message_pattern("peer")]
    fn peer(&self, ctx: &Context) -> String {
        ctx.peer_addr().to_string()
    }

    #[message_pattern("count")]
    fn count(&self, to: u32) -> impl futures_util::Stream<Item = u32> + Send + 'static {
        futures_util::stream::iter(1..=to)
    }

    #[event_pattern("log")]
    async fn log(&self, _text: String) {
        self.logged.fetch_add(1, Ordering::SeqCst);
    }
}

fn shop() -> (nestling::Client, Arc<AtomicUsize>) {
    let logged = Arc::new(AtomicUsize::new(0));
    let server = Server::builder()
        .discover(false)
        .controller(Shop {
            logged: logged.clone(),
        })
        .build()
        .unwrap();
    (testing::client(&server), logged)
}

#[tokio::test]
async fn requests_are_routed_decoded_and_answered() {
    let (client, _) = shop();
    let total: u32 = client
        .send(json!({ "cmd": "price" }), &(3, 4))
        .await
        .unwrap();
    assert_eq!(total, 12);
    // Typed client over the same in-process client.
    let shop = ShopClient::new(client.clone());
    assert_eq!(shop.stock("apple".into()).await.unwrap(), 3);
    assert_eq!(shop.peer().await.unwrap(), testing::PEER.to_string());
}

#[tokio::test]
async fn errors_arrive_in_nests_shapes() {
    let (client, _) = shop();
    let err = client.send::<_, _, u32>("stock", "pear").await.unwrap_err();
    assert_eq!(
        err.remote().unwrap().value(),
        &json!({ "status": 404, "item": "pear" })
    );

    let err = client.send::<_, _, u32>("boom", &()).await.unwrap_err();
    assert_eq!(
        err.remote().unwrap().message(),
        Some("Internal server error")
    );

    let err = client.send::<_, _, u32>("nobody", &()).await.unwrap_err();
    assert!(err.remote().unwrap().is_no_handler(), "{err}");

    let err = client
        .send::<_, _, u32>(json!({ "cmd": "price" }), "not a pair")
        .await
        .unwrap_err();
    let message = err.remote().unwrap().message().unwrap().to_owned();
    assert!(
        message.starts_with("invalid payload for pattern"),
        "{message}"
    );
}

#[tokio::test]
async fn layers_guard_handlers() {
    let (client, _) = shop();
    let refused = client
        .send::<_, _, bool>("restock", &json!({ "role": "guest" }))
        .await
        .unwrap_err();
    assert_eq!(
        refused.remote().unwrap().message(),
        Some("Forbidden resource")
    );
    let ok: bool = client
        .send("restock", &json!({ "role": "staff" }))
        .await
        .unwrap();
    assert!(ok);
}

#[tokio::test]
async fn streams_and_events_go_through() {
    let (client, logged) = shop();
    let items: Vec<u32> = client
        .send_stream::<_, _, u32>("count", &4)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, [1, 2, 3, 4]);

    for _ in 0..3 {
        client.emit("log", "hello").await.unwrap();
    }
    // Async event handlers finish on their own tasks.
    for _ in 0..100 {
        if logged.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(logged.load(Ordering::SeqCst), 3);
}
