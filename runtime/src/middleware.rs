//! Guards, interceptors and any other middleware, as `tower` layers around handlers.
//!
//! Every handler can be seen as a [`tower::Service`] from [`Request`] to [`Reply`]. Layers
//! wrap it, so anything written for tower (timeouts, concurrency limits, rate limits, …)
//! applies as is. Layers attach at three levels, applied outermost first, as Nest applies
//! global, controller and method guards:
//!
//! 1. globally: [`ServerBuilder::layer`](crate::ServerBuilder::layer);
//! 2. per controller: `#[nestling::controller(layer = make_layer)]`;
//! 3. per handler: `#[message_pattern("sum", layer = make_layer)]`;
//!
//! where `make_layer` is a function returning the layer. A handler with no layer at any
//! level is called directly, at no cost.
//!
//! Errors leaving the stack become the wire `err`: a [`HandlerFailure`] (for instance a
//! guard's rejection, or an [`RpcException`](crate::RpcException) converted with
//! [`HandlerFailure::from`]) is sent as such; any other error (a tower timeout, …) is
//! Nest's "Internal server error", logged.
//!
//! ```
//! use nestling::middleware::{guard, DynLayer};
//! use nestling::Request;
//!
//! /// Nest's `@UseGuards(AuthGuard)`: only requests whose metadata carries the token pass.
//! fn auth() -> DynLayer {
//!     DynLayer::new(guard(|req: &Request| {
//!         req.context().metadata::<serde_json::Value>().ok().flatten()
//!             .is_some_and(|m| m["token"] == "s3cret")
//!     }))
//! }
//!
//! #[derive(Default)]
//! struct Admin;
//!
//! #[nestling::controller(layer = auth)]
//! impl Admin {
//!     #[message_pattern("wipe")]
//!     fn wipe(&self) -> bool { true }
//! }
//! # fn main() {}
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::handler::{HandlerFailure, HandlerOutcome, Reply, Request};

/// Any error a middleware stack may produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A handler as a tower service: what every layer wraps.
pub type HandlerService = BoxCloneSyncService<Request, Reply, BoxError>;

/// A type-erased layer, as stored by servers and generated code.
#[derive(Clone)]
pub struct DynLayer(Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>);

impl std::fmt::Debug for DynLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DynLayer")
    }
}

impl DynLayer {
    /// Erases any tower layer whose services handle [`Request`]s.
    pub fn new<L>(layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Request, Response = Reply> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Error: Into<BoxError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        Self(Arc::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner).map_err(Into::into))
        }))
    }

    /// Wraps `service`.
    pub fn apply(&self, service: HandlerService) -> HandlerService {
        (self.0)(service)
    }
}

/// What a `layer = f` attribute argument may name: a function returning a [`DynLayer`] or
/// any tower layer over [`HandlerService`].
pub trait IntoDynLayer {
    /// Erases the layer.
    fn into_dyn_layer(self) -> DynLayer;
}

impl IntoDynLayer for DynLayer {
    fn into_dyn_layer(self) -> DynLayer {
        self
    }
}

impl<L> IntoDynLayer for L
where
    L: Layer<HandlerService> + Send + Sync + 'static,
    L::Service: Service<Request, Response = Reply> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Error: Into<BoxError>,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    fn into_dyn_layer(self) -> DynLayer {
        DynLayer::new(self)
    }
}

/// Runs a request through a layered handler and maps the stack's error back to what the
/// server sends.
pub(crate) async fn call_layered(service: &HandlerService, request: Request) -> HandlerOutcome {
    match service.clone().oneshot(request).await {
        Ok(reply) => Ok(reply),
        Err(e) => Err(match e.downcast::<HandlerFailure>() {
            Ok(failure) => *failure,
            Err(other) => HandlerFailure::Internal(format!("middleware failed: {other}")),
        }),
    }
}

/// Adapts a plain async handler function into a [`HandlerService`].
pub(crate) fn service_fn<F, Fut>(f: F) -> HandlerService
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = HandlerOutcome> + Send + 'static,
{
    BoxCloneSyncService::new(tower::service_fn(move |req| {
        let fut = f(req);
        async move { fut.await.map_err(|e| Box::new(e) as BoxError) }
    }))
}

/// A timing interceptor (Nest's `LoggingInterceptor`): logs how long each handler took.
///
/// It is also the template for writing any interceptor: wrap the inner service, act
/// before and after the call.
///
/// ```
/// use nestling::middleware::{timing, DynLayer};
///
/// #[derive(Default)]
/// struct Users;
///
/// fn timed() -> DynLayer { timing() }
///
/// #[nestling::controller(layer = timed)]
/// impl Users {
///     #[message_pattern("sum")]
///     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
/// }
/// # fn main() {}
/// ```
pub fn timing() -> DynLayer {
    DynLayer::new(tower::layer::layer_fn(|inner: HandlerService| {
        tower::service_fn(move |request: Request| {
            let pattern = request.context().pattern();
            let started = std::time::Instant::now();
            let call = inner.clone().oneshot(request);
            async move {
                let out = call.await;
                tracing::info!(%pattern, elapsed_us = started.elapsed().as_micros() as u64, ok = out.is_ok(), "handled");
                out
            }
        })
    }))
}

/// Nest's `Forbidden resource` rejection (what a failing Nest guard sends over RPC).
pub fn forbidden() -> HandlerFailure {
    HandlerFailure::Rpc(serde_json::json!({"status": "error", "message": "Forbidden resource"}))
}

/// A guard: requests for which `allow` returns `false` are rejected with Nest's
/// `{"status":"error","message":"Forbidden resource"}` and never reach the handler.
///
/// ```
/// use nestling::middleware::guard;
/// let only_local = guard(|req: &nestling::Request| req.context().peer_addr().ip().is_loopback());
/// let server = nestling::Server::builder().layer(only_local).build().unwrap();
/// ```
pub fn guard<F>(allow: F) -> GuardLayer<F>
where
    F: Fn(&Request) -> bool + Clone + Send + Sync + 'static,
{
    GuardLayer { allow }
}

/// The layer built by [`guard`].
#[derive(Clone, Debug)]
pub struct GuardLayer<F> {
    allow: F,
}

impl<S, F: Clone> Layer<S> for GuardLayer<F> {
    type Service = Guard<S, F>;
    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            allow: self.allow.clone(),
        }
    }
}

/// The service built by [`GuardLayer`].
#[derive(Clone, Debug)]
pub struct Guard<S, F> {
    inner: S,
    allow: F,
}

impl<S, F> Service<Request> for Guard<S, F>
where
    S: Service<Request, Response = Reply, Error = BoxError>,
    S::Future: Send + 'static,
    F: Fn(&Request) -> bool,
{
    type Response = Reply;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if (self.allow)(&request) {
            Box::pin(self.inner.call(request))
        } else {
            let pattern = request.context().pattern();
            tracing::debug!(%pattern, peer = %request.context().peer_addr(), "guard rejected the request");
            Box::pin(async { Err(Box::new(forbidden()) as BoxError) })
        }
    }
}
