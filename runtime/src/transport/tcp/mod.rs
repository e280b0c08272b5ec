//! Nest's `Transport.TCP`: `<len>#<json>` frames over a TCP (or TLS) stream. The server side
//! is a [`Transport`] like any other: an accept loop, and per connection a frame reader
//! feeding an [`Inbox`](crate::transport::Inbox) and a writer draining its replies.

pub(crate) mod budget;
pub(crate) mod client;
mod connection;
mod deadline;
mod lent_buffer;
mod quickack;
mod reader;
mod release;
mod replies;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::error::ServerError;
use crate::observe::OpenConnection;
use crate::server::{Server, TlsSettings};
use crate::status::{Event, Hub, Status, TransportError};
use crate::transport::{Dispatcher, Shutdown, Transport};

impl Server {
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
        // Controllers start before the port opens: a failing on_start leaves it closed.
        self.lifecycle.start().await?;
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
            hub: Hub::new(Status::Connected),
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
    /// `connected` while listening (Nest's `TcpStatus`), `disconnected` once stopped.
    hub: Arc<Hub>,
}

/// The TCP transport: an accept loop over a bound listener.
struct TcpTransport {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<TlsSettings>,
    hub: Arc<Hub>,
}

impl Listening {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's status, as Nest 11's `server.status` for TCP: `connected` from
    /// [`listen`](Server::listen) on, `disconnected` once serving has stopped. Take it
    /// before serving ([`serve`](Self::serve) consumes the listener).
    ///
    /// ```
    /// use nestling::status::Status;
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let listening = nestling::Server::builder().discover(false).build().unwrap()
    ///     .listen("127.0.0.1:0").await.unwrap();
    /// let mut status = listening.status();
    /// assert_eq!(*status.borrow(), Status::Connected);
    /// listening.serve_with_shutdown(async {}).await.unwrap();
    /// status.wait_for(|s| *s == Status::Disconnected).await.unwrap();
    /// # });
    /// ```
    pub fn status(&self) -> tokio::sync::watch::Receiver<Status> {
        self.hub.status()
    }

    /// The server's status transitions and errors (Nest's `server.on('error', …)`): a
    /// failed `accept` (out of file descriptors, say) arrives as
    /// [`TransportError::Accept`](crate::status::TransportError::Accept).
    ///
    /// ```
    /// use nestling::status::{Event, Status};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let listening = nestling::Server::builder().discover(false).build().unwrap()
    ///     .listen("127.0.0.1:0").await.unwrap();
    /// let mut events = listening.events();
    /// listening.serve_with_shutdown(async {}).await.unwrap();
    /// assert_eq!(events.recv().await.unwrap(), Event::Status(Status::Disconnected));
    /// # });
    /// ```
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.hub.events()
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), ServerError> {
        self.serve_with_shutdown(std::future::pending()).await
    }

    /// Serves until `signal` completes, then shuts down gracefully: stops accepting,
    /// stops reading new packets, lets in-flight requests finish and send their replies
    /// for up to [`ServerConfig::shutdown_grace`](crate::ServerConfig::shutdown_grace), then closes every connection.
    pub async fn serve_with_shutdown(
        self,
        signal: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let Listening {
            server,
            listener,
            local_addr,
            hub,
        } = self;
        let transport = TcpTransport {
            listener,
            local_addr,
            tls: server.tls.clone(),
            hub,
        };
        server.serve_on(transport, signal).await
    }
}

impl Transport for TcpTransport {
    async fn serve(self, dispatcher: Dispatcher, shutdown: Shutdown) -> Result<(), ServerError> {
        let TcpTransport {
            listener,
            local_addr,
            tls,
            hub,
        } = self;
        // However serving ends, the status says so.
        let _stopped = StoppedOnDrop(&hub);
        let config = dispatcher.config().clone();
        let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
        let budget = budget::Budget::new(config.memory_budget, config.memory_budget_grace);
        let mut connections = JoinSet::new();
        tracing::info!(%local_addr, routes = dispatcher.route_count(), "nestling microservice listening");
        loop {
            tokio::select! {
                () = shutdown.requested() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {
                    // What is left once a connection is gone: a count or a budget that
                    // does not come back down is a leak, not the allocator's retention.
                    tracing::debug!(open = connections.len(), held = budget.used(), "connection closed");
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = slots.clone().try_acquire_owned() else {
                            tracing::warn!(%peer, limit = config.max_connections, "connection limit reached, closing new connection");
                            continue;
                        };
                        let (dispatcher, shutdown, tls, budget) = (dispatcher.clone(), shutdown.clone(), tls.clone(), budget.clone());
                        connections.spawn(async move {
                            let _counted = OpenConnection::counted();
                            connection::serve(stream, peer, dispatcher, shutdown, tls, budget).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        // Typically EMFILE: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        hub.error(TransportError::Accept {
                            addr: local_addr.to_string(),
                            reason: e.to_string(),
                        });
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(config.shutdown_grace, async {
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

/// Sets a server's status to `disconnected` when its serving ends, however it ends.
pub(crate) struct StoppedOnDrop<'a>(pub &'a Hub);

impl Drop for StoppedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.set(Status::Disconnected);
    }
}

/// A connected loopback pair for unit tests: (client side, accepted side).
#[cfg(test)]
pub(super) async fn connected_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), async {
        listener.accept().await.unwrap().0
    });
    (client.unwrap(), accepted)
}
