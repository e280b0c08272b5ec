//! Lifecycle hooks: Nest's `onModuleInit` / `onApplicationBootstrap` and
//! `beforeApplicationShutdown` / `onApplicationShutdown`, for controllers.
//!
//! A controller that implements [`Lifecycle`] has its [`on_start`](Lifecycle::on_start)
//! run once before its server takes any packet (open a pool, warm a cache), and its
//! [`on_shutdown`](Lifecycle::on_shutdown) once after a graceful shutdown has drained the
//! requests in flight, before `serve` returns. Nothing else is needed: as Nest finds the
//! hook methods on a class, `#[nestling::controller]` finds the implementation.
//!
//! An `on_start` that fails stops start-up: `listen` (or `serve_on`, or the first call of
//! an in-process [`testing`](crate::testing) client) returns
//! [`ServerError::Start`] naming the controller, nothing is served, and the controllers
//! already started get their `on_shutdown`.
//!
//! A server serving several transports at once (a hybrid app, see
//! [`hybrid`](crate::hybrid)) runs each hook once: `on_start` at the first `listen`,
//! `on_shutdown` once the last transport has drained.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use nestling::{BoxError, Lifecycle, Server};
//!
//! struct Users { warm: AtomicBool }
//!
//! #[nestling::controller]
//! impl Users {
//!     #[message_pattern("warm")]
//!     fn warm(&self) -> bool { self.warm.load(Ordering::SeqCst) }
//! }
//!
//! impl Lifecycle for Users {
//!     async fn on_start(&self) -> Result<(), BoxError> {
//!         self.warm.store(true, Ordering::SeqCst); // e.g. fill a cache
//!         Ok(())
//!     }
//!     async fn on_shutdown(&self) {
//!         // e.g. close a pool: every request has been answered by now
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let server = Server::builder().controller(Users { warm: AtomicBool::new(false) }).build().unwrap();
//! let listening = server.listen("127.0.0.1:0").await.unwrap(); // on_start ran here
//! let client = nestling::Client::new(listening.local_addr().to_string());
//! let stop = tokio::spawn(listening.serve_with_shutdown(async { tokio::time::sleep(std::time::Duration::from_millis(200)).await }));
//! assert!(client.send::<_, _, bool>("warm", &()).await.unwrap());
//! stop.await.unwrap().unwrap(); // on_shutdown ran before this returned
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::error::ServerError;
use crate::handler::Instance;
use crate::middleware::BoxError;
use crate::registry::ControllerMeta;

/// A controller's start and shutdown hooks (Nest's `OnModuleInit`,
/// `OnApplicationBootstrap`, `BeforeApplicationShutdown`, `OnApplicationShutdown`). Both
/// have no-op defaults; write them as `async fn`.
///
/// [`on_start`](Lifecycle::on_start) runs once before the controller's server takes any
/// packet (open a pool, warm a cache), [`on_shutdown`](Lifecycle::on_shutdown) once after a
/// graceful shutdown has drained the requests in flight, before `serve` returns. Nothing else
/// is needed: as Nest finds the hook methods on a class, `#[nestling::controller]` finds the
/// implementation. An `on_start` that fails stops start-up: `listen` (or `serve_on`, or the
/// first call of an in-process [`testing`](crate::testing) client) returns
/// [`ServerError::Start`] naming the controller, nothing is served, and the controllers
/// already started get their `on_shutdown`. A server serving several transports at once (a
/// [`hybrid`](crate::hybrid) app) runs each hook once.
///
/// ```
/// use nestling::{BoxError, Lifecycle};
///
/// #[derive(Default)]
/// struct Orders;
///
/// #[nestling::controller]
/// impl Orders {
///     #[message_pattern("count")]
///     fn count(&self) -> u32 { 0 }
/// }
///
/// impl Lifecycle for Orders {
///     async fn on_start(&self) -> Result<(), BoxError> {
///         Err("the orders database is unreachable".into()) // stops start-up, naming Orders
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let err = nestling::Server::builder().build().unwrap().listen("127.0.0.1:0").await.unwrap_err();
/// assert!(err.to_string().contains("Orders"), "{err}");
/// # });
/// ```
pub trait Lifecycle: Send + Sync + 'static {
    /// Runs once before the server takes any packet (`onModuleInit` /
    /// `onApplicationBootstrap`). An error stops start-up with [`ServerError::Start`].
    fn on_start(&self) -> impl Future<Output = Result<(), BoxError>> + Send {
        async { Ok(()) }
    }

    /// Runs once after a graceful shutdown drained the requests in flight, before `serve`
    /// returns (`beforeApplicationShutdown` / `onApplicationShutdown`).
    fn on_shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// A hook's future, type-erased.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A controller's [`Lifecycle`] methods, type-erased for its [`ControllerMeta`]
/// (`#[nestling::controller]` fills them in).
#[derive(Debug, Clone, Copy)]
pub struct LifecycleHooks {
    /// Runs `on_start` on an instance of the controller.
    pub start: for<'a> fn(&'a Instance) -> HookFuture<'a, Result<(), BoxError>>,
    /// Runs `on_shutdown` on an instance of the controller.
    pub shutdown: for<'a> fn(&'a Instance) -> HookFuture<'a, ()>,
}

impl LifecycleHooks {
    /// The hooks of `T`.
    ///
    /// ```
    /// # #[derive(Default)] struct Quiet;
    /// impl nestling::Lifecycle for Quiet {}
    /// let hooks = nestling::runtime::LifecycleHooks::of::<Quiet>();
    /// let instance: nestling::runtime::Instance = std::sync::Arc::new(Quiet);
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// assert!((hooks.start)(&instance).await.is_ok());
    /// # });
    /// ```
    pub fn of<T: Lifecycle>() -> Self {
        LifecycleHooks {
            start: |instance| {
                Box::pin(async move {
                    match instance.downcast_ref::<T>() {
                        Some(this) => this.on_start().await,
                        None => Ok(()),
                    }
                })
            },
            shutdown: |instance| {
                Box::pin(async move {
                    if let Some(this) = instance.downcast_ref::<T>() {
                        this.on_shutdown().await;
                    }
                })
            },
        }
    }
}

/// The controller whose `on_start` failed, and its error.
type StartFailure = (&'static str, Arc<dyn std::error::Error + Send + Sync>);

/// The lifecycle of one server's controllers: started once, stopped once, shared by every
/// transport serving the server (and by clones of it).
pub(crate) struct Lifecycles {
    /// Controllers with hooks, in the order they were added.
    hooks: Vec<(&'static str, LifecycleHooks, Instance)>,
    /// Set once start-up is over: `Ok`, or the controller whose `on_start` failed and why.
    started: tokio::sync::OnceCell<Result<(), StartFailure>>,
    /// Transports (and hybrid apps) serving right now: the last to leave stops the hooks.
    serving: AtomicUsize,
    stopped: AtomicBool,
}

impl Lifecycles {
    /// The hooks of `controllers` (those implementing [`Lifecycle`]).
    pub(crate) fn new<'a>(
        controllers: impl Iterator<Item = (&'static ControllerMeta, &'a Instance)>,
    ) -> Self {
        Lifecycles {
            hooks: controllers
                .filter_map(|(meta, instance)| {
                    (meta.lifecycle)().map(|h| (meta.name, h, instance.clone()))
                })
                .collect(),
            started: tokio::sync::OnceCell::new(),
            serving: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// Runs every `on_start`, once per server; later calls return the first outcome. On a
    /// failure, the controllers started before it get their `on_shutdown`.
    pub(crate) async fn start(&self) -> Result<(), ServerError> {
        let outcome = self
            .started
            .get_or_init(|| async {
                for (i, (name, hooks, instance)) in self.hooks.iter().enumerate() {
                    tracing::debug!(controller = name, "running on_start");
                    if let Err(e) = (hooks.start)(instance).await {
                        tracing::error!(controller = name, "on_start failed: {e}; not serving");
                        for (name, hooks, instance) in self.hooks[..i].iter().rev() {
                            tracing::debug!(controller = name, "running on_shutdown");
                            (hooks.shutdown)(instance).await;
                        }
                        self.stopped.store(true, Ordering::SeqCst);
                        return Err((*name, Arc::from(e)));
                    }
                }
                Ok(())
            })
            .await;
        outcome
            .clone()
            .map_err(|(controller, source)| ServerError::Start { controller, source })
    }

    /// A transport starts serving.
    pub(crate) fn enter(&self) {
        self.serving.fetch_add(1, Ordering::SeqCst);
    }

    /// A transport stopped serving: when it was the last, every `on_shutdown` runs (in
    /// the reverse order of `on_start`), once per server.
    pub(crate) async fn leave(&self) {
        if self.serving.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.stop().await;
        }
    }

    /// Runs every `on_shutdown` if the controllers started and nothing serves them.
    pub(crate) async fn stop(&self) {
        if self.serving.load(Ordering::SeqCst) != 0
            || !matches!(self.started.get(), Some(Ok(())))
            || self.stopped.swap(true, Ordering::SeqCst)
        {
            return;
        }
        for (name, hooks, instance) in self.hooks.iter().rev() {
            tracing::debug!(controller = name, "running on_shutdown");
            (hooks.shutdown)(instance).await;
        }
    }
}
