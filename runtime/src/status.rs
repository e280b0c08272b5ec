//! Connection status and events of clients and servers: Nest 11's `status` observable and
//! `on('error', …)` events, as a [`watch`] of [`Status`] and a [`broadcast`] of [`Event`]s.
//!
//! [`Client::status`](crate::Client::status), `Listening::status` (TCP),
//! `NatsListening::status` and `RmqListening::status` give the status; the matching
//! `events()` methods give every transition and every error the transport reports. Both
//! change only on transitions: nothing is done per request.
//!
//! | transport | statuses, as Nest names them |
//! |---|---|
//! | TCP client (`TcpStatus`) | `connected` once connected, `disconnected` when the connection ends; the next call reconnects (as Nest's `ClientTCP`) |
//! | TCP server (`TcpStatus`) | `connected` once listening, `disconnected` once stopped |
//! | NATS client and server (`NatsStatus`) | `connected`; `disconnected` then `reconnecting` when the NATS server is lost (the NATS client reconnects by itself), `connected` again once back |
//! | RabbitMQ client and server (`RmqStatus`) | `connected`; `disconnected` then `reconnecting` when the broker is lost (both reconnect by themselves, with backoff), `connected` again once consuming; `blocked` while the broker blocks the connection (a memory or disk alarm), `connected` once unblocked |
//!
//! ```
//! use nestling::status::Status;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let listening = nestling::Server::builder().discover(false).build().unwrap()
//!     .listen("127.0.0.1:0").await.unwrap();
//! let client = nestling::Client::new(listening.local_addr().to_string());
//! let mut status = client.status();
//! assert_eq!(*status.borrow(), Status::Disconnected); // nothing dialled yet
//! tokio::spawn(listening.serve());
//! client.connect().await.unwrap();
//! status.wait_for(|s| *s == Status::Connected).await.unwrap();
//! assert_eq!(Status::Connected.to_string(), "connected"); // Nest's TcpStatus.CONNECTED
//! # });
//! ```

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

/// Events kept for a receiver of [`Event`]s that has not read them yet; one further behind
/// gets [`broadcast::error::RecvError::Lagged`] and continues with the newest.
pub const EVENT_BUFFER: usize = 64;

/// The state of a client's or server's connection, named as Nest 11's `TcpStatus`,
/// `NatsStatus` and `RmqStatus` (`Display` writes Nest's string).
///
/// ```
/// use nestling::status::Status;
/// assert_eq!(Status::Reconnecting.to_string(), "reconnecting");
/// assert_eq!(Status::Disconnected.as_str(), "disconnected");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Not connected: not yet, closed, or lost (TCP clients connect again on the next
    /// call).
    Disconnected,
    /// Connected (a server: listening, subscribed or consuming).
    Connected,
    /// The connection was lost and is being re-established by the transport itself
    /// (NATS, RabbitMQ).
    Reconnecting,
    /// RabbitMQ: the broker stopped taking this connection's messages while it is low on
    /// memory or disk (Nest's `RmqStatus.BLOCKED`); publishing waits. Back to
    /// [`Connected`](Self::Connected) once it is unblocked (Nest reports `unblocked`).
    Blocked,
}

impl Status {
    /// Nest's name of the status: `"connected"`, `"disconnected"`, `"reconnecting"`,
    /// `"blocked"`.
    ///
    /// ```
    /// assert_eq!(nestling::status::Status::Connected.as_str(), "connected");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Disconnected => "disconnected",
            Status::Connected => "connected",
            Status::Reconnecting => "reconnecting",
            Status::Blocked => "blocked",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a client or server reports as it happens: a status transition, or an error of its
/// connection (Nest's `on('error', …)`, and its status events).
///
/// ```
/// use nestling::status::{Event, Status, TransportError};
/// let event = Event::Error(TransportError::Lost {
///     addr: "127.0.0.1:8888".into(),
///     reason: "closed by the server".into(),
/// });
/// assert_eq!(
///     event.to_string(),
///     "error: the connection to 127.0.0.1:8888 was lost: closed by the server"
/// );
/// assert_eq!(Event::Status(Status::Connected).to_string(), "status: connected");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The status changed to this.
    Status(Status),
    /// The connection reported an error.
    Error(TransportError),
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Status(status) => write!(f, "status: {status}"),
            Event::Error(error) => write!(f, "error: {error}"),
        }
    }
}

/// An error of a client's or server's connection, as an [`Event`]. Calls fail with their
/// own [`ClientError`](crate::ClientError)s as before; these report the connection's side.
///
/// ```
/// let e = nestling::status::TransportError::Connect {
///     addr: "127.0.0.1:1".into(),
///     reason: "connection refused".into(),
/// };
/// assert_eq!(e.to_string(), "could not connect to 127.0.0.1:1: connection refused");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// Connecting (or reconnecting) failed.
    #[error("could not connect to {addr}: {reason}")]
    Connect {
        /// The address dialled (without a password).
        addr: String,
        /// What failed.
        reason: String,
    },
    /// An established connection ended without being closed by its owner.
    #[error("the connection to {addr} was lost: {reason}")]
    Lost {
        /// The peer or broker (without a password).
        addr: String,
        /// Why it ended.
        reason: String,
    },
    /// The broker or the broker client reported an error (a NATS server `-ERR`, a slow
    /// consumer, a RabbitMQ connection error).
    #[error("{addr} reported an error: {reason}")]
    Broker {
        /// The broker (without a password).
        addr: String,
        /// The error.
        reason: String,
    },
    /// A TCP server could not accept a connection (e.g. out of file descriptors).
    #[error("accepting a connection on {addr} failed: {reason}")]
    Accept {
        /// The listening address.
        addr: String,
        /// The error.
        reason: String,
    },
}

/// Where a client or server publishes its status and events.
#[derive(Debug)]
pub(crate) struct Hub {
    status: watch::Sender<Status>,
    events: broadcast::Sender<Event>,
}

impl Hub {
    pub fn new(initial: Status) -> Arc<Hub> {
        Arc::new(Hub {
            status: watch::Sender::new(initial),
            events: broadcast::Sender::new(EVENT_BUFFER),
        })
    }

    /// Moves to `status`; a transition (only) is published and sent as an event.
    pub fn set(&self, status: Status) {
        let changed = self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
        if changed {
            tracing::debug!(%status, "connection status");
            let _ = self.events.send(Event::Status(status));
        }
    }

    /// Sends `error` as an event.
    pub fn error(&self, error: TransportError) {
        tracing::debug!("connection error: {error}");
        let _ = self.events.send(Event::Error(error));
    }

    pub fn current(&self) -> Status {
        *self.status.borrow()
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_transitions_are_published() {
        let hub = Hub::new(Status::Disconnected);
        let mut events = hub.events();
        let status = hub.status();
        hub.set(Status::Disconnected);
        hub.set(Status::Connected);
        hub.set(Status::Connected);
        hub.error(TransportError::Lost {
            addr: "a".into(),
            reason: "r".into(),
        });
        hub.set(Status::Reconnecting);
        assert_eq!(*status.borrow(), Status::Reconnecting);
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event.to_string());
        }
        assert_eq!(
            seen,
            [
                "status: connected",
                "error: the connection to a was lost: r",
                "status: reconnecting"
            ]
        );
    }
}
