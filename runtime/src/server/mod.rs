//! The server: Nest's `NestFactory.createMicroservice(AppModule, …)`. Its routes are served
//! on a transport: TCP (`listen`), NATS (`listen_nats`), or one of your own (`serve_on`).

mod config;

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use config::{
    ServerConfig, DEFAULT_INCOMPLETE_FRAME_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET_GRACE, DEFAULT_REPLY_HIGH_WATER,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_STALL_TIMEOUT,
};

use crate::error::ServerError;
use crate::filter::{Filter, FilterChain};
use crate::handler::Instance;
use crate::lifecycle::Lifecycles;
use crate::middleware::{service_fn, DynLayer, HandlerService, IntoDynLayer};
use crate::registry::{all_controllers, Controller, ControllerMeta, HandlerMeta};
use crate::router::{Bound, Router};
use crate::transport::{Shutdown, Transport};

/// Configures which controllers a [`Server`] serves and its limits.
///
/// ```no_run
/// use nestling::Server;
///
/// #[derive(Default)]
/// struct Math;
///
/// #[nestling::controller]
/// impl Math {
///     #[message_pattern("sum")]
///     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// Server::builder()
///     .max_connections(1_000)
///     .build()?
///     .listen("127.0.0.1:8888")
///     .await?
///     .serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
///     .await?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ServerBuilder {
    explicit: Vec<(&'static ControllerMeta, Instance)>,
    discover: bool,
    config: ServerConfig,
    tls: Option<TlsSettings>,
    layers: Vec<DynLayer>,
    filters: Vec<Filter>,
    validate_payloads: bool,
}

/// TLS settings of a server, if the `tls` feature is on.
#[cfg(feature = "tls")]
pub(crate) type TlsSettings = crate::tls::ServerTls;
#[cfg(not(feature = "tls"))]
pub(crate) type TlsSettings = std::convert::Infallible;

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field(
                "explicit",
                &self
                    .explicit
                    .iter()
                    .map(|(m, _)| m.name)
                    .collect::<Vec<_>>(),
            )
            .field("discover", &self.discover)
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .field("layers", &self.layers.len())
            .field("filters", &self.filters.len())
            .field("validate_payloads", &self.validate_payloads)
            .finish()
    }
}

impl ServerBuilder {
    /// Serves `instance`'s handlers. Use this for controllers with state (a database
    /// pool, configuration, …); controllers implementing `Default` are found on their own.
    ///
    /// ```
    /// struct Greeter { greeting: String }
    ///
    /// #[nestling::controller]
    /// impl Greeter {
    ///     #[message_pattern("greet")]
    ///     fn greet(&self, name: String) -> String { format!("{}, {name}", self.greeting) }
    /// }
    ///
    /// let server = nestling::Server::builder()
    ///     .controller(Greeter { greeting: "hello".into() })
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn controller<C: Controller>(mut self, instance: C) -> Self {
        self.explicit.push((C::meta(), Arc::new(instance)));
        self
    }

    /// Whether to serve every `Default` controller linked into the binary (default
    /// `true`). With `false`, only controllers added with [`controller`](Self::controller)
    /// are served.
    ///
    /// ```
    /// let server = nestling::Server::builder().discover(false).build().unwrap();
    /// ```
    pub fn discover(mut self, yes: bool) -> Self {
        self.discover = yes;
        self
    }

    /// Largest accepted frame in UTF-16 units (default: Nest's 134,217,728; a value above
    /// [`MAX_FRAME_LEN_LIMIT`](crate::codec::MAX_FRAME_LEN_LIMIT) is lowered to it).
    ///
    /// ```
    /// let server = nestling::Server::builder().max_frame_len(1 << 20).build().unwrap();
    /// assert_eq!(server.config().max_frame_len, 1 << 20);
    /// ```
    pub fn max_frame_len(mut self, units: usize) -> Self {
        self.config.max_frame_len = units.min(crate::codec::MAX_FRAME_LEN_LIMIT);
        self
    }

    /// Connections served at once (default [`DEFAULT_MAX_CONNECTIONS`]).
    ///
    /// ```
    /// let server = nestling::Server::builder().max_connections(500).build().unwrap();
    /// assert_eq!(server.config().max_connections, 500);
    /// ```
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n;
        self
    }

    /// Requests and events running at once per connection (default
    /// [`DEFAULT_MAX_IN_FLIGHT`]); reading pauses while the limit is reached.
    ///
    /// ```
    /// let server = nestling::Server::builder().max_in_flight_per_connection(64).build().unwrap();
    /// assert_eq!(server.config().max_in_flight_per_connection, 64);
    /// ```
    pub fn max_in_flight_per_connection(mut self, n: usize) -> Self {
        self.config.max_in_flight_per_connection = n;
        self
    }

    /// How long one frame may take from first to last byte (default 30 s; `None`
    /// disables). See [`ServerConfig::incomplete_frame_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = nestling::Server::builder()
    ///     .incomplete_frame_timeout(Some(Duration::from_secs(5)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(server.config().incomplete_frame_timeout, Some(Duration::from_secs(5)));
    /// ```
    pub fn incomplete_frame_timeout(mut self, limit: Option<Duration>) -> Self {
        self.config.incomplete_frame_timeout = limit;
        self
    }

    /// Closes connections silent for this long between packets (default `None`: never).
    ///
    /// ```
    /// let server = nestling::Server::builder()
    ///     .idle_timeout(Some(std::time::Duration::from_secs(300)))
    ///     .build()
    ///     .unwrap();
    /// assert!(server.config().idle_timeout.is_some());
    /// ```
    pub fn idle_timeout(mut self, limit: Option<Duration>) -> Self {
        self.config.idle_timeout = limit;
        self
    }

    /// How long graceful shutdown waits for in-flight requests (default 10 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = nestling::Server::builder().shutdown_grace(Duration::from_secs(2)).build().unwrap();
    /// assert_eq!(server.config().shutdown_grace, Duration::from_secs(2));
    /// ```
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.config.shutdown_grace = grace;
        self
    }

    /// Bytes of unwritten replies a TCP connection may hold before the server stops
    /// reading it (default [`DEFAULT_REPLY_HIGH_WATER`], 1 MiB; reading resumes at half).
    /// See [`ServerConfig::reply_high_water`].
    ///
    /// ```
    /// let server = nestling::Server::builder().reply_high_water(256 * 1024).build().unwrap();
    /// assert_eq!(server.config().reply_high_water, 256 * 1024);
    /// ```
    pub fn reply_high_water(mut self, bytes: usize) -> Self {
        self.config.reply_high_water = bytes.max(1);
        self
    }

    /// How long a peer may take none of its replies before its connection is closed
    /// (default [`DEFAULT_WRITE_STALL_TIMEOUT`], 30 s; `None`: never). See
    /// [`ServerConfig::write_stall_timeout`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = nestling::Server::builder()
    ///     .write_stall_timeout(Some(Duration::from_secs(5)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(server.config().write_stall_timeout, Some(Duration::from_secs(5)));
    /// ```
    pub fn write_stall_timeout(mut self, limit: Option<Duration>) -> Self {
        self.config.write_stall_timeout = limit;
        self
    }

    /// Bytes all TCP connections may hold together for their peers: frames still arriving
    /// and replies not yet written (default [`DEFAULT_MEMORY_BUDGET`], 512 MiB). See
    /// [`ServerConfig::memory_budget`].
    ///
    /// ```
    /// let server = nestling::Server::builder().memory_budget(64 << 20).build().unwrap();
    /// assert_eq!(server.config().memory_budget, 64 << 20);
    /// ```
    pub fn memory_budget(mut self, bytes: usize) -> Self {
        self.config.memory_budget = bytes;
        self
    }

    /// How long the memory budget may stay exceeded before the connection holding the
    /// most is closed (default [`DEFAULT_MEMORY_BUDGET_GRACE`], 5 s). See
    /// [`ServerConfig::memory_budget_grace`].
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = nestling::Server::builder().memory_budget_grace(Duration::from_secs(1)).build().unwrap();
    /// assert_eq!(server.config().memory_budget_grace, Duration::from_secs(1));
    /// ```
    pub fn memory_budget_grace(mut self, grace: Duration) -> Self {
        self.config.memory_budget_grace = grace;
        self
    }

    /// Whether TCP connections acknowledge at once a read that produced no immediate reply
    /// (`TCP_QUICKACK` on Linux; default `true`). It removes a ~40 ms stall every Nest
    /// caller otherwise hits when it writes two packets back to back (`emit` then `send`):
    /// Nest's client keeps Nagle's algorithm on, so the second waits for the ACK of the
    /// first, which Linux delays when no reply carries it. Turn it off only to save the
    /// system call per such read for peers that never write twice in a row (e.g. only
    /// nestling clients, which set `TCP_NODELAY`). See [`ServerConfig::quickack`].
    ///
    /// ```
    /// let server = nestling::Server::builder().quickack(false).build().unwrap();
    /// assert!(!server.config().quickack);
    /// assert!(nestling::Server::builder().build().unwrap().config().quickack);
    /// ```
    pub fn quickack(mut self, on: bool) -> Self {
        self.config.quickack = on;
        self
    }

    /// Serves TLS (Nest's `tlsOptions`) instead of plain TCP. Clients that do not speak
    /// TLS are disconnected after a failed handshake, with a log line.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Wraps every handler in `layer` (a guard, an interceptor, any tower layer). Global
    /// layers run outside controller and handler layers, in the order added.
    ///
    /// ```
    /// use nestling::middleware::guard;
    /// let server = nestling::Server::builder()
    ///     .layer(guard(|req: &nestling::Request| !req.context().pattern().starts_with("admin.")))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn layer<L: IntoDynLayer>(mut self, layer: L) -> Self {
        self.layers.push(layer.into_dyn_layer());
        self
    }

    /// Adds a global exception filter (Nest's `app.useGlobalFilters(F)`): tried, in the
    /// order added, after the handler's and the controller's own filters, on every error a
    /// handler returns that none of those caught. See [`filter`](crate::filter).
    ///
    /// ```
    /// use nestling::filter::catch;
    /// use nestling::RpcException;
    ///
    /// let server = nestling::Server::builder()
    ///     .filter(catch(|e: &std::io::Error| RpcException::new(format!("I/O failed: {}", e.kind()))))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filters.push(filter);
        self
    }

    /// Validates the payload of every handler whose payload type has validation rules
    /// (derives `validator::Validate` or `garde::Validate`, features `validator` and
    /// `garde`), as Nest's `app.useGlobalPipes(new ValidationPipe())` does; types without
    /// rules are untouched. Off by default; a handler can ask for it alone with
    /// `#[message_pattern("..", validate)]`. See [`validation`](crate::validation).
    ///
    /// ```
    /// # #[cfg(feature = "validator")] {
    /// #[derive(serde::Deserialize, serde::Serialize, validator::Validate)]
    /// struct NewUser {
    ///     #[validate(length(min = 2))]
    ///     name: String,
    /// }
    ///
    /// #[derive(Default)]
    /// struct Users;
    ///
    /// #[nestling::controller]
    /// impl Users {
    ///     #[message_pattern("create_user")]
    ///     fn create(&self, user: NewUser) -> String { user.name }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let server = nestling::Server::builder().validate_payloads(true).build().unwrap();
    /// let client = nestling::testing::client(&server);
    /// let e = client.send::<_, _, String>("create_user", &serde_json::json!({"name": "A"})).await.unwrap_err();
    /// let nestling::ClientError::Remote { error, .. } = e else { panic!("{e}") };
    /// assert_eq!(
    ///     error.value().to_string(),
    ///     r#"{"message":["name must be longer than or equal to 2 characters"],"error":"Bad Request","statusCode":400}"#
    /// );
    /// # }
    /// # }
    /// ```
    pub fn validate_payloads(mut self, on: bool) -> Self {
        self.validate_payloads = on;
        self
    }

    /// Builds the route table.
    ///
    /// Fails with [`ServerError::DuplicateHandler`] when two message handlers claim the
    /// same pattern, naming both. Event handlers may share a pattern: all of them run.
    pub fn build(self) -> Result<Server, ServerError> {
        let mut instances: HashMap<TypeId, Instance> = HashMap::new();
        let mut metas: Vec<&'static ControllerMeta> = Vec::new();
        for (meta, instance) in self.explicit {
            if instances.insert((meta.type_id)(), instance).is_none() {
                metas.push(meta);
            }
        }
        if self.discover {
            for meta in all_controllers() {
                let id = (meta.type_id)();
                if instances.contains_key(&id) {
                    continue;
                }
                match (meta.auto)() {
                    Some(instance) => {
                        instances.insert(id, instance);
                        metas.push(meta);
                    }
                    None => tracing::warn!(
                        controller = meta.name,
                        "controller {} ({}) does not implement Default and was not added with \
                         Server::builder().controller(instance): its handlers are not served",
                        meta.name,
                        meta.file
                    ),
                }
            }
        }
        let mut router = Router::default();
        for &meta in &metas {
            let instance = &instances[&(meta.type_id)()];
            for handler in meta.handlers {
                let entry = match handler.validated {
                    Some(validated) if self.validate_payloads => {
                        validated().unwrap_or(handler.entry)
                    }
                    _ => handler.entry,
                };
                let service = layered(&self.layers, meta, handler, entry, instance);
                router.add(Bound {
                    instance: instance.clone(),
                    controller: meta,
                    meta: handler,
                    entry,
                    service,
                    filters: filters_of(&self.filters, meta, handler),
                })?;
            }
        }
        let lifecycle = Lifecycles::new(metas.iter().map(|m| (*m, &instances[&(m.type_id)()])));
        Ok(Server {
            router: Arc::new(router),
            config: Arc::new(self.config),
            tls: self.tls,
            lifecycle: Arc::new(lifecycle),
        })
    }
}

/// A handler's exception filters in the order Nest tries them: the handler's, the
/// controller's, then the global ones.
fn filters_of(
    global: &[Filter],
    controller: &'static ControllerMeta,
    handler: &'static HandlerMeta,
) -> Option<Arc<FilterChain>> {
    let own = handler
        .filters
        .iter()
        .chain(controller.filters)
        .map(|make| make());
    FilterChain::of(own.chain(global.iter().cloned()).collect())
}

/// Wraps a handler in its global, controller and handler layers (outermost first), or
/// `None` when it has none.
fn layered(
    global: &[DynLayer],
    controller: &'static ControllerMeta,
    handler: &'static HandlerMeta,
    entry: crate::handler::HandlerEntry,
    instance: &Instance,
) -> Option<HandlerService> {
    let layers: Vec<DynLayer> = global
        .iter()
        .cloned()
        .chain(controller.layers.iter().map(|make| make()))
        .chain(handler.layers.iter().map(|make| make()))
        .collect();
    if layers.is_empty() {
        return None;
    }
    let instance = instance.clone();
    let base = service_fn(move |request| entry.start(&instance, request));
    Some(
        layers
            .iter()
            .rev()
            .fold(base, |inner, layer| layer.apply(inner)),
    )
}

/// A Nest-compatible TCP microservice server.
///
/// ```no_run
/// # async fn run() -> Result<(), nestling::ServerError> {
/// // Serves every `Default` controller in the binary on Nest's tutorial port.
/// nestling::Server::builder().build()?.listen("127.0.0.1:8888").await?.serve().await
/// # }
/// ```
#[derive(Clone)]
pub struct Server {
    router: Arc<Router>,
    config: Arc<ServerConfig>,
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) lifecycle: Arc<Lifecycles>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("routes", &self.router.len())
            .field("config", &self.config)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            explicit: Vec::new(),
            discover: true,
            config: ServerConfig::default(),
            tls: None,
            layers: Vec::new(),
            filters: Vec::new(),
            validate_payloads: false,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }
    /// The server's routes and limits, as a [`Transport`](crate::transport::Transport)
    /// sees them (see [`Dispatcher`](crate::transport::Dispatcher)).
    pub fn dispatcher(&self) -> crate::transport::Dispatcher {
        crate::transport::Dispatcher::new(self.router.clone(), self.config.clone())
    }

    /// Serves on `transport` (a transport of your own, see
    /// [`Transport`](crate::transport::Transport)) until `signal` completes, then asks it to
    /// shut down gracefully and waits until it has. Controllers'
    /// [`Lifecycle`](crate::Lifecycle) hooks run before the transport starts (unless a
    /// `listen` ran them already) and after it has drained.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use nestling::transport::{Dispatcher, Shutdown, Transport};
    /// struct Idle;
    /// impl Transport for Idle {
    ///     async fn serve(self, _: Dispatcher, shutdown: Shutdown) -> Result<(), nestling::ServerError> {
    ///         shutdown.requested().await;
    ///         Ok(())
    ///     }
    /// }
    /// let server = nestling::Server::builder().discover(false).build().unwrap();
    /// server.serve_on(Idle, async {}).await.unwrap();
    /// # });
    /// ```
    pub async fn serve_on<T: Transport>(
        self,
        transport: T,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.lifecycle.start().await?;
        self.lifecycle.enter();
        let shutdown = Shutdown::new();
        let serving = transport.serve(self.dispatcher(), shutdown.clone());
        tokio::pin!(serving, signal);
        let mut signalled = false;
        let served = loop {
            tokio::select! {
                served = &mut serving => break served,
                () = &mut signal, if !signalled => {
                    signalled = true;
                    shutdown.request();
                }
            }
        };
        self.lifecycle.leave().await;
        served
    }
}
