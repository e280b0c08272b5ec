//! The RabbitMQ serve loop: take a delivery, hand its packet to the core, publish the
//! replies ready at once, settle the delivery when everything it started has finished;
//! reconnect (with backoff) when the broker connection is lost.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, QueueBindOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use tokio_util::task::TaskTracker;

use super::address::redact;
use super::connect::connect;
use super::events;
use super::message::RmqMessage;
use super::server::RmqServe;
use super::settle::{Settle, Verdict};
use super::topic;
use crate::client::backoff::Backoff;
use crate::codec::FrameText;
use crate::error::ServerError;
use crate::packet::Wire;
use crate::status::{Hub, Status, TransportError};
use crate::transport::tcp::StoppedOnDrop;
use crate::transport::{Dispatcher, Inbox, Origin, ReplySink, Shutdown, Subscription, Transport};

/// One broker connection, its channel and its consumer on the service queue.
pub(super) struct Session {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

impl Session {
    /// Connects and declares what Nest's `ServerRMQ.setupChannel` declares: the queue, the
    /// exchange and its bindings, the prefetch count, then the consumer.
    pub async fn open(rmq: &RmqServe, dispatcher: &Dispatcher) -> Result<Session, String> {
        let connection = connect(&rmq.url, "nestling server", rmq.connect_timeout).await?;
        let failed = |what: &str, e: lapin::Error| format!("{what} failed: {e}");
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| failed("opening a channel", e))?;
        let queue: ShortString = rmq.queue.as_str().into();
        if !rmq.no_assert {
            channel
                .queue_declare(
                    queue.clone(),
                    rmq.queue_options,
                    rmq.queue_arguments.clone(),
                )
                .await
                .map_err(|e| failed(&format!("declaring queue {:?}", rmq.queue), e))?;
        }
        if let Some(exchange) = rmq.exchange_name() {
            let exchange: ShortString = exchange.into();
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    exchange.clone(),
                    rmq.exchange_kind.clone(),
                    options,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| failed(&format!("declaring exchange {exchange}"), e))?;
            let fanout = rmq.exchange_kind == ExchangeKind::Fanout;
            let mut keys: Vec<String> = Vec::new();
            if fanout {
                keys.push(String::new());
            } else if let Some(key) = &rmq.routing_key {
                keys.push(key.clone());
            }
            if rmq.wildcards {
                keys.extend(
                    dispatcher
                        .subscriptions()
                        .iter()
                        .map(|s| s.key().to_owned()),
                );
            }
            for key in keys {
                channel
                    .queue_bind(
                        queue.clone(),
                        exchange.clone(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| failed(&format!("binding the queue with key {key:?}"), e))?;
            }
        }
        channel
            .basic_qos(rmq.prefetch_count, BasicQosOptions::default())
            .await
            .map_err(|e| failed("setting the prefetch count", e))?;
        let options = BasicConsumeOptions {
            no_ack: rmq.no_ack,
            ..BasicConsumeOptions::default()
        };
        let consumer = channel
            .basic_consume(
                queue,
                rmq.consumer_tag.as_str().into(),
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| failed(&format!("consuming queue {:?}", rmq.queue), e))?;
        Ok(Session {
            connection,
            channel,
            consumer,
        })
    }
}

/// The RabbitMQ transport: a session, and how to open another one.
pub(super) struct RmqTransport {
    rmq: RmqServe,
    session: Session,
    /// The connection's status (Nest's `RmqStatus`) and errors.
    pub hub: Arc<Hub>,
}

impl RmqTransport {
    pub fn new(rmq: RmqServe, session: Session) -> Self {
        let hub = Hub::new(Status::Connected);
        RmqTransport { rmq, session, hub }
    }

    pub fn queue(&self) -> &str {
        &self.rmq.queue
    }

    /// The current session's connection and channel.
    pub fn connection(&self) -> (&Connection, &Channel) {
        (&self.session.connection, &self.session.channel)
    }
}

/// Why consuming stopped.
enum Ended {
    Shutdown,
    Lost(String),
}

impl Transport for RmqTransport {
    async fn serve(self, dispatcher: Dispatcher, shutdown: Shutdown) -> Result<(), ServerError> {
        let RmqTransport {
            rmq,
            mut session,
            hub,
        } = self;
        let _stopped = StoppedOnDrop(&hub);
        let broker = redact(&rmq.url);
        let mut blocking = events::follow(&session.connection, hub.clone(), broker.clone());
        tracing::info!(queue = %rmq.queue, "nestling microservice consuming RabbitMQ");
        let mut intake = Intake::new(&rmq, &dispatcher);
        loop {
            match intake.consume(&mut session, &shutdown).await {
                Ended::Shutdown => break,
                Ended::Lost(reason) => {
                    tracing::warn!(queue = %rmq.queue, "RabbitMQ connection lost ({reason}); reconnecting");
                    hub.set(Status::Disconnected);
                    hub.error(TransportError::Lost {
                        addr: broker.clone(),
                        reason,
                    });
                    hub.set(Status::Reconnecting);
                    let Some(next) = reopen(&rmq, &dispatcher, &shutdown, &hub).await else {
                        break;
                    };
                    session = next;
                    blocking = events::follow(&session.connection, hub.clone(), broker.clone());
                    hub.set(Status::Connected);
                    tracing::info!(queue = %rmq.queue, "RabbitMQ connection restored, consuming again");
                }
            }
        }
        drop(blocking);
        let grace = dispatcher.config().shutdown_grace;
        if !intake.inbox.drain(grace).await {
            tracing::warn!("shutdown grace period over, stopping with requests still running");
        }
        intake.settling.close();
        if tokio::time::timeout(grace, intake.settling.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over, stopping with acknowledgements unsent");
        }
        // Unacknowledged deliveries go back to the queue when the connection closes.
        if let Err(e) = session
            .connection
            .close(200, "nestling server stopping".into())
            .await
        {
            tracing::debug!("closing the RabbitMQ connection: {e}");
        }
        tracing::info!("nestling microservice stopped (RabbitMQ)");
        Ok(())
    }
}

/// Opens a new session, waiting between attempts; `None` if shutdown was requested first.
async fn reopen(
    rmq: &RmqServe,
    dispatcher: &Dispatcher,
    shutdown: &Shutdown,
    hub: &Hub,
) -> Option<Session> {
    let (base, max) = rmq.reconnect;
    let mut backoff = Backoff::new(base, max);
    loop {
        if let Some((wait, _)) = backoff.blocked(Instant::now()) {
            tokio::select! {
                () = shutdown.requested() => return None,
                () = tokio::time::sleep(wait) => {}
            }
        }
        tokio::select! {
            () = shutdown.requested() => return None,
            opened = Session::open(rmq, dispatcher) => match opened {
                Ok(session) => return Some(session),
                Err(e) => {
                    tracing::warn!(queue = %rmq.queue, "reconnecting to RabbitMQ failed: {e}");
                    hub.error(TransportError::Connect {
                        addr: redact(&rmq.url),
                        reason: e.clone(),
                    });
                    backoff.failed(Instant::now(), e);
                }
            }
        }
    }
}

/// Hands deliveries to the core: the part of the loop that outlives a session.
struct Intake {
    inbox: Inbox,
    ready: BytesMut,
    no_ack: bool,
    /// Handlers whose pattern is a topic (`user.*`), with `wildcards`.
    wildcards: Vec<Subscription>,
    dispatcher: Dispatcher,
    /// The acknowledgements on their way to the broker.
    settling: TaskTracker,
    /// Replies ready at once, being published.
    publishing: FuturesUnordered<BoxFuture<'static, ()>>,
}

/// Replies being published at once before the loop waits for one of them to go out.
const MAX_PUBLISHING: usize = 256;

impl Intake {
    fn new(rmq: &RmqServe, dispatcher: &Dispatcher) -> Self {
        let wildcards = if rmq.wildcards {
            dispatcher
                .subscriptions()
                .into_iter()
                .filter(|s| topic::is_wildcard(s.key()))
                .collect()
        } else {
            Vec::new()
        };
        Intake {
            inbox: dispatcher.inbox(),
            ready: BytesMut::new(),
            no_ack: rmq.no_ack,
            wildcards,
            dispatcher: dispatcher.clone(),
            settling: TaskTracker::new(),
            publishing: FuturesUnordered::new(),
        }
    }

    /// Takes deliveries until the session ends or shutdown is requested (then the
    /// consumer is cancelled and what was already delivered is still handled), then waits
    /// for the replies still being published.
    async fn consume(&mut self, session: &mut Session, shutdown: &Shutdown) -> Ended {
        let ended = self.take_deliveries(session, shutdown).await;
        while self.publishing.next().await.is_some() {}
        ended
    }

    async fn take_deliveries(&mut self, session: &mut Session, shutdown: &Shutdown) -> Ended {
        let mut cancelling = false;
        loop {
            let next = tokio::select! {
                () = shutdown.requested(), if !cancelling => {
                    cancelling = true;
                    let tag = session.consumer.tag();
                    if let Err(e) = session.channel.basic_cancel(tag, BasicCancelOptions::default()).await {
                        tracing::warn!("could not cancel the RabbitMQ consumer: {e}");
                        return Ended::Shutdown;
                    }
                    continue;
                }
                Some(()) = self.publishing.next(), if !self.publishing.is_empty() => continue,
                next = session.consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    // Backpressure: no further delivery is taken until there is room, both
                    // for the work and for the replies on their way out.
                    self.inbox.reserve().await;
                    while self.publishing.len() >= MAX_PUBLISHING {
                        self.publishing.next().await;
                    }
                    self.handle(&session.channel, delivery);
                }
                Some(Err(e)) => return Ended::Lost(e.to_string()),
                None if cancelling => return Ended::Shutdown,
                None => return Ended::Lost("the broker cancelled the consumer".into()),
            }
        }
    }

    /// One delivery: its packet to the core, the replies ready at once to `replyTo`, and
    /// its settlement once everything it started has finished.
    fn handle(&mut self, channel: &Channel, delivery: Delivery) {
        let Delivery {
            exchange,
            routing_key,
            redelivered,
            properties,
            data,
            acker,
            ..
        } = delivery;
        let body = Bytes::from(data);
        let (routing, id_suffix) = self.route(&body);
        let verdict = match routing {
            Routing::Routed | Routing::Wildcard(_) => Verdict::Ack,
            Routing::Unrouted | Routing::NotAPacket => Verdict::Reject,
        };
        let settle = Settle::new(acker, self.no_ack, verdict, &self.settling);
        if let (Routing::Unrouted, false) = (&routing, self.no_ack) {
            // Nest's RMQ_NO_MESSAGE_HANDLER / RMQ_NO_EVENT_HANDLER warning.
            tracing::warn!(queue = %routing_key, "rejecting a RabbitMQ message no handler takes (it is not redelivered)");
        }
        if let Routing::NotAPacket = routing {
            tracing::warn!(queue = %routing_key, "rejecting a RabbitMQ message that is not a Nest packet (JSON with a `pattern`)");
            return;
        }
        let sink = RmqReply {
            channel: channel.clone(),
            reply_to: properties.reply_to().clone(),
            correlation_id: properties.correlation_id().clone(),
            id_suffix,
            _settle: settle.clone(),
        };
        let origin = Origin::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0))).with_extension(
            Arc::new(RmqMessage {
                exchange: exchange.as_str().to_owned(),
                routing_key: routing_key.as_str().to_owned(),
                redelivered,
                properties,
            }),
        );
        let handled = match routing {
            Routing::Wildcard(i) => {
                let subscription = &self.wildcards[i];
                self.inbox.handle_message_tracked(
                    &origin,
                    subscription,
                    subscription.key(),
                    body.clone(),
                    &mut self.ready,
                    || sink.clone(),
                )
            }
            _ => match FrameText::try_from(body) {
                Ok(frame) => {
                    self.inbox
                        .handle_frame_tracked(&origin, &frame, &mut self.ready, || sink.clone())
                }
                Err(e) => {
                    tracing::warn!("rejecting a RabbitMQ message that is not UTF-8: {e}");
                    return;
                }
            },
        };
        let completion = match handled {
            Ok(completion) => completion,
            Err(e) => {
                tracing::warn!("rejecting a RabbitMQ message that is not JSON: {e}");
                return;
            }
        };
        if !self.ready.is_empty() {
            // Published beside the next deliveries rather than before them: the loop does
            // not wait for lapin's I/O. The sink holds the delivery's settlement, so it is
            // acknowledged once its reply is out.
            let packet = self.ready.split().freeze();
            self.publishing.push(Box::pin(async move {
                sink.send(packet).await;
            }));
        } else {
            drop(sink);
        }
        if !completion.is_done() {
            tokio::spawn(async move {
                completion.finished().await;
                drop(settle);
            });
        }
    }

    /// Where a packet goes, read off its `pattern` before it is handed over (an
    /// unroutable message is rejected rather than acknowledged, as Nest nacks it), and the
    /// end its replies will have, `,"id":ID}` (see [`RmqReply`]).
    fn route(&self, body: &[u8]) -> (Routing, Option<Bytes>) {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            pattern: Option<&'a RawValue>,
            #[serde(borrow)]
            id: Option<&'a RawValue>,
            #[serde(rename = "data")]
            _data: Option<IgnoredAny>,
        }
        let Ok(Head {
            pattern: Some(pattern),
            id,
            ..
        }) = serde_json::from_slice::<Head>(body)
        else {
            return (Routing::NotAPacket, None);
        };
        let id_suffix = id.map(|id| Bytes::from(format!(",\"id\":{}}}", id.get())));
        if self.dispatcher.handles(pattern.get().as_bytes()) {
            return (Routing::Routed, id_suffix);
        }
        let text = serde_json::from_str::<String>(pattern.get()).ok();
        let wildcard = text.as_deref().and_then(|name| {
            self.wildcards
                .iter()
                .position(|s| topic::matches(s.key(), name))
        });
        (
            wildcard.map_or(Routing::Unrouted, Routing::Wildcard),
            id_suffix,
        )
    }
}

/// How a delivery's packet is routed.
enum Routing {
    /// By its pattern.
    Routed,
    /// To the wildcard subscription at this index.
    Wildcard(usize),
    /// A packet no handler takes: requests get Nest's no-handler reply.
    Unrouted,
    /// Not JSON, or no `pattern`.
    NotAPacket,
}

/// A request's reply queue and correlation id (Nest's `replyTo` and `correlationId`); it
/// holds the delivery's settlement, so the delivery is acknowledged after the last reply.
///
/// Nest's RMQ replies are addressed by `correlationId` alone and carry no `id` (but for the
/// no-handler reply): the core's `,"id":ID}` ending is cut to `}`.
#[derive(Clone)]
struct RmqReply {
    channel: Channel,
    reply_to: Option<ShortString>,
    correlation_id: Option<ShortString>,
    id_suffix: Option<Bytes>,
    _settle: Option<Arc<Settle>>,
}

impl RmqReply {
    /// `packet` as Nest's `ServerRMQ` writes it: without the `id` the core appended.
    fn unaddressed(&self, packet: Bytes) -> Bytes {
        let Some(suffix) = &self.id_suffix else {
            return packet;
        };
        if packet.len() <= suffix.len() + 1 || !packet.ends_with(suffix) {
            return packet;
        }
        let mut packet = packet
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
        packet.truncate(packet.len() - suffix.len());
        packet.extend_from_slice(b"}");
        packet.freeze()
    }
}

impl ReplySink for RmqReply {
    const WIRE: Wire = Wire::Bare;
    async fn send(&self, packet: Bytes) -> bool {
        let Some(reply_to) = &self.reply_to else {
            // A request without `replyTo`: Nest runs the handler and publishes nowhere.
            return false;
        };
        let mut properties = BasicProperties::default().with_headers(FieldTable::default());
        if let Some(id) = &self.correlation_id {
            properties = properties.with_correlation_id(id.clone());
        }
        let packet = self.unaddressed(packet);
        let published = self
            .channel
            .basic_publish(
                "".into(),
                reply_to.clone(),
                BasicPublishOptions::default(),
                &packet,
                properties,
            )
            .await;
        match published {
            Ok(_confirm) => true,
            Err(e) => {
                tracing::warn!(%reply_to, "could not publish a reply: {e}");
                false
            }
        }
    }
}
