//! Serving over RabbitMQ: Nest's `ServerRMQ`. One queue per service; every instance
//! consumes it (competing consumers: each message reaches one instance); a message is a
//! Nest packet routed by its `pattern`; a request's replies go to its `replyTo` queue with
//! its `correlationId`.
//!
//! delivery → packet → route → handler → reply to `replyTo` → acknowledge.

use std::future::Future;
use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::ExchangeKind;

use super::address::redact;
use super::consume::{RmqTransport, Session};
use crate::error::ServerError;
use crate::server::Server;
use crate::status::{Event, Status};

/// Default number of unacknowledged messages the broker hands one instance at a time
/// ([`RmqServe::prefetch_count`]).
pub const DEFAULT_PREFETCH_COUNT: u16 = 64;

/// Where and how a [`Server`] serves over RabbitMQ (Nest's `{ transport: Transport.RMQ,
/// options: { urls, queue, queueOptions, prefetchCount, noAck, … } }`).
///
/// Defaults, and where they differ from Nest's:
/// - acknowledgements **on** (Nest: `noAck: true`): a message is acknowledged once its
///   handler has finished and its reply has been published, so an instance killed
///   mid-handler loses nothing — the broker redelivers the message to another instance.
///   Nest with `noAck: false` leaves the acknowledgement to each handler; nestling does it
///   for you. [`no_ack(true)`](Self::no_ack) gives Nest's default (the broker drops a
///   message as soon as it is delivered).
/// - `prefetchCount` [`DEFAULT_PREFETCH_COUNT`] (Nest: 0, unlimited): bounds the messages
///   an instance holds, so a busy instance leaves the rest to the others.
/// - the queue is declared `durable` (amqplib's default for Nest's `queueOptions: {}`).
///
/// ```
/// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
///     .prefetch_count(32);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RmqServe {
    pub(super) url: String,
    pub(super) queue: String,
    pub(super) queue_options: QueueDeclareOptions,
    pub(super) queue_arguments: FieldTable,
    pub(super) no_assert: bool,
    pub(super) prefetch_count: u16,
    pub(super) no_ack: bool,
    pub(super) exchange: Option<String>,
    pub(super) exchange_kind: ExchangeKind,
    pub(super) routing_key: Option<String>,
    pub(super) wildcards: bool,
    pub(super) consumer_tag: String,
    pub(super) connect_timeout: Duration,
    pub(super) reconnect: (Duration, Duration),
}

impl RmqServe {
    /// Consumes `queue` on the broker at `url` (`amqp://user:pass@host:5672/vhost`).
    pub fn new(url: impl Into<String>, queue: impl Into<String>) -> Self {
        RmqServe {
            url: url.into(),
            queue: queue.into(),
            queue_options: QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            queue_arguments: FieldTable::default(),
            no_assert: false,
            prefetch_count: DEFAULT_PREFETCH_COUNT,
            no_ack: false,
            exchange: None,
            exchange_kind: ExchangeKind::Topic,
            routing_key: None,
            wildcards: false,
            consumer_tag: String::new(),
            connect_timeout: Duration::from_secs(10),
            reconnect: (Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// The queue's declaration (Nest's `queueOptions`): flags and arguments
    /// (`x-message-ttl`, `x-dead-letter-exchange`, …). They must match the queue's existing
    /// declaration, or the broker refuses it.
    ///
    /// ```
    /// use nestling::rmq::lapin::{options::QueueDeclareOptions, types::{AMQPValue, FieldTable}};
    /// let mut arguments = FieldTable::default();
    /// arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("dead".into()));
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .queue_options(QueueDeclareOptions { durable: true, ..Default::default() }, arguments);
    /// ```
    pub fn queue_options(mut self, options: QueueDeclareOptions, arguments: FieldTable) -> Self {
        self.queue_options = options;
        self.queue_arguments = arguments;
        self
    }

    /// Consumes the queue without declaring it (Nest's `noAssert`): for queues declared
    /// elsewhere with options this server does not know.
    ///
    /// ```
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .no_assert(true); // the queue is declared by ops, with its own arguments
    /// ```
    pub fn no_assert(mut self, yes: bool) -> Self {
        self.no_assert = yes;
        self
    }

    /// Unacknowledged messages the broker hands this instance at once (Nest's
    /// `prefetchCount`; 0 means unlimited). The work in flight is also bounded by
    /// [`max_in_flight_per_connection`](crate::ServerBuilder::max_in_flight_per_connection).
    ///
    /// ```
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .prefetch_count(16);
    /// ```
    pub fn prefetch_count(mut self, count: u16) -> Self {
        self.prefetch_count = count;
        self
    }

    /// `true`: the broker forgets a message once delivered (Nest's default `noAck: true`):
    /// faster, but a crash loses the messages the instance held.
    ///
    /// ```
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .no_ack(true); // Nest's default: fastest, at most once
    /// ```
    pub fn no_ack(mut self, yes: bool) -> Self {
        self.no_ack = yes;
        self
    }

    /// Binds the queue to `exchange` of type `kind` (Nest 11's `exchange` /
    /// `exchangeType`), declared durable; with a [`routing_key`](Self::routing_key) or
    /// `fanout`, the queue receives what is published there.
    ///
    /// ```
    /// use nestling::rmq::{lapin::ExchangeKind, RmqServe};
    /// let rmq = RmqServe::new("amqp://127.0.0.1:5672", "audit")
    ///     .exchange("events", ExchangeKind::Fanout);
    /// ```
    pub fn exchange(mut self, exchange: impl Into<String>, kind: ExchangeKind) -> Self {
        self.exchange = Some(exchange.into());
        self.exchange_kind = kind;
        self
    }

    /// The binding key of the queue on its [`exchange`](Self::exchange) (Nest's `routingKey`).
    ///
    /// ```
    /// use nestling::rmq::{lapin::ExchangeKind, RmqServe};
    /// let rmq = RmqServe::new("amqp://127.0.0.1:5672", "billing")
    ///     .exchange("events", ExchangeKind::Topic)
    ///     .routing_key("invoice.*");
    /// ```
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// Nest 11's `wildcards`: binds the queue to the exchange (the queue's name unless
    /// [`exchange`](Self::exchange) is set; a topic exchange) once per pattern, and lets a
    /// pattern with `*` (one word) or `#` (the rest) handle every packet whose pattern
    /// matches, as `user.*` handles `user.created`.
    ///
    /// ```
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .wildcards(true); // a handler for "user.*" receives "user.created"
    /// ```
    pub fn wildcards(mut self, yes: bool) -> Self {
        self.wildcards = yes;
        self
    }

    /// The consumer tag (Nest's `consumerTag`); the broker picks one by default.
    ///
    /// ```
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .consumer_tag("user_service-1");
    /// ```
    pub fn consumer_tag(mut self, tag: impl Into<String>) -> Self {
        self.consumer_tag = tag.into();
        self
    }

    /// How long connecting to the broker may take (default 10 s).
    ///
    /// ```
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .connect_timeout(std::time::Duration::from_secs(3));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Pacing of reconnects after the broker connection is lost: the first wait, doubled
    /// after each failure up to `max` (default 100 ms … 5 s).
    ///
    /// ```
    /// use std::time::Duration;
    /// let rmq = nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service")
    ///     .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(10));
    /// ```
    pub fn reconnect_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.reconnect = (base, max);
        self
    }

    /// The exchange the queue is bound to, if any: Nest's rule (`exchange`, or the queue
    /// itself with `wildcards`).
    pub(super) fn exchange_name(&self) -> Option<&str> {
        match (&self.exchange, self.wildcards) {
            (Some(exchange), _) => Some(exchange),
            (None, true) => Some(&self.queue),
            (None, false) => None,
        }
    }

    pub(super) fn failed(&self, message: String) -> ServerError {
        ServerError::Rmq {
            url: redact(&self.url),
            message,
        }
    }
}

/// A server consuming its RabbitMQ queue, ready to serve (from [`Server::listen_rmq`]).
pub struct RmqListening {
    server: Server,
    transport: RmqTransport,
}

impl std::fmt::Debug for RmqListening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RmqListening")
            .field("queue", &self.queue())
            .finish()
    }
}

impl Server {
    /// Connects to RabbitMQ, declares the queue (and exchange and bindings, if set) and
    /// starts consuming it. The same controllers serve TCP, NATS and RabbitMQ alike; only
    /// this call differs. If the connection is lost later, the server reconnects by
    /// itself, with backoff, and consumes again.
    ///
    /// Fails with [`ServerError::Rmq`] if the broker is unreachable or refuses the
    /// declarations (a queue declared before with other options, say).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// use nestling::rmq::RmqServe;
    /// nestling::Server::builder()
    ///     .build()?
    ///     .listen_rmq(RmqServe::new("amqp://127.0.0.1:5672", "user_service"))
    ///     .await?
    ///     .serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await
    /// # }
    /// ```
    pub async fn listen_rmq(self, rmq: RmqServe) -> Result<RmqListening, ServerError> {
        self.lifecycle.start().await?;
        let dispatcher = self.dispatcher();
        let session = Session::open(&rmq, &dispatcher)
            .await
            .map_err(|e| rmq.failed(e))?;
        Ok(RmqListening {
            server: self,
            transport: RmqTransport::new(rmq, session),
        })
    }
}

impl RmqListening {
    /// The queue consumed.
    pub fn queue(&self) -> &str {
        self.transport.queue()
    }

    /// The server's status, as Nest 11's `server.status` over RabbitMQ (`RmqStatus`):
    /// `connected` while consuming; `disconnected` then `reconnecting` when the broker
    /// connection is lost (the server reconnects by itself, with backoff, and consumes
    /// again); `connected` once back; `blocked` while the broker blocks the connection (a
    /// memory or disk alarm); `disconnected` once serving has stopped. Take it before
    /// serving.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// use nestling::rmq::RmqServe;
    /// use nestling::status::Status;
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_rmq(RmqServe::new("amqp://127.0.0.1:5672", "user_service"))
    ///     .await?;
    /// let mut status = listening.status();
    /// assert_eq!(*status.borrow(), Status::Connected);
    /// tokio::spawn(listening.serve());
    /// status.wait_for(|s| *s == Status::Reconnecting).await.ok(); // the broker went away
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> tokio::sync::watch::Receiver<Status> {
        self.transport.hub.status()
    }

    /// The server's status transitions and connection errors (Nest's
    /// `server.on('error', …)`): the connection lost (with lapin's reason), each failed
    /// reconnect.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_rmq(nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service"))
    ///     .await?;
    /// let mut events = listening.events();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         eprintln!("RabbitMQ: {event}");
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.transport.hub.events()
    }

    /// The broker connection and channel the server consumes on (Nest's
    /// `server.unwrap<AmqpConnectionManager>()`), as opened by
    /// [`listen_rmq`](Server::listen_rmq); after a reconnect the server uses new ones.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use nestling::rmq::lapin::{options::QueueDeclareOptions, types::FieldTable};
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_rmq(nestling::rmq::RmqServe::new("amqp://127.0.0.1:5672", "user_service"))
    ///     .await?;
    /// let (_connection, channel) = listening.connection();
    /// channel.queue_declare("audit".into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    /// # Ok(()) }
    /// ```
    pub fn connection(&self) -> (&lapin::Connection, &lapin::Channel) {
        self.transport.connection()
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), ServerError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: cancels the consumer
    /// (the broker sends new messages to the other instances), handles the messages
    /// already delivered, waits up to
    /// [`ServerConfig::shutdown_grace`](crate::ServerConfig::shutdown_grace) for them to
    /// finish and be acknowledged, and closes the connection (whatever is still
    /// unacknowledged then goes back to the queue).
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let RmqListening { server, transport } = self;
        server.serve_on(transport, signal).await
    }
}
