//! Guards, interceptors and plain tower middleware around handlers, at the global,
//! controller and handler levels.

#![allow(dead_code)] // support/ serves several test files

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestling::middleware::{guard, DynLayer, HandlerService};
use nestling::{Request, Server};
use serde_json::{json, Value};
use support::{require_node, run_nest_client, spawn_node, RunningServer};
use tower::{Layer, Service};

/// Every layer in these tests writes into one journal, to check the order they run in.
static JOURNAL: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn journal() -> Vec<String> {
    std::mem::take(&mut *JOURNAL.lock().unwrap())
}

/// An interceptor (Nest's `NestInterceptor`): notes entry and exit around the handler.
#[derive(Clone)]
struct Note<S> {
    name: &'static str,
    inner: S,
}

impl<S> Service<Request> for Note<S>
where
    S: Service<Request> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let name = self.name;
        JOURNAL
            .lock()
            .unwrap()
            .push(format!("{name}>{}", req.context().pattern()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            JOURNAL.lock().unwrap().push(format!("<{name}"));
            out
        })
    }
}

fn note(name: &'static str) -> DynLayer {
    DynLayer::new(tower::layer::layer_fn(move |inner: HandlerService| Note {
        name,
        inner,
    }))
}

fn controller_note() -> DynLayer {
    note("controller")
}

fn handler_note() -> DynLayer {
    note("handler")
}

/// Nest's `@UseGuards(TokenGuard)` on one handler: reads the payload.
fn token_guard() -> DynLayer {
    DynLayer::new(guard(|req: &Request| {
        req.payload::<Value>()
            .is_ok_and(|data| data["token"] == "s3cret")
    }))
}

/// tower's own timeout middleware, used as is.
fn quick_timeout() -> tower::timeout::TimeoutLayer {
    tower::timeout::TimeoutLayer::new(Duration::from_millis(50))
}

#[derive(Default)]
struct Guarded;

#[nestling::controller(layer = controller_note)]
impl Guarded {
    #[message_pattern("secret", layer = handler_note, layer = token_guard)]
    fn secret(&self, data: Value) -> String {
        JOURNAL.lock().unwrap().push("body".into());
        format!("welcome {}", data["user"].as_str().unwrap_or("?"))
    }

    #[message_pattern("open")]
    fn open(&self) -> &'static str {
        "open"
    }

    #[message_pattern("sleepy", layer = quick_timeout)]
    async fn sleepy(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

fn guarded() -> Server {
    Server::builder()
        .discover(false)
        .controller(Guarded)
        .layer(note("global"))
        .layer(nestling::middleware::timing())
        .layer(guard(|req: &Request| req.context().pattern() != "blocked"))
        .build()
        .unwrap()
}

// The journal is global: run the checks of all tests in one test to keep them apart.
#[tokio::test(flavor = "multi_thread")]
async fn layers_run_outermost_first_and_guards_reject_like_nest() {
    // The layers are what is tested, not a socket: called in-process.
    let client = nestling::testing::client(&guarded());

    journal();
    let ok: String = client
        .send("secret", &json!({"user": "ann", "token": "s3cret"}))
        .await
        .unwrap();
    assert_eq!(ok, "welcome ann");
    assert_eq!(
        journal(),
        [
            "global>secret",
            "controller>secret",
            "handler>secret",
            "body",
            "<handler",
            "<controller",
            "<global"
        ]
    );

    // The handler's guard rejects: Nest's exact Forbidden reply; the body never runs.
    let e = client
        .send::<_, _, String>("secret", &json!({"user": "bob", "token": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(
        e.remote().unwrap().value(),
        &json!({"status": "error", "message": "Forbidden resource"})
    );
    assert!(!journal().contains(&"body".to_string()));

    // Controller layers apply to every handler of the controller, handler layers not.
    let open: String = client.send("open", &()).await.unwrap();
    assert_eq!(open, "open");
    assert_eq!(
        journal(),
        ["global>open", "controller>open", "<controller", "<global"]
    );

    // tower's timeout: a slow handler fails with Nest's internal error.
    let fast: u64 = client.send("sleepy", &1u64).await.unwrap();
    assert_eq!(fast, 1);
    let e = client
        .send::<_, _, u64>("sleepy", &500u64)
        .await
        .unwrap_err();
    assert_eq!(
        e.remote().unwrap().value(),
        &json!({"status": "error", "message": "Internal server error"})
    );
    journal();
}

#[tokio::test(flavor = "multi_thread")]
async fn rejection_matches_a_real_nest_guard() {
    let Some(node) = require_node("rejection_matches_a_real_nest_guard") else {
        return;
    };
    let nest = spawn_node(&node, "user-service.mjs", &[]).await;
    let rust = RunningServer::start(guarded()).await;
    let ops = json!([
        {"op": "send", "pattern": "secret", "data": {"user": "ann", "token": "s3cret"}},
        {"op": "send", "pattern": "secret", "data": {"user": "bob", "token": "nope"}},
        {"op": "send", "pattern": "secret", "data": 5}
    ])
    .to_string();
    let from_nest = run_nest_client(&node, &nest.addr(), &ops).await;
    let from_rust = run_nest_client(&node, &rust.addr.to_string(), &ops).await;
    assert_eq!(
        from_nest,
        r#"[{"ok":"welcome ann"},{"err":{"status":"error","message":"Forbidden resource"}},{"err":{"status":"error","message":"Forbidden resource"}}]"#
    );
    assert_eq!(from_rust, from_nest);
}

#[tokio::test(flavor = "multi_thread")]
async fn tower_concurrency_limit_applies_globally() {
    // Existing tower middleware needs no adapter: a global limit of one request at once.
    let running = Arc::new(Mutex::new((0usize, 0usize))); // (now, max)
    #[derive(Clone, Default)]
    struct Slow;
    #[nestling::controller(client = false)]
    impl Slow {
        #[message_pattern("nap")]
        async fn nap(&self) -> bool {
            tokio::time::sleep(Duration::from_millis(20)).await;
            true
        }
    }
    let watch = {
        let running = running.clone();
        tower::layer::layer_fn(move |inner: HandlerService| {
            let running = running.clone();
            tower::service_fn(move |req: Request| {
                let mut inner = inner.clone();
                let running = running.clone();
                async move {
                    {
                        let mut r = running.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    let out = tower::ServiceExt::ready(&mut inner).await?.call(req).await;
                    running.lock().unwrap().0 -= 1;
                    out
                }
            })
        })
    };
    let server = Server::builder()
        .discover(false)
        .controller(Slow)
        .layer(tower::limit::ConcurrencyLimitLayer::new(1))
        .layer(watch)
        .build()
        .unwrap();
    let client = nestling::testing::client(&server);
    let calls = (0..8).map(|_| client.send::<_, _, bool>("nap", &()));
    for r in futures_util::future::join_all(calls).await {
        assert!(r.unwrap());
    }
    assert_eq!(running.lock().unwrap().1, 1, "never more than one at once");
}

#[test]
fn layer_type_is_usable_in_signatures() {
    // A named layer type compiles against HandlerService.
    fn _assert<L: Layer<HandlerService>>(_: L) {}
    _assert(guard(|_: &Request| true));
}
