//! Hybrid apps: Nest's `app.connectMicroservice(…)` (several times) +
//! `app.startAllMicroservices()` + `app.listen(3000)` — one process serving HTTP and the
//! microservice over several transports at once, with one set of controllers and one
//! graceful shutdown.
//!
//! A [`Server`] is cheap to clone, and every clone serves the same controller instances,
//! so the same state answers on TCP, NATS and RabbitMQ; an HTTP router (axum, …) holding an
//! `Arc` of the same state sees what the handlers write. [`Hybrid`] runs those parts
//! together: when its signal fires (or any part stops on its own), every part is asked to
//! shut down gracefully, in-flight work is drained everywhere, then the controllers'
//! [`Lifecycle::on_shutdown`](crate::Lifecycle::on_shutdown) hooks run, once.
//!
//! ```
//! use nestling::hybrid::Hybrid;
//! use nestling::Server;
//!
//! #[derive(Default)]
//! struct Math;
//! #[nestling::controller]
//! impl Math {
//!     #[message_pattern("sum")]
//!     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let server = Server::builder().build()?;
//! let tcp = server.clone().listen("127.0.0.1:0").await?;       // connectMicroservice(TCP)
//! let addr = tcp.local_addr().to_string();
//! // (a NATS or RabbitMQ part: server.clone().listen_nats(..).await?, the same way)
//! let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?; // app.listen(3000)
//! let app = Hybrid::new(&server)
//!     .part("tcp", |stop| tcp.serve_with_shutdown(stop))
//!     .part("http", |stop| async move {
//!         stop.await; // e.g. axum::serve(http, router).with_graceful_shutdown(stop).await
//!         drop(http);
//!         Ok::<_, std::io::Error>(())
//!     });
//! let stop = app.shutdown();
//! let running = tokio::spawn(app.run(std::future::pending::<()>())); // e.g. tokio::signal::ctrl_c()
//! let sum: i64 = nestling::Client::new(addr).send("sum", &[1, 2, 3]).await?;
//! assert_eq!(sum, 6);
//! stop.request();
//! running.await??;
//! # Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! # }).unwrap();
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::lifecycle::Lifecycles;
use crate::middleware::BoxError;
use crate::server::Server;
use crate::transport::Shutdown;

/// The signal a part of a [`Hybrid`] app gets: completes when the app shuts down. Pass it
/// to `serve_with_shutdown` (microservice transports) or `with_graceful_shutdown` (axum).
pub struct StopSignal(Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopSignal")
    }
}

impl Future for StopSignal {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

type PartFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// A part not started yet: given the stop signal, it serves.
type Part = Box<dyn FnOnce(StopSignal) -> PartFuture + Send>;

/// Several servers of one process run as one app: see the [module docs](self).
#[must_use = "a Hybrid does nothing until `run` is awaited"]
pub struct Hybrid {
    lifecycle: Arc<Lifecycles>,
    stop: Shutdown,
    parts: Vec<(String, Part)>,
}

impl std::fmt::Debug for Hybrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hybrid")
            .field(
                "parts",
                &self.parts.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A part of a [`Hybrid`] app failed (to start or while serving); the other parts were
/// shut down gracefully.
#[derive(Debug, thiserror::Error)]
#[error("the {part} part of the app failed: {source}")]
pub struct HybridError {
    /// The part's name, as given to [`Hybrid::part`].
    pub part: String,
    /// What it returned.
    #[source]
    pub source: BoxError,
}

impl Hybrid {
    /// An app around `server`'s controllers (the server its microservice parts serve).
    ///
    /// ```
    /// let server = nestling::Server::builder().discover(false).build().unwrap();
    /// let app = nestling::hybrid::Hybrid::new(&server);
    /// ```
    pub fn new(server: &Server) -> Self {
        Hybrid {
            lifecycle: server.lifecycle.clone(),
            stop: Shutdown::new(),
            parts: Vec::new(),
        }
    }

    /// Adds a part: `serve` gets the app's [`StopSignal`] and returns the future that
    /// serves until it completes (a `Listening`'s `serve_with_shutdown`, an axum server's
    /// `with_graceful_shutdown`, …). `name` appears in errors.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let server = nestling::Server::builder().discover(false).build().unwrap();
    /// let tcp = server.clone().listen("127.0.0.1:0").await.unwrap();
    /// let app = nestling::hybrid::Hybrid::new(&server).part("tcp", |stop| tcp.serve_with_shutdown(stop));
    /// app.run(async {}).await.unwrap(); // the signal is already there: starts and stops
    /// # });
    /// ```
    pub fn part<F, Fut, E>(mut self, name: impl Into<String>, serve: F) -> Self
    where
        F: FnOnce(StopSignal) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let serve = move |stop: StopSignal| -> PartFuture {
            let serving = serve(stop);
            Box::pin(async move { serving.await.map_err(Into::into) })
        };
        self.parts.push((name.into(), Box::new(serve)));
        self
    }

    /// Stops the app when requested ([`Shutdown::request`]), as the signal of
    /// [`run`](Self::run) does.
    ///
    /// ```
    /// let server = nestling::Server::builder().discover(false).build().unwrap();
    /// let app = nestling::hybrid::Hybrid::new(&server);
    /// app.shutdown().request();
    /// ```
    pub fn shutdown(&self) -> Shutdown {
        self.stop.clone()
    }

    /// Runs every part until `signal` completes (e.g. `tokio::signal::ctrl_c()`), or until
    /// one part stops on its own; then asks every part to shut down gracefully, waits for
    /// all of them, and runs the controllers' `on_shutdown` hooks once. Returns the first
    /// part's error, if any.
    pub async fn run(self, signal: impl Future + Send) -> Result<(), HybridError> {
        let Hybrid {
            lifecycle,
            stop,
            parts,
        } = self;
        // Controllers start once, before any part serves (a `listen` usually did it).
        lifecycle.start().await.map_err(|e| HybridError {
            part: "start".into(),
            source: e.into(),
        })?;
        // Held for the whole app: the hooks stop after the last part, HTTP included.
        lifecycle.enter();
        let mut running: FuturesUnordered<_> = parts
            .into_iter()
            .map(|(name, serve)| {
                let serving = serve(StopSignal(Box::pin(stop.requested_owned())));
                async move { (name, serving.await) }
            })
            .collect();
        let mut first_error = None;
        tokio::pin!(signal);
        let mut signalled = false;
        loop {
            tokio::select! {
                _ = &mut signal, if !signalled => {
                    signalled = true;
                    tracing::info!("shutting down every part of the app");
                    stop.request();
                }
                done = running.next() => {
                    let Some((part, result)) = done else { break };
                    if !stop.is_requested() {
                        tracing::warn!(part, "a part of the app stopped: shutting down the others");
                        stop.request();
                    }
                    if let Err(source) = result {
                        tracing::error!(part, "failed: {source}");
                        first_error.get_or_insert(HybridError { part, source });
                    }
                }
            }
        }
        lifecycle.leave().await;
        first_error.map_or(Ok(()), Err)
    }
}
