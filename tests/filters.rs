//! Exception filters (Nest's `@Catch` + `@UseFilters` / `useGlobalFilters`), end to end:
//!
//! - the order Nest tries them in (handler, controller, global; first match wins; none →
//!   "Internal server error"), for plain, `async`, layered and streamed handlers, over a
//!   real TCP socket, over NATS and in-process — the same answers on each;
//! - panics, `RpcException`s and undecodable payloads are not filtered;
//! - against real Nest: `tests/nest/user-service.mjs`' `find_user*` handlers use a
//!   `@Catch(NotFoundError)` filter; [`FilteredUsers`] is their Rust twin, and Nest's own
//!   client gets identical replies from both.

mod support;

use std::time::Duration;

use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use nestling::filter::{catch, Filter};
use nestling::middleware::DynLayer;
use nestling::{BoxError, Client, ClientError, RpcException, Server};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use support::{init_tracing, require_node, run_nest_client, spawn_node, RunningServer};

// ---------------------------------------------------------------------------------------
// Order: handler, controller, global
// ---------------------------------------------------------------------------------------

/// Error types with a fixed message.
macro_rules! errors {
    ($($(#[$doc:meta])* $name:ident => $msg:literal;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        struct $name;
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($msg)
            }
        }
        impl std::error::Error for $name {}
    )*};
}

errors! {
    /// Caught by the handler's, the controller's and the global filters.
    ErrA => "a";
    /// Caught by the controller's and the global filters.
    ErrB => "b";
    /// Caught by the global filter only.
    ErrC => "c";
    /// Caught by nothing.
    ErrD => "d";
}

/// `ErrB` wrapped in another error: `catch` finds it in the source chain.
#[derive(Debug)]
struct Wrapped(ErrB);

impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("wrapped")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

fn error_of(kind: &str) -> BoxError {
    match kind {
        "a" => Box::new(ErrA),
        "b" => Box::new(ErrB),
        "c" => Box::new(ErrC),
        "wrapped" => Box::new(Wrapped(ErrB)),
        _ => Box::new(ErrD),
    }
}

fn caught_by(level: &'static str) -> impl Fn(&dyn std::error::Error) -> RpcException {
    move |e| RpcException::new(json!({"by": level, "error": e.to_string()}))
}

fn handler_filter() -> Filter {
    let by = caught_by("handler");
    catch(move |e: &ErrA| by(e))
}

fn controller_filter_a() -> Filter {
    let by = caught_by("controller");
    catch(move |e: &ErrA| by(e))
}

fn controller_filter_b() -> Filter {
    let by = caught_by("controller");
    catch(move |e: &ErrB| by(e))
}

fn global_filter() -> Filter {
    Filter::new(|e| {
        let by = caught_by("global");
        if e.is::<ErrA>() || e.is::<ErrB>() || e.is::<ErrC>() {
            Some(by(e))
        } else {
            None
        }
    })
}

/// A layer that lets everything through: the filters still see the handler's error.
fn pass_through() -> DynLayer {
    DynLayer::new(nestling::middleware::guard(|_: &nestling::Request| true))
}

#[derive(Default)]
struct Shop;

#[nestling::controller(filter = controller_filter_a, filter = controller_filter_b)]
impl Shop {
    #[message_pattern("fail", filter = handler_filter)]
    fn fail(&self, kind: String) -> Result<u32, BoxError> {
        Err(error_of(&kind))
    }

    #[message_pattern("fail_async", filter = handler_filter)]
    async fn fail_async(&self, kind: String) -> Result<u32, BoxError> {
        tokio::time::sleep(Duration::from_millis(2)).await;
        Err(error_of(&kind))
    }

    #[message_pattern("fail_layered", filter = handler_filter, layer = pass_through)]
    fn fail_layered(&self, kind: String) -> Result<u32, BoxError> {
        Err(error_of(&kind))
    }

    /// No filter of its own: the controller's come first.
    #[message_pattern("fail_plain")]
    fn fail_plain(&self, kind: String) -> Result<u32, BoxError> {
        Err(error_of(&kind))
    }

    /// Two items, then the error.
    #[message_pattern("fail_stream", filter = handler_filter)]
    fn fail_stream(&self, kind: String) -> BoxStream<'static, Result<u32, BoxError>> {
        stream::iter([Ok(1), Ok(2), Err(error_of(&kind))]).boxed()
    }

    #[message_pattern("rpc", filter = handler_filter)]
    fn rpc(&self) -> Result<u32, RpcException> {
        Err(RpcException::new("as thrown"))
    }

    #[message_pattern("panics", filter = handler_filter)]
    fn panics(&self) -> Result<u32, ErrA> {
        panic!("boom")
    }

    #[message_pattern("typed", filter = handler_filter)]
    fn typed(&self, n: u32) -> Result<u32, ErrA> {
        if n == 0 {
            Err(ErrA)
        } else {
            Ok(n)
        }
    }

    /// Filters on an event handler are accepted (nothing is answered).
    #[event_pattern("noted", filter = handler_filter)]
    fn noted(&self, _kind: String) -> Result<(), ErrA> {
        Err(ErrA)
    }
}

fn shop() -> Server {
    Server::builder()
        .discover(false)
        .controller(Shop)
        .filter(global_filter())
        .build()
        .unwrap()
}

/// A call's reply as JSON: `{"ok": v}` or `{"err": <raw err>}`.
async fn call(client: &Client, pattern: &str, data: Value) -> Value {
    match client.send::<_, _, Value>(pattern, &data).await {
        Ok(v) => json!({ "ok": v }),
        Err(ClientError::Remote { error, .. }) => json!({ "err": error.into_value() }),
        Err(e) => panic!("{pattern} {data}: {e}"),
    }
}

/// A streamed call: `{"items": [...], "err": e}` or `{"items": [...], "complete": true}`.
async fn collect(client: &Client, pattern: &str, data: Value) -> Value {
    let mut items = Vec::new();
    let mut stream = client
        .send_stream::<_, _, Value>(pattern, &data)
        .await
        .unwrap();
    while let Some(item) = stream.next().await {
        match item {
            Ok(v) => items.push(v),
            Err(ClientError::Remote { error, .. }) => {
                return json!({ "items": items, "err": error.into_value() })
            }
            Err(e) => panic!("{pattern}: {e}"),
        }
    }
    json!({ "items": items, "complete": true })
}

fn by(level: &str, error: &str) -> Value {
    json!({ "err": { "by": level, "error": error } })
}

fn internal() -> Value {
    json!({ "err": { "status": "error", "message": "Internal server error" } })
}

/// Every check, against one client of the shop (any transport).
async fn check_order(client: &Client) {
    for pattern in ["fail", "fail_async", "fail_layered"] {
        assert_eq!(
            call(client, pattern, json!("a")).await,
            by("handler", "a"),
            "{pattern} a"
        );
        assert_eq!(
            call(client, pattern, json!("b")).await,
            by("controller", "b"),
            "{pattern} b"
        );
        assert_eq!(
            call(client, pattern, json!("c")).await,
            by("global", "c"),
            "{pattern} c"
        );
        assert_eq!(
            call(client, pattern, json!("d")).await,
            internal(),
            "{pattern} d"
        );
        assert_eq!(
            call(client, pattern, json!("wrapped")).await,
            by("controller", "b"),
            "{pattern} wrapped"
        );
    }
    assert_eq!(
        call(client, "fail_plain", json!("a")).await,
        by("controller", "a")
    );
    assert_eq!(
        call(client, "fail_plain", json!("c")).await,
        by("global", "c")
    );
    assert_eq!(call(client, "fail_plain", json!("d")).await, internal());

    let ok_then = |err: Value| json!({ "items": [1, 2], "err": err["err"] });
    assert_eq!(
        collect(client, "fail_stream", json!("a")).await,
        ok_then(by("handler", "a"))
    );
    assert_eq!(
        collect(client, "fail_stream", json!("c")).await,
        ok_then(by("global", "c"))
    );
    assert_eq!(
        collect(client, "fail_stream", json!("d")).await,
        ok_then(internal())
    );

    // Not filtered: an RpcException goes as thrown, a panic stays internal, a payload that
    // does not decode gets its own message.
    assert_eq!(
        call(client, "rpc", Value::Null).await,
        json!({ "err": { "status": "error", "message": "as thrown" } })
    );
    assert_eq!(call(client, "panics", Value::Null).await, internal());
    assert_eq!(call(client, "typed", json!(0)).await, by("handler", "a"));
    assert_eq!(call(client, "typed", json!(5)).await, json!({ "ok": 5 }));
    let bad = call(client, "typed", json!("x")).await;
    assert!(
        bad["err"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid payload"),
        "{bad}"
    );
    client.emit("noted", &"a").await.unwrap();
}

#[tokio::test]
async fn filters_apply_in_nests_order_over_tcp() {
    init_tracing();
    let running = RunningServer::start(shop()).await;
    let client = Client::new(running.addr.to_string());
    check_order(&client).await;
    running.stop().await;
}

#[tokio::test]
async fn filters_apply_in_process() {
    init_tracing();
    check_order(&nestling::testing::client(&shop())).await;
}

#[tokio::test]
async fn filters_apply_over_nats() {
    init_tracing();
    let Some(bin) = support::nats::require_nats("filters_apply_over_nats") else {
        return;
    };
    let nats = support::nats::NatsServer::start(&bin).await;
    let listening = shop()
        .listen_nats(nestling::nats::NatsServe::new(nats.url()))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listening.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    check_order(&Client::new(nats.url())).await;
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn filters_apply_over_rabbitmq() {
    init_tracing();
    let Some(broker) = support::rmq::RmqBroker::shared("filters_apply_over_rabbitmq") else {
        return;
    };
    let queue = support::rmq::unique_queue("filters");
    let listening = shop()
        .listen_rmq(nestling::rmq::RmqServe::new(broker.url(), &queue))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listening.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    check_order(&Client::new(broker.client_url(&queue))).await;
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------
// Against real Nest: @Catch(NotFoundError) + @UseFilters on find_user*
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
enum LookupError {
    NotFound(u32),
    Down,
}

impl std::fmt::Display for LookupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LookupError::NotFound(id) => write!(f, "user {id} not found"),
            LookupError::Down => f.write_str("database down"),
        }
    }
}

impl std::error::Error for LookupError {}

#[derive(Serialize, Deserialize)]
struct User {
    id: u32,
    name: String,
}

/// Nest's `@Catch(NotFoundError)` filter, `throwError(() => ({ status: 404, message }))`:
/// only that kind of error; `Down` passes through to Nest's default.
fn not_found() -> Filter {
    Filter::new(|e| match e.downcast_ref::<LookupError>()? {
        LookupError::NotFound(_) => Some(RpcException::new(
            json!({"status": 404, "message": e.to_string()}),
        )),
        LookupError::Down => None,
    })
}

fn find(id: u32) -> Result<User, LookupError> {
    match id {
        0 => Err(LookupError::Down),
        1 => Ok(User {
            id,
            name: "ada".into(),
        }),
        2 => Ok(User {
            id,
            name: "grace".into(),
        }),
        _ => Err(LookupError::NotFound(id)),
    }
}

/// The Rust twin of user-service.mjs' `find_user`, `find_user_async` and `find_users`.
#[derive(Default)]
struct FilteredUsers;

#[nestling::controller]
impl FilteredUsers {
    #[message_pattern("find_user", filter = not_found)]
    fn find_user(&self, id: u32) -> Result<User, LookupError> {
        find(id)
    }

    #[message_pattern("find_user_async", filter = not_found)]
    async fn find_user_async(&self, id: u32) -> Result<User, LookupError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        find(id)
    }

    #[message_pattern("find_users", filter = not_found)]
    fn find_users(&self, ids: Vec<u32>) -> BoxStream<'static, Result<User, LookupError>> {
        // Like Nest's concat of deferred lookups: stops at the first error.
        let mut failed = false;
        stream::iter(ids)
            .map(find)
            .take_while(move |r| {
                let go = !failed;
                failed |= r.is_err();
                std::future::ready(go)
            })
            .boxed()
    }
}

#[tokio::test]
async fn nest_client_gets_identical_filtered_replies_from_nest_and_nestling() {
    init_tracing();
    let Some(node) =
        require_node("nest_client_gets_identical_filtered_replies_from_nest_and_nestling")
    else {
        return;
    };
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let ours = RunningServer::start(
        Server::builder()
            .discover(false)
            .controller(FilteredUsers)
            .build()
            .unwrap(),
    )
    .await;
    let ops = json!([
        {"op": "send", "pattern": "find_user", "data": 1},
        {"op": "send", "pattern": "find_user", "data": 7},
        {"op": "send", "pattern": "find_user", "data": 0},
        {"op": "send", "pattern": "find_user_async", "data": 2},
        {"op": "send", "pattern": "find_user_async", "data": 9},
        {"op": "send", "pattern": "find_user_async", "data": 0},
        {"op": "collect", "pattern": "find_users", "data": [1, 2]},
        {"op": "collect", "pattern": "find_users", "data": [1, 2, 7, 1]},
        {"op": "collect", "pattern": "find_users", "data": [1, 0]},
    ])
    .to_string();
    let from_nest = run_nest_client(&node, &nest.addr(), &ops).await;
    let from_nestling = run_nest_client(&node, &ours.addr.to_string(), &ops).await;
    let parsed: Value = serde_json::from_str(&from_nest).unwrap();
    // The oracle answers what the issue asks for (the filter ran in Nest at all).
    assert_eq!(
        parsed[1],
        json!({"err": {"status": 404, "message": "user 7 not found"}}),
        "{from_nest}"
    );
    assert_eq!(from_nestling, from_nest);

    // nestling's own client sees the same from both.
    let (nest_client, our_client) = (Client::new(nest.addr()), Client::new(ours.addr.to_string()));
    for id in [1, 7, 0] {
        assert_eq!(
            call(&our_client, "find_user", json!(id)).await,
            call(&nest_client, "find_user", json!(id)).await,
            "find_user {id}"
        );
    }
    assert_eq!(
        collect(&our_client, "find_users", json!([2, 8])).await,
        collect(&nest_client, "find_users", json!([2, 8])).await
    );
    ours.stop().await;
}
