//! Packets written: replies a server sends and requests/events a client sends, as JSON text
//! straight into the output buffer, framed or bare ([`Wire`]).

use bytes::BytesMut;
use serde::Serialize;

use crate::codec::{encode_frame_parts, Lit};
use crate::error::NO_HANDLER_MESSAGE;
use crate::utf16::utf16_len_bytes;

/// How packets travel: framed (`<len>#<json>`) on Nest's TCP transport, bare JSON on
/// NATS, where every message already holds exactly one packet. The packet text is the
/// same on both; the methods below write it for either.
///
/// Packets are written with keys in the order Nest writes them, and never with extra keys
/// (a Nest client treats a response with an unknown key as a foreign payload). Values
/// (`response`, `err`, `id`, …) are raw JSON, inserted as they are.
///
/// ```
/// use bytes::BytesMut;
/// use nestling_runtime::packet::Wire;
///
/// let (mut tcp, mut nats) = (BytesMut::new(), BytesMut::new());
/// Wire::Tcp.response(&mut tcp, Some(b"6"), br#""1""#);
/// Wire::Bare.response(&mut nats, Some(b"6"), br#""1""#);
/// assert_eq!(&tcp[..], br#"41#{"response":6,"isDisposed":true,"id":"1"}"#);
/// assert_eq!(&nats[..], br#"{"response":6,"isDisposed":true,"id":"1"}"#);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// Nest's TCP transport: each packet in a `<len>#` frame.
    Tcp,
    /// One packet per message (NATS): the JSON alone.
    Bare,
}

impl Wire {
    /// Appends one packet to `dst`: each of `parts` is a literal and the raw JSON value
    /// that follows it, then `tail` closes the packet (see [`encode_frame_parts`]).
    fn put(self, dst: &mut BytesMut, parts: &[(Lit, &[u8])], tail: Lit) {
        match self {
            Wire::Tcp => encode_frame_parts(dst, parts, tail),
            Wire::Bare => {
                let len = parts.iter().map(|(l, v)| l.len() + v.len()).sum::<usize>();
                dst.reserve(len + tail.len());
                for &(lit, value) in parts {
                    dst.extend_from_slice(lit);
                    dst.extend_from_slice(value);
                }
                dst.extend_from_slice(tail);
            }
        }
    }

    /// `{"response":R,"isDisposed":true,"id":ID}`, or `{"isDisposed":true,"id":ID}` when
    /// the handler produced no value (Nest's `undefined`).
    pub fn response(self, dst: &mut BytesMut, response: Option<&[u8]>, id: &[u8]) {
        match response {
            Some(r) => self.put(
                dst,
                &[
                    (b"{\"response\":", r),
                    (b",\"isDisposed\":true,\"id\":", id),
                ],
                b"}",
            ),
            None => self.put(dst, &[(b"{\"isDisposed\":true,\"id\":", id)], b"}"),
        }
    }

    /// `{"response":R,"id":ID}`: a streamed item that is not the last.
    pub fn stream_item(self, dst: &mut BytesMut, response: &[u8], id: &[u8]) {
        self.put(
            dst,
            &[(b"{\"response\":", response), (b",\"id\":", id)],
            b"}",
        );
    }

    /// `{"err":E,"isDisposed":true,"id":ID}`.
    pub fn error(self, dst: &mut BytesMut, err: &[u8], id: &[u8]) {
        self.put(
            dst,
            &[(b"{\"err\":", err), (b",\"isDisposed\":true,\"id\":", id)],
            b"}",
        );
    }

    /// Nest's exact no-handler reply: `{"id":ID,"status":"error","err":"There is no …"}`.
    pub fn no_handler(self, dst: &mut BytesMut, id: &[u8]) {
        self.put(
            dst,
            &[
                (b"{\"id\":", id),
                (
                    b",\"status\":\"error\",\"err\":\"",
                    NO_HANDLER_MESSAGE.as_bytes(),
                ),
            ],
            b"\"}",
        );
    }

    /// `{"pattern":P,"data":D,"metadata":M,"id":"ID"}` (a request; `metadata` only when
    /// given, where Nest 12's clients put it) or, with `id = None`, an event. `pattern_json`
    /// and `metadata` are raw JSON; `data` is serialised. A serialisation error writes
    /// nothing.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use nestling_runtime::packet::Wire;
    ///
    /// let mut dst = BytesMut::new();
    /// Wire::Tcp.outbound(&mut dst, r#""sum""#, &[1, 2], None, Some(7)).unwrap();
    /// assert_eq!(&dst[..], br#"39#{"pattern":"sum","data":[1,2],"id":"7"}"#);
    /// ```
    pub fn outbound<T: Serialize + ?Sized>(
        self,
        dst: &mut BytesMut,
        pattern_json: &str,
        data: &T,
        metadata: Option<&[u8]>,
        id: Option<u64>,
    ) -> Result<(), serde_json::Error> {
        // The payload is serialised first (it may fail); the packet is then written in one go.
        let data = serde_json::to_vec(data)?;
        self.outbound_raw(dst, pattern_json.as_bytes(), &data, metadata, id);
        Ok(())
    }

    /// [`Wire::outbound`] with `data` already serialised (raw JSON).
    ///
    /// Inlined into the client's send path, which frames straight into the TCP outbox.
    #[inline(always)]
    pub(crate) fn outbound_raw(
        self,
        dst: &mut BytesMut,
        pattern: &[u8],
        data: &[u8],
        metadata: Option<&[u8]>,
        id: Option<u64>,
    ) {
        // Straight-line for this one packet shape (not the loop over parts of the other
        // packets): it is every client call's path.
        let mut id_text = itoa::Buffer::new();
        let id = id.map(|id| id_text.format(id).as_bytes());
        let values = pattern.len() + data.len() + metadata.map_or(0, <[u8]>::len);
        let syntax = PATTERN_KEY.len()
            + DATA_KEY.len()
            + metadata.map_or(0, |_| METADATA_KEY.len())
            + id.map_or(0, |id| ID_KEY.len() + id.len() + 1)
            + 1;
        let mut header = itoa::Buffer::new();
        let header = match self {
            Wire::Tcp => {
                // Values may be non-ASCII; the syntax and the id's digits are ASCII.
                let units = syntax
                    + utf16_len_bytes(pattern)
                    + utf16_len_bytes(data)
                    + metadata.map_or(0, utf16_len_bytes);
                header.format(units).as_bytes()
            }
            Wire::Bare => &[],
        };
        dst.reserve(header.len() + 1 + syntax + values);
        if self == Wire::Tcp {
            dst.extend_from_slice(header);
            dst.extend_from_slice(b"#");
        }
        dst.extend_from_slice(PATTERN_KEY);
        dst.extend_from_slice(pattern);
        dst.extend_from_slice(DATA_KEY);
        dst.extend_from_slice(data);
        if let Some(metadata) = metadata {
            dst.extend_from_slice(METADATA_KEY);
            dst.extend_from_slice(metadata);
        }
        if let Some(id) = id {
            dst.extend_from_slice(ID_KEY);
            dst.extend_from_slice(id);
            dst.extend_from_slice(b"\"");
        }
        dst.extend_from_slice(b"}");
    }
}

const PATTERN_KEY: &[u8] = b"{\"pattern\":";
const DATA_KEY: &[u8] = b",\"data\":";
const METADATA_KEY: &[u8] = b",\"metadata\":";
const ID_KEY: &[u8] = b",\"id\":\"";

#[cfg(test)]
mod tests;
