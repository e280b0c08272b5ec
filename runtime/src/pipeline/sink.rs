//! Where a request's replies go when they are not ready at once.

use std::future::Future;

use bytes::Bytes;

use crate::packet::Wire;

/// Where the replies of one request go when they are not ready at once (an `async`
/// handler, a stream): the connection's writer on TCP, the request's reply subject on
/// NATS. Replies that are ready at once are appended to the buffer the transport passed
/// to [`Inbox::handle_frame`](crate::transport::Inbox::handle_frame), so a transport can
/// write a whole batch of them at once.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use bytes::Bytes;
/// use nestling::packet::Wire;
/// use nestling::transport::ReplySink;
///
/// /// Collects reply packets (one JSON object each) in memory.
/// #[derive(Clone, Default)]
/// struct Collect(Arc<Mutex<Vec<Bytes>>>);
///
/// impl ReplySink for Collect {
///     const WIRE: Wire = Wire::Bare;
///     async fn send(&self, packet: Bytes) -> bool {
///         self.0.lock().unwrap().push(packet);
///         true
///     }
/// }
/// ```
pub trait ReplySink: Send + Sync + 'static {
    /// How packets are encoded for this sink: [`Wire::Tcp`] frames each packet as
    /// `<len>#<json>`, [`Wire::Bare`] leaves it as JSON alone.
    const WIRE: Wire;
    /// Sends one encoded packet; `false` when nobody can receive it any more (the stream
    /// being sent then stops).
    fn send(&self, packet: Bytes) -> impl Future<Output = bool> + Send;
}

/// The sink of work that never replies (events).
pub(crate) struct NoReplies;

impl ReplySink for NoReplies {
    const WIRE: Wire = Wire::Bare;
    async fn send(&self, _packet: Bytes) -> bool {
        false
    }
}
