//! Serving over NATS: Nest's `ServerNats`. Every route is subscribed on its subject —
//! Nest's normalised pattern (`sum`, `{"cmd":"sum"}`) — optionally in a queue group, so
//! several instances share the load. Each message is one packet (bare JSON); a request's
//! replies are published to the message's reply subject.
//!
//! message → packet → route (the subscription's) → handler → reply subject.

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SelectAll, StreamExt};
use tokio::sync::Semaphore;

use super::dispatch::{handle_event, handle_request, Origin, ReplySink, Slot};
use super::Server;
use crate::context::{Frame, NatsOrigin, PacketFields};
use crate::error::ServerError;
use crate::packet::{parse_inbound_spans, Inbound, Span, Wire};
use crate::router::Route;

/// Where and how a [`Server`] serves over NATS (Nest's `{ transport: Transport.NATS,
/// options: { servers, queue } }`).
///
/// ```
/// let nats = nestling::nats::NatsServe::new("nats://127.0.0.1:4222").queue("user-service");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NatsServe {
    url: String,
    queue: Option<String>,
    client: Option<async_nats::Client>,
}

impl NatsServe {
    /// Serves through the NATS server(s) at `url` (`nats://host:port`; several separated
    /// by commas).
    pub fn new(url: impl Into<String>) -> Self {
        NatsServe {
            url: url.into(),
            queue: None,
            client: None,
        }
    }

    /// Serves through a connection you opened yourself with [`async_nats`] (for
    /// credentials, TLS or other connection options).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use nestling::nats::{async_nats, NatsServe};
    /// let client = async_nats::ConnectOptions::with_user_and_password("svc".into(), "pw".into())
    ///     .connect("nats://127.0.0.1:4222")
    ///     .await?;
    /// let nats = NatsServe::with_client(client).queue("user-service");
    /// # Ok(()) }
    /// ```
    pub fn with_client(client: async_nats::Client) -> Self {
        NatsServe {
            url: "<given client>".into(),
            queue: None,
            client: Some(client),
        }
    }

    /// Subscribes every pattern in this queue group (Nest's `queue` option): each message
    /// goes to one member of the group, so instances sharing a group share the load.
    /// Without a group every instance receives every message.
    ///
    /// ```
    /// // Run this service N times: each request reaches one of the N.
    /// let nats = nestling::nats::NatsServe::new("nats://127.0.0.1:4222").queue("user-service");
    /// ```
    pub fn queue(mut self, group: impl Into<String>) -> Self {
        self.queue = Some(group.into());
        self
    }
}

/// A server subscribed on NATS, ready to serve (from [`Server::listen_nats`]).
pub struct NatsListening {
    server: Server,
    client: async_nats::Client,
    subjects: Vec<String>,
    subscriptions: Vec<(Arc<Route>, async_nats::Subscriber)>,
}

impl std::fmt::Debug for NatsListening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsListening")
            .field("subjects", &self.subjects)
            .finish()
    }
}

impl Server {
    /// Connects to NATS and subscribes every pattern (message and event handlers) on its
    /// subject, in `nats`' queue group if one is set. The same controllers serve TCP and
    /// NATS alike; only this call differs.
    ///
    /// Fails with [`ServerError::Nats`] if NATS is unreachable, and with
    /// [`ServerError::InvalidSubject`] for a pattern NATS cannot carry (whitespace in it,
    /// empty tokens, or a `true`/`null` pattern).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// use nestling::nats::NatsServe;
    /// nestling::Server::builder()
    ///     .build()?
    ///     .listen_nats(NatsServe::new("nats://127.0.0.1:4222").queue("user-service"))
    ///     .await?
    ///     .serve_with_shutdown(async { let _ = tokio::signal::ctrl_c().await; })
    ///     .await
    /// # }
    /// ```
    pub async fn listen_nats(self, nats: NatsServe) -> Result<NatsListening, ServerError> {
        let url = nats.url.clone();
        let failed = |e: &dyn std::fmt::Display| ServerError::Nats {
            url: url.clone(),
            message: e.to_string(),
        };
        let client = match nats.client {
            Some(client) => client,
            None => async_nats::ConnectOptions::new()
                .name("nestling server")
                .connect(nats.url.as_str())
                .await
                .map_err(|e| failed(&e))?,
        };
        let mut subjects = Vec::new();
        let mut subscriptions = Vec::new();
        for (key, route) in self.router.routes() {
            check_subject(key, route)?;
            let subscription = match &nats.queue {
                Some(group) => client.queue_subscribe(key.clone(), group.clone()).await,
                None => client.subscribe(key.clone()).await,
            }
            .map_err(|e| failed(&e))?;
            subjects.push(key.clone());
            subscriptions.push((Arc::new(route.clone()), subscription));
        }
        // Subscriptions are in place once the server has seen them: a request published
        // right after this returns reaches us.
        client.flush().await.map_err(|e| failed(&e))?;
        Ok(NatsListening {
            server: self,
            client,
            subjects,
            subscriptions,
        })
    }
}

/// Refuses route keys NATS cannot subscribe (the NATS server would close the connection).
fn check_subject(key: &str, route: &Route) -> Result<(), ServerError> {
    let reason = if key.starts_with('\u{0}') {
        Some("only string, number and object patterns have a NATS subject")
    } else if key.is_empty() || key.split('.').any(str::is_empty) {
        Some("a NATS subject needs non-empty tokens between dots")
    } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a NATS subject cannot contain whitespace")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            let bound = route.message.iter().chain(&route.events).next();
            Err(ServerError::InvalidSubject {
                handler: bound.map(|b| b.describe()).unwrap_or_default(),
                pattern: bound.map(|b| b.meta.pattern).unwrap_or(key).to_owned(),
                reason,
            })
        }
    }
}

/// A request's reply subject.
struct NatsReply {
    client: async_nats::Client,
    subject: async_nats::Subject,
}

impl ReplySink for NatsReply {
    const WIRE: Wire = Wire::Bare;
    async fn send(&self, packet: Bytes) -> bool {
        publish(&self.client, &self.subject, packet).await
    }
}

async fn publish(
    client: &async_nats::Client,
    subject: &async_nats::Subject,
    packet: Bytes,
) -> bool {
    match client.publish(subject.clone(), packet).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%subject, "could not publish a reply: {e}");
            false
        }
    }
}

impl NatsListening {
    /// The subjects subscribed, one per pattern.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_nats(nestling::nats::NatsServe::new("nats://127.0.0.1:4222"))
    ///     .await?;
    /// println!("subscribed: {:?}", listening.subjects()); // e.g. ["sum", "log"]
    /// # Ok(()) }
    /// ```
    pub fn subjects(&self) -> &[String] {
        &self.subjects
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), ServerError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: unsubscribes (so the
    /// queue group's other members take new messages), handles the messages already
    /// delivered to this instance, waits up to
    /// [`ServerConfig::shutdown_grace`](crate::ServerConfig::shutdown_grace) for in-flight
    /// requests to reply, and closes the connection.
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let NatsListening {
            server,
            client,
            subjects,
            subscriptions,
        } = self;
        let limit = server.config.max_in_flight_per_connection.max(1);
        let in_flight = Arc::new(Semaphore::new(limit));
        let mut incoming: SelectAll<_> = futures_util::stream::select_all(
            subscriptions
                .into_iter()
                .map(|(route, sub)| sub.map(move |message| (route.clone(), message))),
        );
        tracing::info!(
            subjects = subjects.len(),
            "nestling microservice listening on NATS"
        );
        tokio::pin!(signal);
        let mut draining = false;
        let mut slot: Slot = None;
        loop {
            let next = tokio::select! {
                _ = &mut signal, if !draining => {
                    draining = true;
                    for subscription in incoming.iter_mut() {
                        // UNSUB + PING: messages the NATS server sent before it saw the
                        // UNSUB still arrive, then the subscription ends.
                        if let Err(e) = subscription.get_mut().drain().await {
                            tracing::warn!("could not unsubscribe: {e}");
                        }
                    }
                    continue;
                }
                next = incoming.next() => next,
            };
            let Some((route, message)) = next else { break };
            // Backpressure: no further message is taken until a slot is free (inline work
            // leaves the slot filled, see `Slot`).
            if slot.is_none() {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                slot = Some(permit);
            }
            if let Some((subject, packet)) = handle_message(&route, message, &client, &mut slot) {
                publish(&client, &subject, packet).await;
            }
        }
        drop(slot);
        let all = u32::try_from(limit).unwrap_or(u32::MAX);
        if tokio::time::timeout(server.config.shutdown_grace, in_flight.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("shutdown grace period over, stopping with requests still running");
        }
        if let Err(e) = client.flush().await {
            tracing::warn!("could not flush the last replies: {e}");
        }
        tracing::info!("nestling microservice stopped (NATS)");
        Ok(())
    }
}

/// Handles one NATS message for `route`; returns a reply ready at once, with its subject.
fn handle_message(
    route: &Route,
    message: async_nats::Message,
    client: &async_nats::Client,
    slot: &mut Slot,
) -> Option<(async_nats::Subject, Bytes)> {
    let async_nats::Message {
        subject,
        reply,
        payload,
        headers,
        ..
    } = message;
    let origin = Origin {
        peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        nats: Some(Arc::new(NatsOrigin {
            subject: subject.clone(),
            headers,
        })),
        received: std::time::Instant::now(),
    };
    let packet = match parse_inbound_spans(&payload) {
        Ok(packet) => packet,
        Err(e) => {
            tracing::warn!(%subject, "dropping a NATS message: {e}");
            return None;
        }
    };
    // The subscription's subject names the pattern of a packet that has none: its JSON is
    // put in front of the payload, so that one frame holds every field of the request.
    let pattern_of = |packet: &Inbound<Span>| match packet {
        Inbound::Request { pattern, .. } | Inbound::Event { pattern, .. } => *pattern,
        Inbound::Undefined => None,
    };
    let (frame, shift, subject_pattern) = match pattern_of(&packet) {
        Some(_) => (payload, 0, Span::all(0)),
        None => {
            let subject_json = serde_json::to_vec(subject.as_str()).unwrap_or_default();
            let mut frame = BytesMut::with_capacity(subject_json.len() + payload.len());
            frame.extend_from_slice(&subject_json);
            frame.extend_from_slice(&payload);
            (
                frame.freeze(),
                subject_json.len(),
                Span::all(subject_json.len()),
            )
        }
    };
    let at = |s: Span| s.shifted(shift);
    type Field = Option<Span>;
    let request = |pattern: Field, data: Field, id: Field, metadata: Field| {
        let fields = PacketFields {
            pattern: pattern.map_or(subject_pattern, at),
            id: id.map(at),
            metadata: metadata.map(at),
        };
        origin.request(Frame::Bytes(frame.clone()), fields, data.map(at))
    };
    // NATS packets are fully parsed: their `data` needs no check.
    let event = |request, slot: &mut Slot| {
        let _ = handle_event(route.event_handlers(), request, &origin, slot, false);
        None
    };
    match packet {
        // Not a Nest packet (e.g. `nats pub sum '[1,2]'`): Nest hands the whole message to
        // the subject's handler as an event.
        Inbound::Undefined => {
            let whole = Span::all(frame.len() - shift);
            event(request(None, Some(whole), None, None), slot)
        }
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => event(request(pattern, data, None, metadata), slot),
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => {
            let request = request(pattern, data, Some(id), metadata);
            let Some(reply) = reply else {
                // Nobody to answer: Nest runs the handler and drops the result.
                let _ = handle_request(Some(route), request, &origin, slot, || Discard, false);
                return None;
            };
            let sink = NatsReply {
                client: client.clone(),
                subject: reply.clone(),
            };
            handle_request(Some(route), request, &origin, slot, || sink, false).map(|answer| {
                let mut packet = BytesMut::new();
                answer.encode(Wire::Bare, &mut packet);
                (reply, packet.freeze())
            })
        }
    }
}

/// The sink of a request that came without a reply subject: replies go nowhere.
struct Discard;

impl ReplySink for Discard {
    const WIRE: Wire = Wire::Bare;
    async fn send(&self, _packet: Bytes) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::check_subject;
    use crate::router::Route;

    #[test]
    fn route_keys_that_cannot_be_subjects_are_refused() {
        let route = Route::default();
        for ok in [
            "sum",
            "user.created",
            "user.*",
            "orders.>",
            r#"{"cmd":"sum"}"#,
            "42",
            "求和",
        ] {
            assert!(check_subject(ok, &route).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "😀 #1",
            "tab\there",
            "\u{0}true",
            "\u{0}null",
        ] {
            assert!(check_subject(bad, &route).is_err(), "{bad:?}");
        }
    }
}
