//! What a client sends through: a TCP connection (frames, many calls multiplexed by id)
//! or, with the `nats` feature, a NATS connection (one message per packet).

use std::sync::Arc;

use bytes::BytesMut;

use super::connection::Connection;
use super::payload::Payload;
use super::pending::PendingCalls;
use crate::packet::Wire;
use crate::pattern::Pattern;

/// A packet to send, its `data` serialised but not yet framed: TCP frames it straight into
/// the connection's outbox, NATS publishes it as one message.
pub(crate) struct Outgoing<'a> {
    /// The pattern as it goes on the wire (`send` and `emit` differ for object patterns).
    pub wire_pattern: &'a [u8],
    pub data: Payload,
    /// Raw JSON of `metadata` (a trace id), when there is one.
    pub metadata: Option<Vec<u8>>,
    /// `None` for an event.
    pub id: Option<u64>,
}

impl Outgoing<'_> {
    fn put(&self, wire: Wire, dst: &mut BytesMut) {
        wire.outbound_raw(
            dst,
            self.wire_pattern,
            &self.data,
            self.metadata.as_deref(),
            self.id,
        );
    }

    #[cfg(feature = "nats")]
    fn to_bytes(&self, wire: Wire) -> bytes::Bytes {
        let mut packet = BytesMut::new();
        self.put(wire, &mut packet);
        packet.freeze()
    }
}

/// Addresses starting with this select the NATS transport.
pub(crate) const NATS_SCHEME: &str = "nats://";

/// The packet encoding for a client of `addr`.
pub(crate) fn wire_for(addr: &str) -> Wire {
    if addr.starts_with(NATS_SCHEME) {
        Wire::Bare
    } else {
        Wire::Tcp
    }
}

#[derive(Clone)]
pub(crate) enum Link {
    Tcp(Arc<Connection>),
    #[cfg(feature = "nats")]
    Nats(Arc<super::nats::NatsLink>),
}

impl Link {
    pub fn calls(&self) -> &Arc<PendingCalls> {
        match self {
            Link::Tcp(conn) => &conn.calls,
            #[cfg(feature = "nats")]
            Link::Nats(link) => &link.calls,
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Link::Tcp(conn) => conn.is_closed(),
            #[cfg(feature = "nats")]
            Link::Nats(link) => link.is_closed(),
        }
    }

    /// Ends the link, failing every pending call with `reason`.
    pub fn close(&self, reason: String) {
        match self {
            Link::Tcp(conn) => conn.close(reason),
            #[cfg(feature = "nats")]
            Link::Nats(link) => link.close(reason),
        }
    }

    /// Sends request `id` (already registered). `Err(reason)` if the link is over. The
    /// packet is dropped once queued, which frees its payload buffer for the next call.
    pub async fn request(
        &self,
        pattern: &Pattern,
        id: u64,
        packet: Outgoing<'_>,
    ) -> Result<(), String> {
        match self {
            Link::Tcp(conn) => {
                let _ = (pattern, id);
                conn.write(|dst| packet.put(Wire::Tcp, dst)).await
            }
            #[cfg(feature = "nats")]
            Link::Nats(link) => link.request(pattern, id, packet.to_bytes(Wire::Bare)).await,
        }
    }

    /// Sends an event; resolves once it has been handed to the socket.
    pub async fn event(&self, pattern: &Pattern, packet: Outgoing<'_>) -> Result<(), String> {
        match self {
            Link::Tcp(conn) => {
                let _ = pattern;
                let written = conn.write_noticed(|dst| packet.put(Wire::Tcp, dst)).await?;
                drop(packet);
                written.await.map_err(|_| conn.calls.closed_reason())
            }
            #[cfg(feature = "nats")]
            Link::Nats(link) => link.event(pattern, packet.to_bytes(Wire::Bare)).await,
        }
    }
}
