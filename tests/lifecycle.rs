//! Lifecycle hooks (Nest's `onModuleInit` / `onApplicationBootstrap` and
//! `beforeApplicationShutdown` / `onApplicationShutdown`), end to end:
//!
//! - `on_start` runs before anything is served: what it writes is what the first request
//!   sees, on TCP, on a transport of one's own (`serve_on`) and in-process;
//! - a failing `on_start` makes `listen` (or `serve_on`, or the in-process client) fail with
//!   the controller's name, the port stays closed, and the controllers started before it
//!   are shut down;
//! - `on_shutdown` runs after a graceful shutdown answered the slow request in flight, and
//!   before `serve_with_shutdown` returns (real socket);
//! - one server served on TCP and NATS at once runs each hook once.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nestling::transport::{Dispatcher, Shutdown, Transport};
use nestling::{BoxError, Client, ClientError, Lifecycle, Server, ServerError};
use support::init_tracing;

/// What happened, in order.
#[derive(Default, Clone)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn note(&self, what: impl Into<String>) {
        self.0.lock().unwrap().push(what.into());
    }

    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Warms a "cache" in `on_start`, slowly; counts its hooks.
struct Cache {
    warm: AtomicBool,
    journal: Journal,
    starts: AtomicUsize,
    stops: AtomicUsize,
}

impl Cache {
    fn new(journal: &Journal) -> Self {
        Cache {
            warm: AtomicBool::new(false),
            journal: journal.clone(),
            starts: AtomicUsize::new(0),
            stops: AtomicUsize::new(0),
        }
    }
}

impl Cache {
    fn warm(&self) -> bool {
        self.warm.load(Ordering::SeqCst)
    }

    async fn slow(&self, ms: u64) -> u64 {
        self.journal.note("slow started");
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.journal.note("slow done");
        ms
    }
}

impl Lifecycle for Cache {
    async fn on_start(&self) -> Result<(), BoxError> {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.warm.store(true, Ordering::SeqCst);
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.journal.note("cache on_start");
        Ok(())
    }

    async fn on_shutdown(&self) {
        self.stops.fetch_add(1, Ordering::SeqCst);
        self.journal.note("cache on_shutdown");
    }
}

/// Fails to start.
struct Broken {
    journal: Journal,
}

#[nestling::controller(client = false)]
impl Broken {
    #[message_pattern("broken")]
    fn broken(&self) -> bool {
        true
    }
}

impl Lifecycle for Broken {
    async fn on_start(&self) -> Result<(), BoxError> {
        self.journal.note("broken on_start");
        Err("the database at db:5432 refused the connection".into())
    }

    async fn on_shutdown(&self) {
        self.journal.note("broken on_shutdown");
    }
}

/// No hooks: served as before.
#[derive(Default)]
struct Plain;

#[nestling::controller(client = false)]
impl Plain {
    #[message_pattern("plain")]
    fn plain(&self) -> u8 {
        1
    }
}

fn cache_server(cache: Cache) -> (Server, Arc<Cache>) {
    let cache = Arc::new(cache);
    let server = Server::builder()
        .discover(false)
        .controller(ArcCache(cache.clone()))
        .controller(Plain)
        .build()
        .unwrap();
    (server, cache)
}

/// The cache shared with the test (a controller is moved into its server; the test keeps
/// a handle through the `Arc`).
struct ArcCache(Arc<Cache>);

#[nestling::controller(client = false)]
impl ArcCache {
    #[message_pattern("cache_warm")]
    fn cache_warm(&self) -> bool {
        self.0.warm()
    }

    #[message_pattern("cache_slow")]
    async fn cache_slow(&self, ms: u64) -> u64 {
        self.0.slow(ms).await
    }
}

impl Lifecycle for ArcCache {
    async fn on_start(&self) -> Result<(), BoxError> {
        self.0.on_start().await
    }

    async fn on_shutdown(&self) {
        self.0.on_shutdown().await
    }
}

#[tokio::test]
async fn on_start_runs_before_anything_is_served_over_tcp() {
    init_tracing();
    let journal = Journal::default();
    let (server, cache) = cache_server(Cache::new(&journal));
    let listening = server.listen("127.0.0.1:0").await.unwrap();
    // The port opened only after on_start.
    assert_eq!(journal.entries(), ["cache on_start"]);
    let addr = listening.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listening.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let client = Client::new(addr);
    assert!(client.send::<_, _, bool>("cache_warm", &()).await.unwrap());
    assert_eq!(client.send::<_, _, u8>("plain", &()).await.unwrap(), 1);
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    assert_eq!(cache.starts.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stops.load(Ordering::SeqCst), 1);
}

/// A transport of one's own that records whether the hooks had run when it was started.
struct Recording {
    cache: Arc<Cache>,
    warm_at_serve: Arc<Mutex<Option<bool>>>,
}

impl Transport for Recording {
    async fn serve(self, _: Dispatcher, shutdown: Shutdown) -> Result<(), ServerError> {
        *self.warm_at_serve.lock().unwrap() = Some(self.cache.warm());
        shutdown.requested().await;
        Ok(())
    }
}

#[tokio::test]
async fn on_start_and_on_shutdown_run_around_a_custom_transport() {
    init_tracing();
    let journal = Journal::default();
    let (server, cache) = cache_server(Cache::new(&journal));
    let warm_at_serve = Arc::new(Mutex::new(None));
    let transport = Recording {
        cache: cache.clone(),
        warm_at_serve: warm_at_serve.clone(),
    };
    server
        .serve_on(transport, tokio::time::sleep(Duration::from_millis(50)))
        .await
        .unwrap();
    assert_eq!(*warm_at_serve.lock().unwrap(), Some(true));
    assert_eq!(journal.entries(), ["cache on_start", "cache on_shutdown"]);
}

#[tokio::test]
async fn on_start_runs_before_the_first_in_process_call() {
    init_tracing();
    let journal = Journal::default();
    let (server, cache) = cache_server(Cache::new(&journal));
    let client = nestling::testing::client(&server);
    assert!(journal.entries().is_empty(), "nothing starts before a call");
    assert!(client.send::<_, _, bool>("cache_warm", &()).await.unwrap());
    assert!(client.send::<_, _, bool>("cache_warm", &()).await.unwrap());
    nestling::testing::close(&server).await;
    nestling::testing::close(&server).await;
    assert_eq!(cache.starts.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stops.load(Ordering::SeqCst), 1);
}

fn broken_server(journal: &Journal) -> Server {
    Server::builder()
        .discover(false)
        .controller(ArcCache(Arc::new(Cache::new(journal))))
        .controller(Broken {
            journal: journal.clone(),
        })
        .build()
        .unwrap()
}

#[tokio::test]
async fn failing_on_start_stops_start_up_naming_the_controller() {
    init_tracing();
    let journal = Journal::default();
    // A port that was free a moment ago: listen must not open it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = broken_server(&journal).listen(addr).await.unwrap_err();
    let ServerError::Start { controller, .. } = &err else {
        panic!("expected ServerError::Start, got {err:?}");
    };
    assert_eq!(*controller, "Broken");
    let message = err.to_string();
    assert!(message.contains("Broken"), "{message}");
    assert!(message.contains("refused the connection"), "{message}");
    // The controller started before it was shut down again; Broken never started.
    assert_eq!(
        journal.entries(),
        ["cache on_start", "broken on_start", "cache on_shutdown"]
    );
    let connect = tokio::net::TcpStream::connect(addr).await;
    assert!(connect.is_err(), "nothing may listen on {addr}");

    // A transport of one's own is never started.
    let journal = Journal::default();
    let served = Arc::new(AtomicBool::new(false));
    struct Never(Arc<AtomicBool>);
    impl Transport for Never {
        async fn serve(self, _: Dispatcher, _: Shutdown) -> Result<(), ServerError> {
            self.0.store(true, Ordering::SeqCst);
            Ok(())
        }
    }
    let err = broken_server(&journal)
        .serve_on(Never(served.clone()), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::Start {
                controller: "Broken",
                ..
            }
        ),
        "{err}"
    );
    assert!(!served.load(Ordering::SeqCst));

    // Nor is anything answered in-process.
    let journal = Journal::default();
    let client = nestling::testing::client(&broken_server(&journal));
    let err = client.send::<_, _, bool>("broken", &()).await.unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("Broken"), "{err}");
}

#[tokio::test]
async fn on_shutdown_runs_after_the_slow_request_in_flight_is_answered() {
    init_tracing();
    let journal = Journal::default();
    let (server, _cache) = cache_server(Cache::new(&journal));
    let listening = server.listen("127.0.0.1:0").await.unwrap();
    let client = Client::new(listening.local_addr().to_string());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(listening.serve_with_shutdown(async move {
        let _ = stopped.await;
    }));
    let slow = tokio::spawn(async move { client.send::<_, _, u64>("cache_slow", &400).await });
    let started = support::eventually(support::WAIT_TIMEOUT, || {
        journal
            .entries()
            .iter()
            .any(|e| e == "slow started")
            .then_some(())
    })
    .await;
    assert!(started.is_some(), "the slow request never started");
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    // serve_with_shutdown returned: the request was answered, then on_shutdown ran.
    assert_eq!(
        journal.entries(),
        [
            "cache on_start",
            "slow started",
            "slow done",
            "cache on_shutdown"
        ]
    );
    assert_eq!(slow.await.unwrap().unwrap(), 400);
}

#[tokio::test]
async fn one_server_on_tcp_and_nats_runs_each_hook_once() {
    init_tracing();
    let Some(bin) = support::nats::require_nats("one_server_on_tcp_and_nats_runs_each_hook_once")
    else {
        return;
    };
    let nats = support::nats::NatsServer::start(&bin).await;
    let journal = Journal::default();
    let (server, cache) = cache_server(Cache::new(&journal));
    let tcp = server.clone().listen("127.0.0.1:0").await.unwrap();
    let on_nats = server
        .clone()
        .listen_nats(nestling::nats::NatsServe::new(nats.url()))
        .await
        .unwrap();
    let tcp_client = Client::new(tcp.local_addr().to_string());
    let stop = Shutdown::new();
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move {
            let (a, b) = tokio::join!(
                tcp.serve_with_shutdown(stop.requested()),
                on_nats.serve_with_shutdown(stop.requested())
            );
            a.and(b)
        }
    });
    assert!(tcp_client
        .send::<_, _, bool>("cache_warm", &())
        .await
        .unwrap());
    let nats_client = Client::new(nats.url());
    assert!(nats_client
        .send::<_, _, bool>("cache_warm", &())
        .await
        .unwrap());
    stop.request();
    serving.await.unwrap().unwrap();
    assert_eq!(cache.starts.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stops.load(Ordering::SeqCst), 1);
}
