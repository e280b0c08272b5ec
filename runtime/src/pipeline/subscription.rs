//! One pattern's handlers, as a broker transport subscribes them.

use std::sync::Arc;

use crate::router::{Bound, Route};

/// The handlers of one pattern, for a broker transport to subscribe (see
/// `Dispatcher::subscriptions`).
///
/// ```
/// #[derive(Default)]
/// struct Orders;
/// #[nestling::controller]
/// impl Orders {
///     #[event_pattern({ cmd: "created" })]
///     fn created(&self, id: u64) {}
/// }
///
/// let dispatcher = nestling::Server::builder().build().unwrap().dispatcher();
/// let subscription = dispatcher.subscriptions().into_iter().find(|s| s.pattern() == r#"{"cmd":"created"}"#).unwrap();
/// assert_eq!(subscription.key(), r#"{"cmd":"created"}"#);
/// assert!(subscription.handler().starts_with("Orders::created"));
/// ```
#[derive(Clone)]
pub struct Subscription {
    key: String,
    pub(super) route: Arc<Route>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("key", &self.key)
            .field("handler", &self.handler())
            .finish()
    }
}

impl Subscription {
    pub(super) fn new(key: String, route: Route) -> Self {
        Subscription {
            key,
            route: Arc::new(route),
        }
    }

    /// Nest's normalised pattern (`sum`, `{"cmd":"sum"}`): the channel name Nest's broker
    /// transports subscribe. Patterns that are neither strings, numbers nor objects
    /// (`true`, `null`) have a key starting with `'\0'`: no channel carries them.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The pattern as declared on a handler, as JSON text.
    pub fn pattern(&self) -> &'static str {
        self.first().map_or("null", |b| b.meta.pattern)
    }

    /// The first handler of the pattern, as `Type::method (file:line)`, for messages.
    pub fn handler(&self) -> String {
        self.first().map(|b| b.describe()).unwrap_or_default()
    }

    fn first(&self) -> Option<&Bound> {
        self.route.message.iter().chain(&self.route.events).next()
    }
}
