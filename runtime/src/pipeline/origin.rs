//! Who sent a packet, and when it arrived.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::context::{Context, Extension, Frame, PacketFields};
use crate::handler::Request;
use crate::packet::Span;

/// Who sent the packets a transport hands to the core, as far as it knows (the handler
/// sees it in its [`Context`]), and when they arrived (a request's duration is measured
/// from there).
///
/// ```
/// use nestling::transport::Origin;
/// let mut origin = Origin::new("127.0.0.1:5000".parse().unwrap());
/// assert_eq!(origin.peer().port(), 5000);
/// origin.mark_received(); // after each read: what it brought arrived now
/// ```
#[derive(Debug, Clone)]
pub struct Origin {
    pub(crate) peer: SocketAddr,
    extension: Option<Extension>,
    /// On TCP, the read that brought the packet: one clock read per batch of packets, not
    /// one per packet.
    pub(crate) received: Instant,
}

impl Origin {
    /// Packets from `peer` (a placeholder address such as `0.0.0.0:0` where the transport
    /// has none), arriving now.
    pub fn new(peer: SocketAddr) -> Self {
        Origin {
            peer,
            extension: None,
            received: Instant::now(),
        }
    }

    /// The peer's address, as handlers see it in [`Context::peer_addr`].
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Attaches what the transport knows of the message beyond its packet (a broker
    /// message's headers, properties, routing): handlers read it with
    /// [`Context::extension`].
    ///
    /// ```
    /// use std::sync::Arc;
    /// use nestling::transport::Origin;
    ///
    /// /// What a transport of your own tells its handlers.
    /// struct Mailbox { name: String }
    ///
    /// let origin = Origin::new("0.0.0.0:0".parse().unwrap())
    ///     .with_extension(Arc::new(Mailbox { name: "orders".into() }));
    /// ```
    pub fn with_extension<T: std::any::Any + Send + Sync>(mut self, value: Arc<T>) -> Self {
        self.extension = Some(value);
        self
    }

    /// Packets handled from now on arrived now: call it after each read.
    pub fn mark_received(&mut self) {
        self.received = Instant::now();
    }

    /// [`mark_received`](Self::mark_received) with a time the transport read anyway.
    pub(crate) fn set_received(&mut self, at: Instant) {
        self.received = at;
    }

    /// The request a handler gets for a packet received in `frame`.
    pub(crate) fn request(
        &self,
        frame: Frame,
        fields: PacketFields,
        data: Option<Span>,
    ) -> Request {
        let ctx =
            Context::in_frame(frame, fields, self.peer).with_extension(self.extension.clone());
        Request::in_frame(data, ctx)
    }
}
