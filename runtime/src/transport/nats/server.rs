//! Serving over NATS: Nest's `ServerNats`. Every route is subscribed on its subject —
//! Nest's normalised pattern (`sum`, `{"cmd":"sum"}`) — optionally in a queue group, so
//! several instances share the load. Each message is one packet (bare JSON); a request's
//! replies are published to the message's reply subject.
//!
//! message → packet → route (the subscription's) → handler → reply subject.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::stream::{SelectAll, StreamExt};

use crate::context::NatsOrigin;
use crate::error::ServerError;
use crate::packet::Wire;
use crate::server::Server;
use crate::status::{Event, Hub, Status};
use crate::transport::nats::client::report_events;
use crate::transport::tcp::StoppedOnDrop;
use crate::transport::{Dispatcher, Origin, ReplySink, Shutdown, Subscription, Transport};

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
    transport: NatsTransport,
    subjects: Vec<String>,
}

/// The NATS transport: subscriptions made, messages to take from them.
struct NatsTransport {
    client: async_nats::Client,
    subscriptions: Vec<(Subscription, async_nats::Subscriber)>,
    /// The connection's status (Nest's `NatsStatus`) and errors.
    hub: Arc<Hub>,
    /// Whether the connection is the user's ([`NatsServe::with_client`]): its events go to
    /// the user's callback, so its state is watched instead.
    given: bool,
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
        self.lifecycle.start().await?;
        let url = nats.url.clone();
        let failed = |e: &dyn std::fmt::Display| ServerError::Nats {
            url: url.clone(),
            message: e.to_string(),
        };
        let hub = Hub::new(Status::Disconnected);
        let given = nats.client.is_some();
        let client = match nats.client {
            Some(client) => client,
            None => async_nats::ConnectOptions::new()
                .name("nestling server")
                .event_callback(report_events(
                    hub.clone(),
                    nats.url.clone(),
                    Arc::new(AtomicBool::new(false)),
                ))
                .connect(nats.url.as_str())
                .await
                .map_err(|e| failed(&e))?,
        };
        let mut subjects = Vec::new();
        let mut subscriptions = Vec::new();
        for subscription in self.dispatcher().subscriptions() {
            check_subject(&subscription)?;
            let key = subscription.key().to_owned();
            let subscriber = match &nats.queue {
                Some(group) => client.queue_subscribe(key.clone(), group.clone()).await,
                None => client.subscribe(key.clone()).await,
            }
            .map_err(|e| failed(&e))?;
            subjects.push(key);
            subscriptions.push((subscription, subscriber));
        }
        // Subscriptions are in place once the server has seen them: a request published
        // right after this returns reaches us.
        client.flush().await.map_err(|e| failed(&e))?;
        hub.set(Status::Connected);
        Ok(NatsListening {
            server: self,
            transport: NatsTransport {
                client,
                subscriptions,
                hub,
                given,
            },
            subjects,
        })
    }
}

/// Refuses route keys NATS cannot subscribe (the NATS server would close the connection).
fn check_subject(subscription: &Subscription) -> Result<(), ServerError> {
    check_key(subscription.key()).map_err(|reason| ServerError::InvalidSubject {
        handler: subscription.handler(),
        pattern: subscription.pattern().to_owned(),
        reason,
    })
}

fn check_key(key: &str) -> Result<(), &'static str> {
    let reason = if key.starts_with('\u{0}') {
        Some("only string, number and object patterns have a NATS subject")
    } else if key.is_empty() || key.split('.').any(str::is_empty) {
        Some("a NATS subject needs non-empty tokens between dots")
    } else if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a NATS subject cannot contain whitespace")
    } else {
        None
    };
    reason.map_or(Ok(()), Err)
}

/// A request's reply subject; `None` for a request that came without one (Nest runs the
/// handler and drops the result). The connection is shared behind an `Arc`: cloning an
/// `async_nats::Client` for every message builds a new channel sender and drops it again,
/// about 8 % of the server's time per request.
#[derive(Clone)]
struct NatsReply {
    client: Arc<async_nats::Client>,
    subject: Option<async_nats::Subject>,
}

impl ReplySink for NatsReply {
    const WIRE: Wire = Wire::Bare;
    async fn send(&self, packet: Bytes) -> bool {
        match &self.subject {
            Some(subject) => publish(&self.client, subject, packet).await,
            None => false,
        }
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

    /// The server's status, as Nest 11's `server.status` over NATS (`NatsStatus`):
    /// `connected`; `disconnected` then `reconnecting` when the NATS server is lost (the
    /// NATS client reconnects and subscribes again by itself); `connected` once back;
    /// `disconnected` once serving has stopped. Take it before serving.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// use nestling::status::Status;
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_nats(nestling::nats::NatsServe::new("nats://127.0.0.1:4222"))
    ///     .await?;
    /// let mut status = listening.status();
    /// assert_eq!(*status.borrow(), Status::Connected);
    /// tokio::spawn(listening.serve());
    /// status.wait_for(|s| *s == Status::Reconnecting).await.ok(); // the NATS server went away
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> tokio::sync::watch::Receiver<Status> {
        self.transport.hub.status()
    }

    /// The server's status transitions and connection errors (Nest's
    /// `server.on('error', …)`): connection lost, NATS server errors (`-ERR`), slow
    /// consumers. With [`NatsServe::with_client`] the connection's errors go to your own
    /// `event_callback`, and only status transitions arrive here.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ServerError> {
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_nats(nestling::nats::NatsServe::new("nats://127.0.0.1:4222"))
    ///     .await?;
    /// let mut events = listening.events();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         eprintln!("NATS: {event}");
    ///     }
    /// });
    /// # Ok(()) }
    /// ```
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.transport.hub.events()
    }

    /// The NATS connection the server serves on (Nest's `server.unwrap<NatsConnection>()`),
    /// for what nestling does not wrap. It outlives reconnects.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let listening = nestling::Server::builder()
    ///     .build()?
    ///     .listen_nats(nestling::nats::NatsServe::new("nats://127.0.0.1:4222"))
    ///     .await?;
    /// let nats = listening.nats_client().clone();
    /// nats.publish("service.started", "user-1".into()).await?;
    /// # Ok(()) }
    /// ```
    pub fn nats_client(&self) -> &async_nats::Client {
        &self.transport.client
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
            server, transport, ..
        } = self;
        server.serve_on(transport, signal).await
    }
}

impl Transport for NatsTransport {
    async fn serve(self, dispatcher: Dispatcher, shutdown: Shutdown) -> Result<(), ServerError> {
        let NatsTransport {
            client,
            subscriptions,
            hub,
            given,
        } = self;
        let _stopped = StoppedOnDrop(&hub);
        let _watching =
            given.then(|| AbortOnDrop(tokio::spawn(follow_state(client.clone(), hub.clone()))));
        let subjects = subscriptions.len();
        let mut incoming: SelectAll<_> = futures_util::stream::select_all(
            subscriptions.into_iter().map(|(subscription, subscriber)| {
                let subscription = Arc::new(subscription);
                subscriber.map(move |message| (subscription.clone(), message))
            }),
        );
        tracing::info!(subjects, "nestling microservice listening on NATS");
        let mut inbox = dispatcher.inbox();
        let mut ready = BytesMut::new();
        let mut draining = false;
        let replier = Arc::new(client.clone());
        loop {
            let next = tokio::select! {
                () = shutdown.requested(), if !draining => {
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
            let Some((subscription, message)) = next else {
                break;
            };
            // Backpressure: no further message is taken until there is room.
            inbox.reserve().await;
            let async_nats::Message {
                subject,
                reply,
                payload,
                headers,
                ..
            } = message;
            let origin = Origin::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0))).with_extension(
                Arc::new(NatsOrigin {
                    subject: subject.clone(),
                    headers,
                }),
            );
            let sink = NatsReply {
                client: replier.clone(),
                subject: reply,
            };
            let handled = inbox.handle_message(
                &origin,
                &subscription,
                subject.as_str(),
                payload,
                &mut ready,
                || sink.clone(),
            );
            if let Err(e) = handled {
                tracing::warn!(%subject, "dropping a NATS message: {e}");
            }
            if !ready.is_empty() {
                let packet = ready.split().freeze();
                sink.send(packet).await;
            }
        }
        if !inbox.drain(dispatcher.config().shutdown_grace).await {
            tracing::warn!("shutdown grace period over, stopping with requests still running");
        }
        if let Err(e) = client.flush().await {
            tracing::warn!("could not flush the last replies: {e}");
        }
        tracing::info!("nestling microservice stopped (NATS)");
        Ok(())
    }
}

/// Follows the state of a connection whose events go to the user's callback.
async fn follow_state(client: async_nats::Client, hub: Arc<Hub>) {
    let mut was = None;
    loop {
        let state = client.connection_state();
        if was.as_ref() != Some(&state) {
            match state {
                async_nats::connection::State::Connected => hub.set(Status::Connected),
                async_nats::connection::State::Disconnected => {
                    hub.set(Status::Disconnected);
                    hub.set(Status::Reconnecting);
                }
                async_nats::connection::State::Pending => hub.set(Status::Reconnecting),
            }
            was = Some(state);
        }
        tokio::time::sleep(STATE_POLL).await;
    }
}

/// How often [`follow_state`] looks.
const STATE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::check_key;

    #[test]
    fn route_keys_that_cannot_be_subjects_are_refused() {
        for ok in [
            "sum",
            "user.created",
            "user.*",
            "orders.>",
            r#"{"cmd":"sum"}"#,
            "42",
            "求和",
        ] {
            assert!(check_key(ok).is_ok(), "{ok}");
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
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }
}
