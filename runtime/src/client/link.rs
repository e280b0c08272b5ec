//! What a client sends through: a TCP connection (frames, many calls multiplexed by id)
//! or, with the `nats` feature, a NATS connection (one message per packet).

use std::sync::Arc;

use bytes::Bytes;

use super::connection::Connection;
use super::pending::PendingCalls;
use crate::packet::Wire;
use crate::pattern::Pattern;

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

    /// Sends request `id` (already registered). `Err(reason)` if the link is over.
    pub async fn request(&self, pattern: &Pattern, id: u64, packet: Bytes) -> Result<(), String> {
        match self {
            Link::Tcp(conn) => {
                let _ = (pattern, id);
                conn.write(packet).await
            }
            #[cfg(feature = "nats")]
            Link::Nats(link) => link.request(pattern, id, packet).await,
        }
    }

    /// Sends an event; resolves once it has been handed to the socket.
    pub async fn event(&self, pattern: &Pattern, packet: Bytes) -> Result<(), String> {
        match self {
            Link::Tcp(conn) => {
                let _ = pattern;
                conn.write_and_wait(packet).await
            }
            #[cfg(feature = "nats")]
            Link::Nats(link) => link.event(pattern, packet).await,
        }
    }
}
