//! A hybrid app: one process serving HTTP (axum) and the same controller over TCP and a
//! broker at once, with shared state and one graceful shutdown. The NestJS original:
//!
//! ```ts
//! const app = await NestFactory.create(AppModule);
//! app.connectMicroservice({ transport: Transport.TCP, options: { port: 8888 } });
//! app.connectMicroservice({ transport: Transport.NATS, options: { servers: [NATS_URL] } });
//! await app.startAllMicroservices();
//! app.enableShutdownHooks();
//! await app.listen(3000);
//! ```
//!
//! Run: `cargo run --example hybrid` (TCP on HOST:PORT, default 127.0.0.1:8888; HTTP on
//! HTTP_PORT, default 3000). `NATS_URL=nats://127.0.0.1:4222` adds NATS, `RMQ_URL=amqp://…`
//! adds RabbitMQ (queue `RMQ_QUEUE`, default `notes`). Then:
//!
//! ```sh
//! nestling call 127.0.0.1:8888 note.add '"from TCP"'        # RPC writes…
//! nestling call nats://127.0.0.1:4222 note.add '"from NATS"'
//! curl http://127.0.0.1:3000/notes                          # …HTTP reads: ["from TCP","from NATS"]
//! curl http://127.0.0.1:3000/notes/add/from-http            # and the other way round
//! ```
//!
//! Ctrl-C (or SIGTERM) stops every part: HTTP, TCP and the brokers stop taking work, what is
//! in flight is answered, then `Notes::on_shutdown` runs once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use nestling::hybrid::Hybrid;
use nestling::nats::NatsServe;
use nestling::rmq::RmqServe;
use nestling::{BoxError, Lifecycle, Server};

/// What the HTTP routes and the RPC handlers share.
#[derive(Default)]
struct NoteStore {
    notes: Mutex<Vec<String>>,
}

impl NoteStore {
    fn add(&self, text: String) -> usize {
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        notes.push(text);
        notes.len()
    }

    fn all(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The microservice's controller: its state is an `Arc` the HTTP router holds too.
struct Notes {
    store: Arc<NoteStore>,
}

#[nestling::controller]
impl Notes {
    /// `@MessagePattern('note.add')`: the number of notes after adding this one.
    #[message_pattern("note.add")]
    fn add(&self, text: String) -> usize {
        self.store.add(text)
    }

    #[message_pattern("notes")]
    fn notes(&self) -> Vec<String> {
        self.store.all()
    }

    /// Answers after `ms` milliseconds (at most a minute): work in flight at shutdown.
    #[message_pattern("slow")]
    async fn slow(&self, ms: u64) -> u64 {
        println!("SLOW rpc {ms}");
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        println!("SLOW rpc done");
        ms
    }
}

/// `onModuleInit` / `onApplicationShutdown`: once for the whole app, whatever serves it.
impl Lifecycle for Notes {
    async fn on_start(&self) -> Result<(), BoxError> {
        println!("STARTED");
        Ok(())
    }

    async fn on_shutdown(&self) {
        println!("SHUTDOWN notes={}", self.store.all().len());
    }
}

#[derive(serde::Deserialize)]
struct Slow {
    ms: u64,
}

/// The HTTP side: reads and writes the same store.
fn http_routes(store: Arc<NoteStore>) -> Router {
    Router::new()
        .route(
            "/notes",
            get(|State(store): State<Arc<NoteStore>>| async move { Json(store.all()) }),
        )
        .route(
            "/notes/add/{text}",
            get(
                |State(store): State<Arc<NoteStore>>, Path(text): Path<String>| async move {
                    Json(store.add(text))
                },
            ),
        )
        .route(
            "/slow",
            get(|Query(Slow { ms }): Query<Slow>| async move {
                println!("SLOW http {ms}");
                tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
                println!("SLOW http done");
                Json(ms)
            }),
        )
        .with_state(store)
}

/// Ctrl-C or, on Unix, SIGTERM (what a container runtime sends).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8888".into());
    let http_port = std::env::var("HTTP_PORT").unwrap_or_else(|_| "3000".into());

    let store = Arc::new(NoteStore::default());
    let server = Server::builder()
        .discover(false)
        .controller(Notes {
            store: store.clone(),
        })
        .build()?;

    // app.connectMicroservice(…) per transport: clones of one server, one controller set.
    // The first `listen` runs `on_start`; nothing is served before it succeeded.
    let tcp = server.clone().listen(format!("{host}:{port}")).await?;
    let tcp_port = tcp.local_addr().port();
    let mut app = Hybrid::new(&server).part("tcp", |stop| tcp.serve_with_shutdown(stop));
    if let Ok(url) = std::env::var("NATS_URL") {
        let nats = server.clone().listen_nats(NatsServe::new(url)).await?;
        app = app.part("nats", |stop| nats.serve_with_shutdown(stop));
        println!("NATS subscribed");
    }
    if let Ok(url) = std::env::var("RMQ_URL") {
        let queue = std::env::var("RMQ_QUEUE").unwrap_or_else(|_| "notes".into());
        let rmq = server.clone().listen_rmq(RmqServe::new(url, queue)).await?;
        app = app.part("rmq", |stop| rmq.serve_with_shutdown(stop));
        println!("RMQ consuming");
    }

    // app.listen(3000): axum, with the same graceful-shutdown signal.
    let http = tokio::net::TcpListener::bind(format!("{host}:{http_port}")).await?;
    println!("HTTP {}", http.local_addr()?.port());
    let routes = http_routes(store);
    let app = app.part("http", move |stop| async move {
        axum::serve(http, routes).with_graceful_shutdown(stop).await
    });

    // Tests and scripts wait for this line (the TCP port, so PORT=0 works).
    println!("READY {tcp_port}");
    app.run(shutdown_signal()).await?;
    println!("STOPPED");
    Ok(())
}
