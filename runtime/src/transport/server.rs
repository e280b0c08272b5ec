//! The server side of the interface: what a transport implements to serve a server's
//! routes.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use crate::error::ServerError;
use crate::pipeline::Dispatcher;

/// A way for a [`Server`](crate::Server) to receive packets: Nest's
/// `CustomTransportStrategy`. [`Server::serve_on`](crate::Server::serve_on) calls
/// [`serve`](Self::serve) once with the server's [`Dispatcher`]; the transport accepts
/// connections (or subscribes), hands every packet to an [`Inbox`](crate::transport::Inbox)
/// and writes the replies, until `shutdown` is requested; then it stops taking packets,
/// lets those in flight finish for up to
/// [`shutdown_grace`](crate::ServerConfig::shutdown_grace), and returns.
///
/// `examples/unix_socket.rs` is a complete transport (Nest's TCP framing over a Unix
/// socket) written with this interface alone.
///
/// ```
/// use nestling::transport::{Dispatcher, Shutdown, Transport};
///
/// /// Serves nothing, and stops when asked to.
/// struct Idle;
///
/// impl Transport for Idle {
///     async fn serve(self, dispatcher: Dispatcher, shutdown: Shutdown) -> Result<(), nestling::ServerError> {
///         let _ = dispatcher.inbox();
///         shutdown.requested().await;
///         Ok(())
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let server = nestling::Server::builder().discover(false).build().unwrap();
/// server.serve_on(Idle, async {}).await.unwrap();
/// # });
/// ```
pub trait Transport: Send + 'static {
    /// Serves until `shutdown` is requested and the work in flight is done.
    fn serve(
        self,
        dispatcher: Dispatcher,
        shutdown: Shutdown,
    ) -> impl Future<Output = Result<(), ServerError>> + Send;
}

/// A request to stop serving, shared by everything a transport runs (its connections'
/// tasks take clones).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let shutdown = nestling::transport::Shutdown::new();
/// let seen = shutdown.clone();
/// shutdown.request();
/// seen.requested().await; // at once: already requested
/// assert!(seen.is_requested());
/// # });
/// ```
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    /// Not requested yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding a clone to stop.
    pub fn request(&self) {
        self.0.cancel();
    }

    /// Whether stopping was asked for.
    pub fn is_requested(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Completes once stopping is asked for (at once if it was).
    pub fn requested(&self) -> impl Future<Output = ()> + Send + '_ {
        self.0.cancelled()
    }

    /// [`requested`](Self::requested), owning its own handle: for a future that must be
    /// `'static` (a spawned task, another server's graceful-shutdown signal).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let shutdown = nestling::transport::Shutdown::new();
    /// let waiting = tokio::spawn(shutdown.requested_owned());
    /// shutdown.request();
    /// waiting.await.unwrap();
    /// # });
    /// ```
    pub fn requested_owned(&self) -> impl Future<Output = ()> + Send + 'static {
        self.0.clone().cancelled_owned()
    }
}
