//! The client's RabbitMQ link (Nest's `ClientRMQ`): requests are published to the
//! service's queue with `replyTo: amq.rabbitmq.reply-to` (RabbitMQ's direct reply-to; or
//! Nest's `replyQueue`, a queue of the user's, with `reply_queue=` in the address) and
//! `correlationId` = the packet's id; replies arrive on this link's own channel and are
//! routed by that id. Events are published without either.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection};

use super::address::{redact, RmqAddress};
use super::connect::connect;
use crate::error::ClientError;
use crate::packet::{parse_reply, Wire};
use crate::pattern::Pattern;
use crate::status::Hub;
use crate::transport::{ClientTransport, ReplyRouter, TransportFuture};

/// RabbitMQ's pseudo-queue for direct replies: no queue is declared per client.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

pub(crate) struct RmqLink {
    replies: ReplyRouter,
    connection: Arc<Connection>,
    channel: Channel,
    target: RmqAddress,
    /// Properties every message starts from (see [`RmqConnector::properties`]).
    defaults: BasicProperties,
    /// The address as given, without its password, for errors.
    addr: String,
    replies_task: tokio::task::JoinHandle<()>,
    /// Reports the broker blocking the connection to the client's status, if it has one.
    _blocking: Option<super::events::Following>,
}

/// A link's broker connection and channel, for [`Client::rmq_connection`](crate::Client::rmq_connection).
pub(crate) struct RmqHandles {
    pub connection: Arc<Connection>,
    pub channel: Channel,
}

impl Drop for RmqLink {
    fn drop(&mut self) {
        self.replies_task.abort();
        let connection = self.connection.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = connection.close(200, "nestling client closed".into()).await;
            });
        }
    }
}

impl RmqLink {
    /// Connects to the broker `addr` names, declares the service's queue (as Nest's
    /// client does, unless `no_assert`) and starts consuming direct replies; the broker
    /// blocking the connection is reported to `hub`.
    pub async fn connect(
        addr: &str,
        timeout: Duration,
        hub: Arc<Hub>,
    ) -> Result<Arc<Self>, ClientError> {
        Self::connect_with(addr, timeout, BasicProperties::default(), Some(hub)).await
    }

    /// [`connect`](Self::connect), every message starting from `defaults`.
    async fn connect_with(
        addr: &str,
        timeout: Duration,
        defaults: BasicProperties,
        hub: Option<Arc<Hub>>,
    ) -> Result<Arc<Self>, ClientError> {
        let target = RmqAddress::parse(addr)?;
        let failed = |message: String| ClientError::Connect {
            addr: redact(addr),
            source: std::io::Error::other(message),
        };
        let connection = connect(&target.broker, "nestling client", timeout)
            .await
            .map_err(failed)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| failed(format!("opening a channel failed: {e}")))?;
        if target.assert_queue && target.exchange.is_none() {
            let options = QueueDeclareOptions {
                durable: target.durable,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(target.queue.as_str().into(), options, FieldTable::default())
                .await
                .map_err(|e| failed(format!("declaring queue {:?} failed: {e}", target.queue)))?;
        }
        let options = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let replies = target.reply_queue.as_deref().unwrap_or(DIRECT_REPLY_TO);
        let consumer = channel
            .basic_consume(replies.into(), "".into(), options, FieldTable::default())
            .await
            .map_err(|e| failed(format!("consuming replies from {replies:?} failed: {e}")))?;
        let router = ReplyRouter::new();
        let replies_task = tokio::spawn(route_replies(consumer, router.clone()));
        let blocking = hub.map(|hub| super::events::follow(&connection, hub, redact(addr)));
        Ok(Arc::new(RmqLink {
            replies: router,
            connection: Arc::new(connection),
            channel,
            target,
            defaults,
            addr: redact(addr),
            replies_task,
            _blocking: blocking,
        }))
    }

    /// The link's connection and channel.
    pub fn handles(&self) -> RmqHandles {
        RmqHandles {
            connection: self.connection.clone(),
            channel: self.channel.clone(),
        }
    }

    /// Where a packet of `pattern` is published: the service's queue, or with an exchange
    /// (Nest's `wildcards`, fanout) that exchange with the pattern as routing key.
    fn destination(&self, pattern: &Pattern) -> (ShortString, ShortString) {
        match &self.target.exchange {
            Some(exchange) => (exchange.as_str().into(), pattern.channel().into()),
            None => ("".into(), self.target.queue.as_str().into()),
        }
    }

    /// A message's properties: the defaults, with Nest's `headers: {}` and delivery mode
    /// (`persistent`) where the defaults leave them unset.
    fn properties(&self) -> BasicProperties {
        let mut properties = self.defaults.clone();
        if properties.headers().is_none() {
            properties = properties.with_headers(FieldTable::default());
        }
        if properties.delivery_mode().is_none() {
            properties = properties.with_delivery_mode(if self.target.persistent { 2 } else { 1 });
        }
        properties
    }

    async fn publish(
        &self,
        pattern: &Pattern,
        packet: Bytes,
        properties: BasicProperties,
    ) -> Result<(), ClientError> {
        let (exchange, key) = self.destination(pattern);
        self.channel
            .basic_publish(
                exchange,
                key,
                BasicPublishOptions::default(),
                &packet,
                properties,
            )
            .await
            .map(drop)
            .map_err(|e| {
                let reason = format!("RabbitMQ publish failed: {e}");
                self.replies.close_all(&reason);
                ClientError::ConnectionClosed {
                    addr: self.addr.clone(),
                    reason,
                }
            })
    }
}

impl ClientTransport for RmqLink {
    fn wire(&self) -> Wire {
        Wire::Bare
    }

    fn replies(&self) -> &ReplyRouter {
        &self.replies
    }

    fn request<'a>(
        &'a self,
        pattern: &'a Pattern,
        id: u64,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        let properties = self
            .properties()
            .with_reply_to(
                self.target
                    .reply_queue
                    .as_deref()
                    .unwrap_or(DIRECT_REPLY_TO)
                    .into(),
            )
            .with_correlation_id(id.to_string().into());
        Box::pin(self.publish(pattern, packet, properties))
    }

    fn event<'a>(
        &'a self,
        pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(self.publish(pattern, packet, self.properties()))
    }

    fn is_closed(&self) -> bool {
        self.replies.is_closed() || self.replies_task.is_finished()
    }

    fn close(&self, reason: &str) {
        self.replies.close_all(reason);
        self.replies_task.abort();
    }
}

/// Routes every direct reply to the call its `correlationId` names.
async fn route_replies(mut consumer: lapin::Consumer, replies: ReplyRouter) {
    while let Some(delivery) = consumer.next().await {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(e) => {
                replies.close_all(&format!("the RabbitMQ connection was lost: {e}"));
                return;
            }
        };
        let id = delivery
            .properties
            .correlation_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok());
        let Some(id) = id else {
            tracing::warn!("a RabbitMQ reply without a correlation id of ours was dropped");
            continue;
        };
        match parse_reply(&Bytes::from(delivery.data)) {
            Ok(reply) => replies.deliver_to(id, reply),
            Err(e) => {
                tracing::warn!("unusable RabbitMQ reply: {e}");
                replies.fail(id, &format!("the reply was unusable: {e}"));
            }
        }
    }
    replies.close_all("the RabbitMQ connection was closed");
}

/// Opens RabbitMQ links whose messages carry properties of your choosing: Nest's
/// `ClientRMQ` `headers` option, and what `RmqRecordBuilder.setOptions` sets (`priority`,
/// `expiration`, `headers`, `contentType`, …). Requests still get their own `replyTo` and
/// `correlationId`. Plug it in with [`ClientBuilder::transport`](crate::ClientBuilder::transport);
/// a client per set of properties shares nothing but the broker.
///
/// ```no_run
/// # async fn run() -> Result<(), nestling::ClientError> {
/// use nestling::rmq::lapin::{types::{AMQPValue, FieldTable}, BasicProperties};
/// use nestling::rmq::RmqConnector;
///
/// let mut headers = FieldTable::default();
/// headers.insert("x-tenant".into(), AMQPValue::LongString("acme".into()));
/// let urgent = nestling::Client::builder("amqp://127.0.0.1:5672?queue=user_service")
///     .transport(RmqConnector::new().properties(
///         BasicProperties::default().with_headers(headers).with_priority(9),
///     ))
///     .build();
/// let sum: i64 = urgent.send("sum", &[1, 2, 3]).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RmqConnector {
    properties: BasicProperties,
    timeout: Duration,
}

impl Default for RmqConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl RmqConnector {
    /// Nest's defaults: `headers: {}`, delivery mode from the address's `persistent`.
    pub fn new() -> Self {
        RmqConnector {
            properties: BasicProperties::default(),
            timeout: crate::client::DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The properties every message starts from.
    ///
    /// ```
    /// use nestling::rmq::{lapin::BasicProperties, RmqConnector};
    /// let expiring = RmqConnector::new().properties(
    ///     BasicProperties::default().with_expiration("5000".into()), // dropped after 5 s
    /// );
    /// ```
    pub fn properties(mut self, properties: BasicProperties) -> Self {
        self.properties = properties;
        self
    }

    /// How long connecting to the broker may take (default: the client's default, 5 s).
    ///
    /// ```
    /// let patient = nestling::rmq::RmqConnector::new()
    ///     .connect_timeout(std::time::Duration::from_secs(30));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl crate::transport::ClientConnector for RmqConnector {
    fn connect<'a>(
        &'a self,
        addr: &'a str,
    ) -> TransportFuture<'a, Result<Arc<dyn ClientTransport>, ClientError>> {
        Box::pin(async move {
            let link =
                RmqLink::connect_with(addr, self.timeout, self.properties.clone(), None).await?;
            let link: Arc<dyn ClientTransport> = link;
            Ok(link)
        })
    }
}
