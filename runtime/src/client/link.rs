//! What a client sends through: the built-in TCP link (frames, many calls multiplexed by
//! id), with the `nats` feature the built-in NATS link (one message per packet), or a
//! [`ClientTransport`] of the user's. The built-in links are called directly (no boxed
//! future per call); all three resolve replies through a [`ReplyRouter`].

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::payload::Payload;
use crate::error::ClientError;
use crate::packet::Wire;
use crate::pattern::Pattern;
#[cfg(feature = "nats")]
use crate::transport::nats::client::NatsLink;
use crate::transport::tcp::client::TcpLink;
use crate::transport::{ClientConnector, ClientTransport, ReplyRouter, TransportFuture};

/// A packet to send, its `data` serialised but not yet framed: TCP frames it straight into
/// the connection's outbox, other transports get it encoded in their wire form.
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
    /// Appends the packet in `wire`'s form: `{"pattern":P,"data":D,"metadata":M,"id":"ID"}`
    /// (`metadata` and `id` only when present), in a `<len>#` frame for [`Wire::Tcp`].
    fn put(&self, wire: Wire, dst: &mut BytesMut) {
        wire.outbound_raw(
            dst,
            self.wire_pattern,
            &self.data,
            self.metadata.as_deref(),
            self.id,
        );
    }

    /// The packet on its own, in `wire`'s form, for links that take whole packets (NATS,
    /// custom transports); dropping `self` frees its payload buffer for the next call.
    fn into_packet(self, wire: Wire) -> Bytes {
        let mut packet = BytesMut::new();
        self.put(wire, &mut packet);
        packet.freeze()
    }
}

/// The requests of one batch, their `data` serialised but not yet framed.
pub(crate) struct Batch<'a> {
    /// The pattern as it goes on the wire.
    pub wire_pattern: &'a [u8],
    pub payloads: &'a Payloads,
    /// Which of `payloads` this batch sends.
    pub range: std::ops::Range<usize>,
    /// Raw JSON of `metadata` (a trace id), when there is one.
    pub metadata: Option<Vec<u8>>,
}

/// Serialised payloads back to back in one buffer.
#[derive(Default)]
pub(crate) struct Payloads {
    buf: Vec<u8>,
    ends: Vec<usize>,
}

impl Payloads {
    /// Appends `data`'s JSON.
    pub fn push<T: serde::Serialize + ?Sized>(&mut self, data: &T) -> serde_json::Result<()> {
        serde_json::to_writer(&mut self.buf, data)?;
        self.ends.push(self.buf.len());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Payloads `range`, in order.
    pub fn iter(&self, range: std::ops::Range<usize>) -> impl Iterator<Item = &[u8]> + '_ {
        let start = |i: usize| if i == 0 { 0 } else { self.ends[i - 1] };
        range.map(move |i| &self.buf[start(i)..self.ends[i]])
    }
}

// Out of line: the TCP arms beside them are every call's path, these are not.

/// A custom transport's `request`, its packet encoded in the transport's wire form.
#[inline(never)]
fn custom_request<'a>(
    transport: &'a Arc<dyn ClientTransport>,
    pattern: &'a Pattern,
    id: u64,
    packet: Outgoing<'_>,
) -> TransportFuture<'a, Result<(), ClientError>> {
    transport.request(pattern, id, packet.into_packet(transport.wire()))
}

/// A custom transport's `event`, its packet encoded in the transport's wire form.
#[inline(never)]
fn custom_event<'a>(
    transport: &'a Arc<dyn ClientTransport>,
    pattern: &'a Pattern,
    packet: Outgoing<'_>,
) -> TransportFuture<'a, Result<(), ClientError>> {
    transport.event(pattern, packet.into_packet(transport.wire()))
}

/// A NATS request, boxed: inline, its future would be part of every TCP call's future
/// (the `nats` feature cost TCP calls ~7 % in instructions, measured).
#[cfg(feature = "nats")]
#[inline(never)]
fn nats_request<'a>(
    link: &'a Arc<NatsLink>,
    pattern: &'a Pattern,
    id: u64,
    packet: Outgoing<'_>,
) -> TransportFuture<'a, Result<(), ClientError>> {
    let packet = packet.into_packet(Wire::Bare);
    Box::pin(async move {
        NatsLink::request(link, pattern, id, packet)
            .await
            .map_err(|reason| link.closed_error(reason))
    })
}

/// A NATS event, boxed for the reason [`nats_request`] is.
#[cfg(feature = "nats")]
#[inline(never)]
fn nats_event<'a>(
    link: &'a Arc<NatsLink>,
    pattern: &'a Pattern,
    packet: Outgoing<'_>,
) -> TransportFuture<'a, Result<(), ClientError>> {
    let packet = packet.into_packet(Wire::Bare);
    Box::pin(async move {
        NatsLink::event(link, pattern, packet)
            .await
            .map_err(|reason| link.closed_error(reason))
    })
}

/// Addresses starting with this select the NATS transport.
pub(crate) const NATS_SCHEME: &str = "nats://";

/// Addresses starting with one of these select the RabbitMQ transport.
pub(crate) const RMQ_SCHEMES: [&str; 2] = ["amqp://", "amqps://"];

/// How a client opens its link.
#[derive(Clone)]
pub(crate) enum Dialer {
    Tcp,
    /// `nats://` addresses (an error without the `nats` feature).
    Nats,
    /// `amqp://` addresses (an error without the `rmq` feature).
    Rmq,
    Custom(Arc<dyn ClientConnector>),
}

impl Dialer {
    /// The built-in transport for `addr`.
    pub fn for_addr(addr: &str) -> Self {
        if addr.starts_with(NATS_SCHEME) {
            Dialer::Nats
        } else if RMQ_SCHEMES.iter().any(|s| addr.starts_with(s)) {
            Dialer::Rmq
        } else {
            Dialer::Tcp
        }
    }
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dialer::Tcp => "Tcp",
            Dialer::Nats => "Nats",
            Dialer::Rmq => "Rmq",
            Dialer::Custom(_) => "Custom",
        })
    }
}

#[derive(Clone)]
pub(crate) enum Link {
    Tcp(Arc<TcpLink>),
    #[cfg(feature = "nats")]
    Nats(Arc<NatsLink>),
    Custom(Arc<dyn ClientTransport>),
}

// The built-in links are called through their own methods (`TcpLink::close(conn, …)`):
// `conn.close(…)` on the `Arc` would pick `ClientTransport for Arc<T>`.
impl Link {
    /// The link's calls awaiting replies.
    pub fn replies(&self) -> &ReplyRouter {
        match self {
            Link::Tcp(conn) => &conn.replies,
            #[cfg(feature = "nats")]
            Link::Nats(link) => &link.replies,
            Link::Custom(transport) => transport.replies(),
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Link::Tcp(conn) => TcpLink::is_closed(conn),
            #[cfg(feature = "nats")]
            Link::Nats(link) => NatsLink::is_closed(link),
            Link::Custom(transport) => transport.is_closed(),
        }
    }

    /// Ends the link, failing every pending call with `reason`.
    pub fn close(&self, reason: &str) {
        match self {
            Link::Tcp(conn) => TcpLink::close(conn, reason),
            #[cfg(feature = "nats")]
            Link::Nats(link) => NatsLink::close(link, reason),
            Link::Custom(transport) => transport.close(reason),
        }
    }

    /// Sends request `id` (already registered). A link that is over fails it with
    /// [`ClientError::ConnectionClosed`]; a custom transport's error is returned as is.
    /// The packet is dropped once queued, which frees its payload buffer for the next
    /// call.
    pub async fn request(
        &self,
        pattern: &Pattern,
        id: u64,
        packet: Outgoing<'_>,
    ) -> Result<(), ClientError> {
        match self {
            Link::Tcp(conn) => conn
                .write(|dst| packet.put(Wire::Tcp, dst))
                .await
                .map_err(|reason| conn.closed_error(reason)),
            #[cfg(feature = "nats")]
            Link::Nats(link) => nats_request(link, pattern, id, packet).await,
            Link::Custom(transport) => custom_request(transport, pattern, id, packet).await,
        }
    }

    /// Sends requests `first..first + n`, one per payload of `batch` (already registered):
    /// TCP queues them all at once; other links take them one by one.
    pub async fn request_batch(
        &self,
        pattern: &Pattern,
        first: u64,
        batch: &Batch<'_>,
    ) -> Result<(), ClientError> {
        if let Link::Tcp(conn) = self {
            let put = |dst: &mut BytesMut| {
                for (id, data) in (first..).zip(batch.payloads.iter(batch.range.clone())) {
                    let metadata = batch.metadata.as_deref();
                    Wire::Tcp.outbound_raw(dst, batch.wire_pattern, data, metadata, Some(id));
                }
            };
            return conn
                .write_frames(put, batch.range.len())
                .await
                .map_err(|reason| conn.closed_error(reason));
        }
        for (id, data) in (first..).zip(batch.payloads.iter(batch.range.clone())) {
            let packet = Outgoing {
                wire_pattern: batch.wire_pattern,
                data: Payload::copy_of(data),
                metadata: batch.metadata.clone(),
                id: Some(id),
            };
            self.request(pattern, id, packet).await?;
        }
        Ok(())
    }

    /// Sends an event; resolves once it has been handed to the socket.
    pub async fn event(&self, pattern: &Pattern, packet: Outgoing<'_>) -> Result<(), ClientError> {
        match self {
            Link::Tcp(conn) => {
                let written = conn
                    .write_noticed(|dst| packet.put(Wire::Tcp, dst))
                    .await
                    .map_err(|reason| conn.closed_error(reason))?;
                drop(packet);
                written
                    .await
                    .map_err(|_| conn.closed_error(conn.replies.calls.closed_reason()))
            }
            #[cfg(feature = "nats")]
            Link::Nats(link) => nats_event(link, pattern, packet).await,
            Link::Custom(transport) => custom_event(transport, pattern, packet).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::Outgoing;
    use crate::client::payload::Payload;
    use crate::packet::Wire;

    #[test]
    fn packets_are_the_packet_modules_bytes() {
        let metadata = br#"{"traceId":"t"}"#.to_vec();
        for (pattern, data, metadata, id) in [
            (&br#""sum""#[..], &[1, 2][..], None, Some(7)),
            (
                br#"{"cmd":"sum"}"#,
                &[][..],
                Some(metadata.clone()),
                Some(u64::MAX),
            ),
            (br#""log""#, &[3][..], None, None),
            (
                "\"求和\"".as_bytes(),
                &[4][..],
                Some(metadata.clone()),
                None,
            ),
        ] {
            for wire in [Wire::Tcp, Wire::Bare] {
                let packet = || Outgoing {
                    wire_pattern: pattern,
                    data: Payload::serialize(&(data, "求和1111 😀")).unwrap(),
                    metadata: metadata.clone(),
                    id,
                };
                let mut expected = BytesMut::new();
                let p = packet();
                wire.outbound_raw(
                    &mut expected,
                    p.wire_pattern,
                    &p.data,
                    p.metadata.as_deref(),
                    p.id,
                );
                assert_eq!(packet().into_packet(wire), &expected[..], "{wire:?}");
                let mut framed = BytesMut::from(&b"12#{}"[..]);
                packet().put(wire, &mut framed);
                assert_eq!(&framed[5..], &expected[..], "appends");
            }
        }
    }
}
