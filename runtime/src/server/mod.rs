//! The TCP server: Nest's `NestFactory.createMicroservice(…, { transport: Transport.TCP })`.

mod config;
mod connection;
mod deadline;
mod dispatch;
#[cfg(feature = "nats")]
pub(crate) mod nats;
mod replies;

use std::any::TypeId;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{
    ServerConfig, DEFAULT_INCOMPLETE_FRAME_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_SHUTDOWN_GRACE,
};

use crate::error::ServerError;
use crate::handler::Instance;
use crate::middleware::{service_fn, DynLayer, HandlerService, IntoDynLayer};
use crate::registry::{all_controllers, Controller, ControllerMeta, HandlerMeta};
use crate::router::{Bound, Router};

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
        for meta in metas {
            let instance = &instances[&(meta.type_id)()];
            for handler in meta.handlers {
                let service = layered(&self.layers, meta, handler, instance);
                router.add(Bound {
                    instance: instance.clone(),
                    controller: meta,
                    meta: handler,
                    service,
                })?;
            }
        }
        Ok(Server {
            router: Arc::new(router),
            config: Arc::new(self.config),
            tls: self.tls,
        })
    }
}

/// Wraps a handler in its global, controller and handler layers (outermost first), or
/// `None` when it has none.
fn layered(
    global: &[DynLayer],
    controller: &'static ControllerMeta,
    handler: &'static HandlerMeta,
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
    let (call, instance) = (handler.call, instance.clone());
    let base = service_fn(move |request| call(&instance, request));
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
    tls: Option<TlsSettings>,
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
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds the listening socket. Use port 0 for an ephemeral port and read it back
    /// with [`Listening::local_addr`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let listening = nestling::Server::builder().discover(false).build().unwrap()
    ///     .listen("127.0.0.1:0").await.unwrap();
    /// assert_ne!(listening.local_addr().port(), 0);
    /// # });
    /// ```
    pub async fn listen(
        self,
        addr: impl ToSocketAddrs + std::fmt::Debug,
    ) -> Result<Listening, ServerError> {
        let shown = format!("{addr:?}");
        let listener = bind(addr).await.map_err(|source| ServerError::Bind {
            addr: shown.clone(),
            source,
        })?;
        let local_addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: shown,
            source,
        })?;
        Ok(Listening {
            server: self,
            listener,
            local_addr,
        })
    }
}

/// Nest's listen backlog (Node's default): bursts of connects queue instead of being
/// dropped and retried a second later, as with the OS-default 128.
const LISTEN_BACKLOG: u32 = 511;

/// Binds like Nest: `SO_REUSEADDR`, a 511-deep backlog; tries each resolved address.
async fn bind(addr: impl ToSocketAddrs) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "address resolved to nothing",
        )
    }))
}

/// A server bound to its address, ready to serve.
#[derive(Debug)]
pub struct Listening {
    server: Server,
    listener: TcpListener,
    local_addr: SocketAddr,
}

impl Listening {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), ServerError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops accepting,
    /// stops reading new packets, lets in-flight requests finish and send their replies
    /// for up to [`ServerConfig::shutdown_grace`], then closes every connection.
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Listening {
            server,
            listener,
            local_addr,
        } = self;
        let token = CancellationToken::new();
        let slots = Arc::new(Semaphore::new(server.config.max_connections.max(1)));
        let mut connections = JoinSet::new();
        tracing::info!(%local_addr, routes = server.router.len(), "nestling microservice listening");
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut signal => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, limit = server.config.max_connections, "connection limit reached, closing new connection");
                            continue;
                        };
                        let router = server.router.clone();
                        let config = server.config.clone();
                        let token = token.clone();
                        let tls = server.tls.clone();
                        connections.spawn(async move {
                            crate::observe::connection(1.0);
                            connection::serve_connection(stream, peer, router, config, token, tls).await;
                            crate::observe::connection(-1.0);
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        token.cancel();
        let drained = tokio::time::timeout(server.config.shutdown_grace, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "shutdown grace period over, closing connections with requests still running"
            );
            connections.shutdown().await;
        }
        tracing::info!(%local_addr, "nestling microservice stopped");
        Ok(())
    }
}
