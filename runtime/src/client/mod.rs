//! The client: Nest's `ClientProxy` for `Transport.TCP` (and, with the `nats` feature,
//! `Transport.NATS`, or any [`ClientTransport`](crate::transport::ClientTransport)).

pub(crate) mod backoff;
mod batch;
mod decode;
mod link;
mod payload;
pub(crate) mod pending;
mod stream;
mod stream_queue;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures_util::future::{Either, FutureExt as _};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use backoff::Backoff;
pub use backoff::{DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX};
use link::{Dialer, Link, Outgoing};
use pending::{Completion, PendingCalls};
use stream::CallGuard;
pub use stream::ReplyStream;

use crate::codec::DEFAULT_MAX_FRAME_LEN;
use crate::error::ClientError;
use crate::observe::Observed;
use crate::pattern::IntoPattern;
use crate::pattern::Pattern;
use crate::status::{Event, Hub, Status, TransportError};
use crate::transport::tcp::client::TcpDial;
use crate::transport::ClientConnector;

/// Default [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`ClientBuilder::max_queued_frames`].
pub const DEFAULT_MAX_QUEUED_FRAMES: usize = 1_024;
/// Default [`ClientBuilder::max_in_flight`].
pub const DEFAULT_MAX_IN_FLIGHT_CALLS: usize = 65_536;
/// Default [`ClientBuilder::max_buffered_stream_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BUFFERED_STREAM_BYTES: usize = 1 << 20;

/// A client for a Nest-compatible TCP microservice (a NestJS app or a nestling server).
///
/// With the `nats` feature, a `nats://host:port` address makes the same client call
/// services over NATS (Nest's `Transport.NATS`) instead: one NATS connection, replies
/// routed by id, and [`ClientError::NoResponders`] when nobody serves the pattern. With
/// the `rmq` feature, an `amqp://host:5672?queue=user_service` address calls a service
/// over RabbitMQ (Nest's `Transport.RMQ`; see the `rmq` module).
///
/// With [`ClientBuilder::transport`], the same client sends through a transport of your
/// own (a [`ClientTransport`](crate::transport::ClientTransport)).
///
/// All calls share **one** TCP connection and are matched to replies by id, so any number
/// of calls can be in flight at once. The connection opens on the first call (or on
/// [`connect`](Self::connect)); if it drops, every pending call fails at once with
/// [`ClientError::ConnectionClosed`] and the next call reconnects. Cloning is cheap and
/// clones share the connection.
///
/// ```no_run
/// # async fn run() -> Result<(), nestling::ClientError> {
/// let client = nestling::Client::new("127.0.0.1:8888");
/// client.emit("log", "求和1111").await?;                 // @EventPattern('log')
/// let sum: i64 = client.send("sum", &[1, 2, 3]).await?;   // @MessagePattern('sum')
/// assert_eq!(sum, 6);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    next_id: AtomicU64,
    /// TCP, NATS or the user's transport.
    dialer: Dialer,
    /// Settings of TCP links.
    tcp: TcpDial,
    current: Mutex<Option<Link>>,
    connecting: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
    in_flight: Arc<Semaphore>,
    /// The permits `in_flight` started with: a batch takes at most this many at once.
    max_in_flight: usize,
    /// Bytes of a streamed reply's items queued for its caller before the link waits.
    max_buffered_stream_bytes: usize,
    /// Where the connection's status and errors are published.
    hub: Arc<Hub>,
    /// Counts the links opened: a link's close speaks for the client only while it is the
    /// current one.
    generation: AtomicU64,
    /// The broker connection of the current RabbitMQ link (Nest's `unwrap()`).
    #[cfg(feature = "rmq")]
    rmq: Mutex<Option<crate::transport::rmq::client::RmqHandles>>,
}

/// The reasons a client gives when it closes a link itself: no error event for those.
const CLOSED_BY_CLIENT: &str = "closed by the client";
const DROPPED: &str = "the client was dropped";

impl Drop for Inner {
    /// The connection's tasks keep it alive on their own; the last `Client` clone going
    /// away must end it, or every dropped client would leak a socket.
    fn drop(&mut self) {
        let current = self.current.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(conn) = current.take() {
            conn.close(DROPPED);
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.addr)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("request_timeout", &self.inner.request_timeout)
            .finish()
    }
}

/// Configures a [`Client`].
///
/// ```
/// use std::time::{Duration, Instant};
/// let client = nestling::Client::builder("127.0.0.1:8888")
///     .request_timeout(Some(Duration::from_secs(2)))
///     .build();
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    addr: String,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
    max_frame_len: usize,
    max_queued_frames: usize,
    max_in_flight: usize,
    max_buffered_stream_bytes: usize,
    backoff_base: Duration,
    backoff_max: Duration,
    /// Set by [`ClientBuilder::transport`]; otherwise chosen by the address.
    dialer: Option<Dialer>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::ClientTls>,
}

impl ClientBuilder {
    /// Sends through a transport of your own instead of TCP or NATS (Nest's custom
    /// `ClientProxy`): `connector` opens a
    /// [`ClientTransport`](crate::transport::ClientTransport) to the client's address on
    /// the first call and again whenever the transport has closed. Everything else works
    /// unchanged: ids, timeouts, in-flight limits, reconnect pacing, `send_stream`, `emit`.
    /// The TCP settings (`tls`, `max_frame_len`, `max_queued_frames`) do not apply.
    ///
    /// A complete transport is in [`ClientTransport`](crate::transport::ClientTransport)'s
    /// documentation.
    ///
    /// ```
    /// # use nestling_runtime::transport::{ClientTransport, ReplyRouter, TransportFuture};
    /// # use nestling_runtime::ClientError;
    /// # struct MyTransport { replies: ReplyRouter }
    /// # impl MyTransport {
    /// #     async fn connect(_addr: &str) -> Result<Self, ClientError> {
    /// #         Ok(MyTransport { replies: ReplyRouter::new() })
    /// #     }
    /// # }
    /// # impl ClientTransport for MyTransport {
    /// #     fn wire(&self) -> nestling_runtime::packet::Wire { nestling_runtime::packet::Wire::Bare }
    /// #     fn replies(&self) -> &ReplyRouter { &self.replies }
    /// #     fn request<'a>(&'a self, _: &'a nestling_runtime::Pattern, _: u64, _: bytes::Bytes)
    /// #         -> TransportFuture<'a, Result<(), ClientError>> { Box::pin(async { Ok(()) }) }
    /// #     fn event<'a>(&'a self, _: &'a nestling_runtime::Pattern, _: bytes::Bytes)
    /// #         -> TransportFuture<'a, Result<(), ClientError>> { Box::pin(async { Ok(()) }) }
    /// # }
    /// let client = nestling_runtime::Client::builder("mine://orders")
    ///     .transport(|addr: String| async move { MyTransport::connect(&addr).await })
    ///     .build();
    /// assert_eq!(client.addr(), "mine://orders");
    /// ```
    pub fn transport(mut self, connector: impl ClientConnector) -> Self {
        self.dialer = Some(Dialer::Custom(Arc::new(connector)));
        self
    }

    /// Connects over TLS (Nest's `tlsOptions` on `ClientsModule`).
    ///
    /// ```
    /// # let ca_pem = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap().cert.pem();
    /// let tls = nestling::tls::ClientTls::with_root_pem(ca_pem.as_bytes()).unwrap();
    /// let client = nestling::Client::builder("localhost:8888").tls(tls).build();
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long to wait for the connection (default 5 s): the TCP connect and the TLS
    /// handshake each, the NATS connect, or a custom transport's connector.
    ///
    /// ```
    /// let client = nestling::Client::builder("127.0.0.1:8888")
    ///     .connect_timeout(std::time::Duration::from_secs(1))
    ///     .build();
    /// ```
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Default time a `send` may take in all — waiting for a slot, connecting, and the
    /// reply (default `None`: wait as long as the connection lives, like Nest).
    pub fn request_timeout(mut self, t: Option<Duration>) -> Self {
        self.request_timeout = t;
        self
    }

    /// Largest reply frame accepted, in UTF-16 units (default: Nest's 134,217,728).
    ///
    /// ```
    /// let client = nestling::Client::builder("127.0.0.1:8888").max_frame_len(1 << 20).build();
    /// ```
    pub fn max_frame_len(mut self, units: usize) -> Self {
        self.max_frame_len = units;
        self
    }

    /// Frames queued for writing before callers wait (default 1,024): backpressure when
    /// the server reads slower than callers send.
    ///
    /// ```
    /// let client = nestling::Client::builder("127.0.0.1:8888").max_queued_frames(256).build();
    /// ```
    pub fn max_queued_frames(mut self, n: usize) -> Self {
        self.max_queued_frames = n;
        self
    }

    /// Calls awaiting a reply at once (default 65,536); further calls wait for a slot
    /// (within their timeout): backpressure instead of an unbounded pending table.
    ///
    /// ```
    /// let client = nestling::Client::builder("127.0.0.1:8888").max_in_flight(1_000).build();
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Bytes of a streamed reply's items kept for a caller that has not taken them yet
    /// (default 1 MiB, plus one item; each item counts its JSON plus 64 bytes). When a [`ReplyStream`] falls that far behind, the
    /// TCP connection stops reading replies until its caller polls again or drops it, so
    /// a server streaming faster than the caller consumes cannot grow the client's memory
    /// (the connection's other calls wait meanwhile).
    ///
    /// ```
    /// let client = nestling::Client::builder("127.0.0.1:8888")
    ///     .max_buffered_stream_bytes(256 * 1024)
    ///     .build();
    /// ```
    pub fn max_buffered_stream_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_stream_bytes = bytes.max(1);
        self
    }

    /// Pacing of reconnects after a *failed connect*: the first retry waits `base`, each
    /// further failure doubles the wait up to `max` (defaults 100 ms and 5 s). While
    /// waiting, calls fail at once with [`ClientError::Unavailable`] instead of dialing.
    /// A connection that *drops* is redialed by the next call immediately. `Duration::ZERO`
    /// as `base` turns pacing off (every call dials, like Nest).
    ///
    /// ```
    /// use std::time::Duration;
    /// let client = nestling::Client::builder("127.0.0.1:8888")
    ///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(2))
    ///     .build();
    /// ```
    pub fn reconnect_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// Builds the client. Nothing connects until the first call or [`Client::connect`].
    pub fn build(self) -> Client {
        Client {
            inner: Arc::new(Inner {
                dialer: self.dialer.unwrap_or_else(|| Dialer::for_addr(&self.addr)),
                addr: self.addr,
                connect_timeout: self.connect_timeout,
                request_timeout: self.request_timeout,
                tcp: TcpDial {
                    connect_timeout: self.connect_timeout,
                    max_frame_len: self.max_frame_len,
                    max_queued_frames: self.max_queued_frames,
                    #[cfg(feature = "tls")]
                    tls: self.tls,
                },
                next_id: AtomicU64::new(1),
                current: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                backoff: Mutex::new(Backoff::new(self.backoff_base, self.backoff_max)),
                in_flight: Arc::new(Semaphore::new(self.max_in_flight)),
                max_in_flight: self.max_in_flight,
                max_buffered_stream_bytes: self.max_buffered_stream_bytes,
                hub: Hub::new(Status::Disconnected),
                generation: AtomicU64::new(0),
                #[cfg(feature = "rmq")]
                rmq: Mutex::new(None),
            }),
        }
    }
}

impl Client {
    /// A client for `addr` (`host:port`, or `nats://host:port` with the `nats` feature)
    /// with default settings. Does not connect yet.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::builder(addr).build()
    }

    /// Starts configuring a client for `addr` (`host:port`, or `nats://host:port` with the
    /// `nats` feature).
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            addr: addr.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_queued_frames: DEFAULT_MAX_QUEUED_FRAMES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT_CALLS,
            max_buffered_stream_bytes: DEFAULT_MAX_BUFFERED_STREAM_BYTES,
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            dialer: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// The address this client dials.
    ///
    /// ```
    /// assert_eq!(nestling::Client::new("127.0.0.1:8888").addr(), "127.0.0.1:8888");
    /// ```
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Opens the connection now instead of on the first call (Nest's `connect()`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ClientError> {
    /// let client = nestling::Client::new("127.0.0.1:8888");
    /// client.connect().await?; // fail at startup rather than on the first request
    /// # Ok(()) }
    /// ```
    pub async fn connect(&self) -> Result<(), ClientError> {
        self.connection().await.map(drop)
    }

    /// Closes the connection; pending calls fail with [`ClientError::ConnectionClosed`].
    /// A later call reconnects.
    ///
    /// ```
    /// let client = nestling::Client::new("127.0.0.1:8888");
    /// client.close(); // nothing was open: a no-op
    /// ```
    pub fn close(&self) {
        let conn = self.lock_current().take();
        if let Some(conn) = conn {
            conn.close(CLOSED_BY_CLIENT);
        }
        // Also ends a RabbitMQ client's reconnecting in the background.
        self.inner.hub.set(Status::Disconnected);
    }

    /// The connection's status, as Nest 11's `client.status` (see [`crate::status`]):
    /// `connected` once connected; `disconnected` when the connection ends (TCP and custom
    /// transports reconnect on the next call, as Nest's `ClientTCP`); over NATS and
    /// RabbitMQ, `reconnecting` while the client re-establishes a lost connection by
    /// itself; over RabbitMQ, `blocked` while the broker blocks the connection (a memory or
    /// disk alarm). Only transitions are published.
    ///
    /// ```no_run
    /// use nestling::status::Status;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = nestling::Client::new("nats://127.0.0.1:4222");
    /// let mut status = client.status();
    /// client.connect().await?;
    /// assert_eq!(*status.borrow(), Status::Connected);
    /// tokio::spawn(async move {
    ///     while status.changed().await.is_ok() {
    ///         println!("user service: {}", *status.borrow()); // e.g. "reconnecting"
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> tokio::sync::watch::Receiver<Status> {
        self.inner.hub.status()
    }

    /// Every status transition and connection error as it happens (Nest's
    /// `client.on('error', …)` and status events): connects that fail, connections lost
    /// (with the reason), errors the NATS server or RabbitMQ broker reports. The last
    /// [`EVENT_BUFFER`](crate::status::EVENT_BUFFER) are kept for a slow receiver.
    ///
    /// ```
    /// use nestling::status::{Event, TransportError};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let client = nestling::Client::new("127.0.0.1:1"); // nothing listens there
    /// let mut events = client.events();
    /// assert!(client.connect().await.is_err());
    /// match events.recv().await.unwrap() {
    ///     Event::Error(TransportError::Connect { addr, .. }) => assert_eq!(addr, "127.0.0.1:1"),
    ///     other => panic!("{other}"),
    /// }
    /// # });
    /// ```
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.inner.hub.events()
    }

    /// The NATS connection of a `nats://` client (Nest's `unwrap<NatsConnection>()`), for
    /// what nestling does not wrap (JetStream, key-value, …): `None` before the client
    /// has connected, or for another transport.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = nestling::Client::new("nats://127.0.0.1:4222");
    /// client.connect().await?;
    /// let nats = client.nats_client().expect("connected over NATS");
    /// nats.publish("audit", "raw message".into()).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "nats")]
    pub fn nats_client(&self) -> Option<async_nats::Client> {
        match self.live()? {
            Link::Nats(link) => Some(link.client().clone()),
            _ => None,
        }
    }

    /// The RabbitMQ connection and channel of an `amqp://` client (Nest's
    /// `unwrap<AmqpConnectionManager>()`): `None` before the client has connected, while it
    /// reconnects, or for another transport. A reconnect opens a new connection: ask again
    /// rather than keep these.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use nestling::rmq::lapin::{options::QueueDeclareOptions, types::FieldTable};
    /// let client = nestling::Client::new("amqp://127.0.0.1:5672?queue=user_service");
    /// client.connect().await?;
    /// let (_connection, channel) = client.rmq_connection().expect("connected over RabbitMQ");
    /// channel.queue_declare("audit".into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "rmq")]
    pub fn rmq_connection(&self) -> Option<(Arc<lapin::Connection>, lapin::Channel)> {
        self.live()?;
        let handles = self.inner.rmq.lock().unwrap_or_else(|p| p.into_inner());
        handles
            .as_ref()
            .map(|h| (h.connection.clone(), h.channel.clone()))
    }

    /// The address as events show it: without a password.
    fn shown_addr(&self) -> String {
        #[cfg(feature = "rmq")]
        if matches!(self.inner.dialer, Dialer::Rmq) {
            return crate::transport::rmq::address::redact(&self.inner.addr);
        }
        self.inner.addr.clone()
    }

    /// Follows `link` (generation `generation`): when it closes while current, the status
    /// turns `disconnected`, a loss is reported, and a RabbitMQ client reconnects in the
    /// background (as Nest's, through amqp-connection-manager).
    fn watch_close(&self, link: &Link, generation: u64) {
        let weak = Arc::downgrade(&self.inner);
        link.replies().calls.on_close(Box::new(move |reason| {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            if inner.generation.load(Ordering::Acquire) != generation {
                return; // a newer link speaks for the client
            }
            Client { inner }.lost(reason);
        }));
    }

    #[cold]
    fn lost(self, reason: &str) {
        let hub = &self.inner.hub;
        hub.set(Status::Disconnected);
        if reason == CLOSED_BY_CLIENT || reason == DROPPED {
            return;
        }
        hub.error(TransportError::Lost {
            addr: self.shown_addr(),
            reason: reason.to_owned(),
        });
        if matches!(self.inner.dialer, Dialer::Rmq) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                hub.set(Status::Reconnecting);
                runtime.spawn(keep_reconnecting(Arc::downgrade(&self.inner)));
            }
        }
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Link>> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.inner.backoff.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self) -> Option<Link> {
        self.lock_current()
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    async fn connection(&self) -> Result<Link, ClientError> {
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        // Boxed: dialing (TCP, TLS handshake) takes a future of several kilobytes, which
        // would otherwise be part of every call's future and copied with it.
        Box::pin(self.reconnect()).await
    }

    async fn reconnect(&self) -> Result<Link, ClientError> {
        // One dialer at a time; the others reuse its connection (Nest shares the
        // connect promise the same way).
        let _dialing = self.inner.connecting.lock().await;
        if let Some(conn) = self.live() {
            return Ok(conn);
        }
        let addr = &self.inner.addr;
        if let Some((retry_in, last_error)) = self.lock_backoff().blocked(Instant::now()) {
            return Err(ClientError::Unavailable {
                addr: addr.clone(),
                retry_in,
                last_error: last_error.to_owned(),
            });
        }
        let opened = match &self.inner.dialer {
            Dialer::Tcp => self.inner.tcp.dial(addr).await.map(Link::Tcp),
            Dialer::Nats => self.dial_nats().await,
            Dialer::Rmq => self.dial_rmq().await,
            Dialer::Custom(connector) => self.dial_custom(connector.as_ref()).await,
        };
        let conn = match opened {
            Ok(conn) => {
                self.lock_backoff().succeeded();
                conn
            }
            Err(e) => {
                self.lock_backoff().failed(Instant::now(), e.to_string());
                self.inner.hub.error(TransportError::Connect {
                    addr: self.shown_addr(),
                    reason: connect_reason(&e),
                });
                return Err(e);
            }
        };
        let generation = self.inner.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.lock_current() = Some(conn.clone());
        self.inner.hub.set(Status::Connected);
        self.watch_close(&conn, generation);
        Ok(conn)
    }

    #[cfg(feature = "nats")]
    async fn dial_nats(&self) -> Result<Link, ClientError> {
        crate::transport::nats::client::NatsLink::connect(
            &self.inner.addr,
            self.inner.connect_timeout,
            self.inner.hub.clone(),
        )
        .await
        .map(Link::Nats)
    }

    #[cfg(feature = "rmq")]
    async fn dial_rmq(&self) -> Result<Link, ClientError> {
        let link = crate::transport::rmq::client::RmqLink::connect(
            &self.inner.addr,
            self.inner.connect_timeout,
            self.inner.hub.clone(),
        )
        .await?;
        *self.inner.rmq.lock().unwrap_or_else(|p| p.into_inner()) = Some(link.handles());
        Ok(Link::Custom(link))
    }

    #[cfg(not(feature = "rmq"))]
    async fn dial_rmq(&self) -> Result<Link, ClientError> {
        Err(ClientError::Connect {
            addr: self.inner.addr.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "amqp:// addresses need nestling's `rmq` cargo feature",
            ),
        })
    }

    #[cfg(not(feature = "nats"))]
    async fn dial_nats(&self) -> Result<Link, ClientError> {
        Err(ClientError::Connect {
            addr: self.inner.addr.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "nats:// addresses need nestling's `nats` cargo feature",
            ),
        })
    }

    /// Opens the user's transport, within the connect timeout.
    async fn dial_custom(&self, connector: &dyn ClientConnector) -> Result<Link, ClientError> {
        let addr = &self.inner.addr;
        let timeout = self.inner.connect_timeout;
        tokio::time::timeout(timeout, connector.connect(addr))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                addr: addr.clone(),
                timeout,
            })?
            .map(Link::Custom)
    }

    /// One outgoing packet (a request with `id`, an event without), carrying the current
    /// trace id in `metadata` if there is one: `data` is serialised here, and the packet is
    /// framed in this client's wire form when it is queued.
    fn encode<'p, T: Serialize + ?Sized>(
        &self,
        pattern: &Pattern,
        wire_pattern: &'p [u8],
        data: &T,
        id: Option<u64>,
    ) -> Result<Outgoing<'p>, ClientError> {
        let data = payload::Payload::serialize(data).map_err(|source| ClientError::Encode {
            pattern: pattern.to_string(),
            source,
        })?;
        Ok(Outgoing {
            wire_pattern,
            data,
            metadata: crate::trace::outgoing_metadata(),
            id,
        })
    }

    fn closed(&self, reason: String) -> ClientError {
        ClientError::ConnectionClosed {
            addr: self.inner.addr.clone(),
            reason,
        }
    }

    /// Sends a request and waits for its reply (Nest's `send` + `lastValueFrom`).
    ///
    /// `pattern` is a string or any JSON value (`serde_json::json!({"cmd": "sum"})`);
    /// `data` is any serialisable payload; the reply is deserialised into `R`. A service
    /// error arrives as [`ClientError::Remote`] with Nest's `err` value intact.
    ///
    /// ```no_run
    /// # async fn run(client: nestling::Client) -> Result<(), nestling::ClientError> {
    /// let total: i64 = client.send(serde_json::json!({"cmd": "sum"}), &[1, 2]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send<P, T, R>(&self, pattern: P, data: &T) -> Result<R, ClientError>
    where
        P: IntoPattern,
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.send_with_timeout(pattern, data, self.inner.request_timeout)
            .await
    }

    /// [`send`](Self::send) with a timeout for this call only (`None`: no timeout).
    pub async fn send_with_timeout<P, T, R>(
        &self,
        pattern: P,
        data: &T,
        timeout: Option<Duration>,
    ) -> Result<R, ClientError>
    where
        P: IntoPattern,
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let pattern = to_pattern(pattern)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let trace = crate::trace::current();
        let observed = Observed::call(&pattern, id, trace.as_deref());
        // The timeout covers the whole call: waiting for a slot, connecting, the reply.
        let call = self
            .call_once(&pattern, id, data)
            .instrument(observed.span.clone());
        // One future, limit or not: two `.await`s (with and without `timeout`) would each
        // keep room for the call's state in this future, doubling what every call copies.
        let call = match timeout {
            Some(limit) => Either::Left(tokio::time::timeout(limit, call)),
            None => Either::Right(call.map(Ok)),
        };
        let result = call.await.unwrap_or_else(|_elapsed| {
            Err(ClientError::Timeout {
                pattern: pattern.to_string(),
                timeout: timeout.unwrap_or_default(),
            })
        });
        observed.finish(match &result {
            Ok(_) => "ok",
            Err(ClientError::Remote { .. }) => "error",
            Err(ClientError::Timeout { .. }) => "timeout",
            Err(_) => "failed",
        });
        result
    }

    /// Starts request `id`, the same way for `send` and `send_stream`: encodes it, takes an
    /// in-flight slot, connects if need be, registers the call on the link with `register`
    /// (whose result is what the caller waits on) and sends the request. A call dropped from
    /// here on is forgotten by its guard.
    async fn start_call<T, W>(
        &self,
        pattern: &Pattern,
        id: u64,
        data: &T,
        register: impl FnOnce(&PendingCalls, u64) -> Result<W, String>,
    ) -> Result<Started<W>, ClientError>
    where
        T: Serialize + ?Sized,
    {
        let packet = self.encode(pattern, pattern.json_bytes(), data, Some(id))?;
        // The slot is held until the reply (or failure) arrives. Free slots and a live
        // connection are the usual case: taken without a wait.
        let in_flight = &self.inner.in_flight;
        let slot = match in_flight.clone().try_acquire_owned() {
            Ok(slot) => slot,
            // Boxed: the wait is rare, and its future would otherwise be part of every
            // call's future and copied with it.
            Err(_) => Box::pin(in_flight.clone().acquire_owned())
                .await
                .map_err(|_| self.closed("client closed".into()))?,
        };
        let link = self.connection().await?;
        let calls = &link.replies().calls;
        let waiting = register(calls, id).map_err(|r| self.closed(r))?;
        let guard = CallGuard {
            calls: calls.clone(),
            id,
            armed: true,
        };
        link.request(pattern, id, packet).await?;
        Ok(Started {
            link,
            guard,
            waiting,
            slot,
        })
    }

    /// One request/reply exchange (the body of [`send_with_timeout`](Self::send_with_timeout)).
    async fn call_once<T, R>(&self, pattern: &Pattern, id: u64, data: &T) -> Result<R, ClientError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let Started {
            link,
            mut guard,
            waiting: (),
            slot: _slot,
        } = self
            .start_call(pattern, id, data, PendingCalls::register)
            .await?;
        let completion = link.replies().calls.outcome(id).await;
        guard.armed = false;
        self.result_of(pattern, completion)
    }

    /// What a call's caller gets for how it ended: the value decoded into `R`, or the error.
    fn result_of<R: DeserializeOwned>(
        &self,
        pattern: &Pattern,
        completion: Completion,
    ) -> Result<R, ClientError> {
        match completion {
            Completion::Value(Some(raw)) => decode::value(pattern, &raw),
            // Completed without a value: fine for `()` / `Option<T>` replies.
            Completion::Value(None) => {
                R::deserialize(serde_json::Value::Null).map_err(|_| ClientError::EmptyReply {
                    pattern: pattern.to_string(),
                })
            }
            Completion::Error(err) => Err(decode::remote_error(pattern, &err)),
            Completion::Closed(reason) => Err(self.closed(reason)),
            Completion::NoResponders => Err(ClientError::NoResponders {
                pattern: pattern.to_string(),
            }),
        }
    }

    /// Sends a request whose reply is a stream (a Nest handler returning an Observable,
    /// or a nestling handler returning `impl Stream`): every value arrives, in order.
    ///
    /// Connection and encoding failures are returned here; service errors and a dropped
    /// connection arrive as the stream's last item.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// # async fn run(client: nestling::Client) -> Result<(), nestling::ClientError> {
    /// let items: Vec<u32> = client
    ///     .send_stream::<_, _, u32>("count", &3)
    ///     .await?
    ///     .map(|item| item.unwrap())
    ///     .collect()
    ///     .await;
    /// # Ok(()) }
    /// ```
    pub async fn send_stream<P, T, R>(
        &self,
        pattern: P,
        data: &T,
    ) -> Result<ReplyStream<R>, ClientError>
    where
        P: IntoPattern,
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let pattern = to_pattern(pattern)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let limit = self.inner.max_buffered_stream_bytes;
        let call = self
            .start_call(&pattern, id, data, |calls, id| {
                calls.register_stream(id, limit)
            })
            .await?;
        Ok(ReplyStream::new(
            call.waiting,
            call.guard,
            pattern.to_string(),
            self.inner.addr.clone(),
            call.slot,
        ))
    }

    /// Sends an event (Nest's `emit`): one frame, no reply. Returns once the frame has been
    /// handed to the socket (as Nest's `emit` completes), so dropping the client or
    /// exiting right after does not lose it. Object patterns are sent in Nest's
    /// normalised form.
    ///
    /// ```no_run
    /// # async fn run(client: nestling::Client) -> Result<(), nestling::ClientError> {
    /// client.emit("log", "求和1111").await?;
    /// # Ok(()) }
    /// ```
    pub async fn emit<P, T>(&self, pattern: P, data: &T) -> Result<(), ClientError>
    where
        P: IntoPattern,
        T: Serialize + ?Sized,
    {
        let pattern = to_pattern(pattern)?;
        let packet = self.encode(&pattern, pattern.event_json_bytes(), data, None)?;
        let link = self.connection().await?;
        link.event(&pattern, packet).await
    }
}

/// What a failed connect reports as its reason: the error's own cause, without the
/// address the event names already.
fn connect_reason(e: &ClientError) -> String {
    match e {
        ClientError::Connect { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// A RabbitMQ client's reconnect after a lost connection, paced by its backoff, until it
/// is connected, closed (its status leaves `reconnecting`) or dropped.
async fn keep_reconnecting(client: Weak<Inner>) {
    loop {
        let wait = {
            let Some(inner) = client.upgrade() else {
                return;
            };
            let client = Client { inner };
            if client.inner.hub.current() != Status::Reconnecting || client.live().is_some() {
                return;
            }
            match client.reconnect().await {
                Ok(_) => return,
                Err(ClientError::Unavailable { retry_in, .. }) => retry_in,
                Err(_) => Duration::ZERO,
            }
        };
        tokio::time::sleep(wait.max(DEFAULT_BACKOFF_BASE)).await;
    }
}

/// A call under way (from [`Client::start_call`]): registered on `link`, its request sent.
struct Started<W> {
    link: Link,
    /// Forgets the call if the caller stops waiting.
    guard: CallGuard,
    /// What the caller waits on: nothing more for `send` (the link's call table holds the
    /// outcome), the events' channel for `send_stream`.
    waiting: W,
    /// The in-flight slot, held until the call ends.
    slot: OwnedSemaphorePermit,
}

fn to_pattern(pattern: impl IntoPattern) -> Result<Pattern, ClientError> {
    pattern
        .into_pattern()
        .map_err(|source| ClientError::Encode {
            pattern: "<unserialisable pattern>".into(),
            source,
        })
}
