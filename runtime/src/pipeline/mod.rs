//! The transport-agnostic dispatch core: packet → route → payload decoding → layers →
//! handler → reply or stream, whichever transport brought the packet. Transports
//! (`nestling::transport`) feed it through an [`Inbox`] and receive replies through their
//! [`ReplySink`]; this module imports none of them.

mod answer;
mod call;
mod event;
mod intake;
mod origin;
mod request;
mod sink;
mod stream;
mod subscription;

use std::sync::Arc;

pub use intake::{Completion, Inbox};
pub use origin::Origin;
pub use sink::ReplySink;
pub use subscription::Subscription;

use crate::router::Router;
use crate::server::ServerConfig;

/// A server's routes and limits, as a transport sees them: what Nest hands a
/// `CustomTransportStrategy` in `messageHandlers`. Cheap to clone.
///
/// A `Transport` receives one when a server starts serving
/// on it, and makes an [`Inbox`] per connection (or per subscriber) to hand packets to.
///
/// ```
/// #[derive(Default)]
/// struct Math;
/// #[nestling::controller]
/// impl Math {
///     #[message_pattern("sum")]
///     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
/// }
///
/// let server = nestling::Server::builder().build().unwrap();
/// let dispatcher = server.dispatcher();
/// assert!(dispatcher.subscriptions().iter().any(|s| s.key() == "sum"));
/// ```
#[derive(Clone)]
pub struct Dispatcher {
    router: Arc<Router>,
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("routes", &self.router.len())
            .field("config", &self.config)
            .finish()
    }
}

impl Dispatcher {
    pub(crate) fn new(router: Arc<Router>, config: Arc<ServerConfig>) -> Self {
        Dispatcher { router, config }
    }

    /// The server's limits: a transport applies those that concern it (frame size,
    /// timeouts, connections, shutdown grace).
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The number of patterns served.
    pub fn route_count(&self) -> usize {
        self.router.len()
    }

    /// Whether a packet with this `pattern` (its raw JSON, as received) has a handler:
    /// for transports that treat unroutable messages differently (a broker rejects them).
    ///
    /// ```
    /// #[derive(Default)]
    /// struct Math;
    /// #[nestling::controller]
    /// impl Math {
    ///     #[message_pattern({ cmd: "sum" })]
    ///     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
    /// }
    ///
    /// let dispatcher = nestling::Server::builder().build().unwrap().dispatcher();
    /// assert!(dispatcher.handles(br#"{ "cmd": "sum" }"#));
    /// assert!(!dispatcher.handles(br#""nope""#));
    /// ```
    pub fn handles(&self, pattern_json: &[u8]) -> bool {
        self.router
            .lookup(pattern_json)
            .is_some_and(|r| r.message.is_some() || !r.events.is_empty())
    }

    /// A way in for one connection (or one subscriber): see [`Inbox`].
    pub fn inbox(&self) -> Inbox {
        Inbox::new(
            self.router.clone(),
            self.config.max_in_flight_per_connection,
        )
    }

    /// One subscription per pattern served, for transports whose broker routes messages
    /// by channel (subject, topic, queue): subscribe [`Subscription::key`] and hand what
    /// arrives on it to [`Inbox::handle_message`].
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.router
            .routes()
            .map(|(key, route)| Subscription::new(key.clone(), route.clone()))
            .collect()
    }
}
