//! Nest TCP packets: the JSON objects inside frames, in both directions.
//!
//! Outgoing packets are written as JSON text directly, with keys in the order Nest writes
//! them, and never with extra keys (a Nest client treats a response with an unknown key as
//! a foreign payload). Incoming packets are parsed lazily: `data` stays raw JSON until a
//! handler deserialises it into its own type.

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::codec::encode_frame_parts;
use crate::error::NO_HANDLER_MESSAGE;

/// Selected top-level fields of a JSON object, as raw slices of the frame.
///
/// A hand-written visitor rather than a derived struct: derived structs also accept JSON
/// arrays (filling fields by position) and reject duplicate keys, where Nest's `JSON.parse`
/// yields an array (not a packet) and keeps the last duplicate. It stores nothing but the
/// wanted fields, so parsing a packet allocates nothing.
struct Fields<'a, const N: usize> {
    /// The raw value of each wanted key (the last one, for duplicates).
    values: [Option<&'a RawValue>; N],
    /// How many keys the object has in all.
    total: usize,
    /// Whether any key is not among the wanted ones.
    unknown: bool,
}

struct FieldsSeed<const N: usize>(&'static [&'static str; N]);

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for FieldsSeed<N> {
    type Value = Fields<'de, N>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for FieldsSeed<N> {
    type Value = Fields<'de, N>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields {
            values: [None; N],
            total: 0,
            unknown: false,
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            fields.total += 1;
            match self.0.iter().position(|k| *k == key) {
                Some(i) => fields.values[i] = Some(value),
                None => fields.unknown = true,
            }
        }
        Ok(fields)
    }
}

/// Parses `frame` as an object, keeping `keys`; `Ok(None)` for valid JSON that is not an
/// object. `text` is `frame` as `&str` when it is known to be UTF-8: serde_json then skips
/// checking every string a second time.
fn object_fields<'a, const N: usize>(
    frame: &'a Bytes,
    text: Option<&'a str>,
    keys: &'static [&'static str; N],
) -> Result<Option<Fields<'a, N>>, InvalidJson> {
    let parsed = match text {
        Some(text) => fields_from(serde_json::Deserializer::from_str(text), keys),
        None => fields_from(serde_json::Deserializer::from_slice(frame), keys),
    };
    match parsed {
        Ok(fields) => Ok(Some(fields)),
        Err(e) => {
            serde_json::from_slice::<de::IgnoredAny>(frame).map_err(|_| InvalidJson(e))?;
            Ok(None)
        }
    }
}

fn fields_from<'a, R: serde_json::de::Read<'a>, const N: usize>(
    mut de: serde_json::Deserializer<R>,
    keys: &'static [&'static str; N],
) -> Result<Fields<'a, N>, serde_json::Error> {
    let fields = FieldsSeed(keys).deserialize(&mut de)?;
    de.end()?;
    Ok(fields)
}

/// A packet received by a server, classified as Nest's `ServerTCP` classifies it.
///
/// Each field is the raw JSON of that key: a [`Bytes`] slice of the frame, or (inside
/// nestling's server) a [`Span`] of it, so that one reference to the frame serves them all.
#[derive(Debug, PartialEq)]
pub enum Inbound<F = Bytes> {
    /// Has an `id` key (of any JSON type): expects a reply echoing that id.
    Request {
        /// Raw JSON of `pattern` (`None` if absent: routes nowhere).
        pattern: Option<F>,
        /// Raw JSON of `data` (`None` if absent, Nest's `undefined`).
        data: Option<F>,
        /// Raw JSON of `id`, echoed back verbatim.
        id: F,
        /// Raw JSON of `metadata`, if present.
        metadata: Option<F>,
    },
    /// No `id` key: fire-and-forget.
    Event {
        /// Raw JSON of `pattern`.
        pattern: Option<F>,
        /// Raw JSON of `data`.
        data: Option<F>,
        /// Raw JSON of `metadata`, if present.
        metadata: Option<F>,
    },
    /// Valid JSON with neither `pattern` nor `data` (including non-objects such as `5` or
    /// `[]`): Nest handles it as an event with an undefined pattern, i.e. logs and drops it.
    Undefined,
}

/// Where a field's value lies in its frame (byte offsets). 32 bits: frames are limited
/// well below 4 GiB (see `codec::MAX_FRAME_LEN_LIMIT`), and a small span keeps a request
/// small enough to move without a `memcpy` call.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// Bytes `start..end` (offsets past 4 GiB saturate: such a span selects nothing).
    pub(crate) fn new(start: usize, end: usize) -> Self {
        let offset = |at: usize| u32::try_from(at).unwrap_or(u32::MAX);
        Span {
            start: offset(start),
            end: offset(end),
        }
    }

    /// The whole of a `len`-byte buffer.
    pub(crate) fn all(len: usize) -> Self {
        Span::new(0, len)
    }

    /// This span moved `by` bytes further into its frame.
    #[cfg(feature = "nats")]
    pub(crate) fn shifted(self, by: usize) -> Self {
        Span::new(self.start as usize + by, self.end as usize + by)
    }

    /// `part`'s place in `frame`; `part` must be a subslice of `frame` (as the slices a
    /// parser borrows from the frame's text are).
    fn of(frame: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
        debug_assert!(start <= frame.len() && part.len() <= frame.len() - start);
        Span::new(start, start + part.len())
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }

    /// This span's bytes in `frame` (empty if it does not fit, which a span made from
    /// `frame` always does).
    pub(crate) fn get(self, frame: &[u8]) -> &[u8] {
        frame.get(self.range()).unwrap_or_default()
    }

    /// This span's text in `frame` (`None` if it does not fit or cuts a character).
    pub(crate) fn text(self, frame: &str) -> Option<&str> {
        frame.get(self.range())
    }

    /// This span's bytes as a slice of `frame` (empty if it does not fit).
    pub(crate) fn slice(self, frame: &Bytes) -> Bytes {
        match self.end as usize <= frame.len() && self.start <= self.end {
            true => frame.slice(self.range()),
            false => Bytes::new(),
        }
    }
}

impl Inbound<Span> {
    /// The packet with its spans turned into slices of `frame`.
    fn cut(self, frame: &Bytes) -> Inbound {
        let slice = |s: Span| s.slice(frame);
        match self {
            Inbound::Request {
                pattern,
                data,
                id,
                metadata,
            } => Inbound::Request {
                pattern: pattern.map(slice),
                data: data.map(slice),
                id: slice(id),
                metadata: metadata.map(slice),
            },
            Inbound::Event {
                pattern,
                data,
                metadata,
            } => Inbound::Event {
                pattern: pattern.map(slice),
                data: data.map(slice),
                metadata: metadata.map(slice),
            },
            Inbound::Undefined => Inbound::Undefined,
        }
    }
}

/// Why a frame does not hold a usable packet.
#[derive(Debug, thiserror::Error)]
#[error("frame is not valid JSON: {0}")]
pub struct InvalidJson(#[from] serde_json::Error);

/// Parses a frame's JSON into an [`Inbound`] packet without copying field values.
pub fn parse_inbound(frame: &Bytes) -> Result<Inbound, InvalidJson> {
    Ok(parse_inbound_spans(frame)?.cut(frame))
}

/// [`parse_inbound`] with the fields as spans of `frame`.
pub(crate) fn parse_inbound_spans(frame: &Bytes) -> Result<Inbound<Span>, InvalidJson> {
    inbound_from(frame, std::str::from_utf8(frame).ok())
}

/// A packet parsed from a TCP frame (its fields are spans of the frame), whose `data` may
/// still need checking.
pub(crate) struct Parsed {
    pub packet: Inbound<Span>,
    /// `data` was cut from a Nest-shaped packet without checking that it is one JSON value.
    /// Whoever uses it must check it — a handler decoding its payload does — and hand the
    /// frame to the general parse if it is not (see `server::dispatch`).
    pub data_unchecked: bool,
}

/// [`parse_inbound`] for a frame the codec already knows to be UTF-8; a Nest-shaped
/// packet's `data` is left for the dispatcher to check (see [`Parsed`]).
pub(crate) fn parse_inbound_frame(frame: &crate::codec::FrameText) -> Result<Parsed, InvalidJson> {
    if let Some((packet, data_unchecked)) = nest_shaped(frame.as_str(), true) {
        return Ok(Parsed {
            packet,
            data_unchecked,
        });
    }
    Ok(Parsed {
        packet: inbound_general(frame.bytes(), Some(frame.as_str()))?,
        data_unchecked: false,
    })
}

/// The general parse of a frame the codec already knows to be UTF-8 (for a Nest-shaped
/// packet whose `data` turned out not to be JSON, see [`Parsed`]).
pub(crate) fn parse_frame_general(
    frame: &crate::codec::FrameText,
) -> Result<Inbound<Span>, InvalidJson> {
    inbound_general(frame.bytes(), Some(frame.as_str()))
}

/// Whether `data` is one JSON value: what the general parse checks and
/// [`Parsed::data_unchecked`] defers.
pub(crate) fn data_is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<de::IgnoredAny>(data).is_ok()
}

fn inbound_from(frame: &Bytes, text: Option<&str>) -> Result<Inbound<Span>, InvalidJson> {
    if let Some((packet, _)) = text.and_then(|t| nest_shaped(t, false)) {
        return Ok(packet);
    }
    inbound_general(frame, text)
}

/// Every packet Nest's clients (and nestling's) write has one shape:
/// `{"pattern":P,"data":D,"id":I}` for a request, `{"pattern":P,"data":D}` for an event —
/// these keys in this order, no whitespace, `P` a string. A frame of exactly that shape is
/// cut at its fixed tokens, and serde only checks that `D` is one JSON value; anything else
/// (other key order, whitespace, escapes in `P` or `I`, `metadata`, …) returns `None` and
/// takes the general parse. The cut is exact, not a guess: the text is then the fixed
/// tokens around one valid value and simple strings, which JSON's grammar reads only one
/// way — the way the general parse reads it (`tests::shaped`).
///
/// With `may_defer`, the check of `D` (a request's or an event's) may be left to the
/// caller (the flag returned is then `true`), except where `D` holds `"metadata"`: Nest
/// writes `metadata` between `data` and `id`, and such packets, whose cut `D` is not one
/// value, must take the general parse at once rather than after a failed payload decode.
fn nest_shaped(text: &str, may_defer: bool) -> Option<(Inbound<Span>, bool)> {
    const PATTERN: &[u8] = b"{\"pattern\":\"";
    const DATA: &[u8] = b",\"data\":";
    const ID: &[u8] = b",\"id\":";
    let b = text.as_bytes();
    if !b.starts_with(PATTERN) || b.last() != Some(&b'}') {
        return None;
    }
    // P: a string without escapes (it ends at the first quote).
    let p_end = PATTERN.len() + simple_string_len(&b[PATTERN.len()..])?;
    let data_start = p_end + 1 + DATA.len();
    if b.get(p_end + 1..data_start)? != DATA {
        return None;
    }
    let body = &b[..b.len() - 1];
    // I after `,"id":`; without it the frame may still be an event.
    let (data_end, id) = match trailing_id_start(body) {
        Some(start) if body[..start].ends_with(ID) => (start - ID.len(), Some(start)),
        _ => (body.len(), None),
    };
    let data = text.get(data_start..data_end)?;
    if !unpadded(data) {
        return None;
    }
    // (`from_str`: the frame is known UTF-8, so strings are not checked again.)
    // (Nest's `metadata` is an object: only a cut ending in `}` can hold it.)
    let deferred = may_defer && !(data.ends_with('}') && data.contains("\"metadata\""));
    if !deferred && serde_json::from_str::<de::IgnoredAny>(data).is_err() {
        return None;
    }
    let span = Span::new;
    let pattern = Some(span(PATTERN.len() - 1, p_end + 1));
    let data = Some(span(data_start, data_end));
    let packet = match id {
        Some(start) => Inbound::Request {
            pattern,
            data,
            id: span(start, body.len()),
            metadata: None,
        },
        None => Inbound::Event {
            pattern,
            data,
            metadata: None,
        },
    };
    Some((packet, deferred))
}

/// Where the id that ends `body` (a packet's text without its closing `}`) starts: a string
/// without escapes, or a plain non-negative integer. `None`: no such id ends it.
fn trailing_id_start(body: &[u8]) -> Option<usize> {
    match body.last() {
        // The last quote before the closing one opens the string if nothing between them
        // needs an escape. (`memrchr` and a branch-free check: ids are 20–36 characters.)
        Some(b'"') => {
            let rest = &body[..body.len() - 1];
            memchr::memrchr(b'"', rest).filter(|&open| no_escapes(&rest[open + 1..]))
        }
        Some(c) if c.is_ascii_digit() => body
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map(|last| last + 1)
            .filter(|&start| body.len() - start == 1 || body[start] != b'0'),
        _ => None,
    }
}

/// Whether `content` can stand in a JSON string as it is: no escape and no control
/// character. Folded without early exit, so the compiler checks many bytes per step.
fn no_escapes(content: &[u8]) -> bool {
    !content
        .iter()
        .fold(false, |bad, &c| bad | (c < 0x20) | (c == b'\\'))
}

/// A value cut from a shaped packet has no whitespace around it: the general parse's slice
/// of the same value would not include any.
fn unpadded(value: &str) -> bool {
    let edge = |c: Option<&u8>| c.is_some_and(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
    edge(value.as_bytes().first()) && edge(value.as_bytes().last())
}

/// The reply Nest's servers (and nestling's) write for a value,
/// `{"response":R,"isDisposed":true,"id":I}`, cut at its fixed tokens like
/// [`nest_shaped`] cuts requests: serde only checks that `R` is one JSON value, and anything
/// else (errors, streamed items, other spellings) takes the general parse.
fn reply_shaped(frame: &Bytes, text: &str) -> Option<Reply> {
    const RESPONSE: &[u8] = b"{\"response\":";
    const TAIL: &[u8] = b",\"isDisposed\":true,\"id\":";
    let b = text.as_bytes();
    if !b.starts_with(RESPONSE) || b.last() != Some(&b'}') {
        return None;
    }
    let body = &b[..b.len() - 1];
    let id_start = trailing_id_start(body).filter(|&start| body[..start].ends_with(TAIL))?;
    let response_end = id_start - TAIL.len();
    let response = text.get(RESPONSE.len()..response_end)?;
    if !unpadded(response) || serde_json::from_str::<de::IgnoredAny>(response).is_err() {
        return None;
    }
    Some(Reply::Value {
        id: Some(frame.slice(id_start..body.len())),
        response: Some(frame.slice(RESPONSE.len()..response_end)),
        disposed: true,
    })
}

/// Length of a JSON string's content up to its closing quote, if it has no escapes and no
/// control characters (then the content is the string itself).
fn simple_string_len(b: &[u8]) -> Option<usize> {
    let end = b
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (b[end] == b'"').then_some(end)
}

/// [`parse_inbound`] without the shortcut for Nest-shaped packets: what the shortcut must
/// always agree with (the `packet` fuzz target checks it).
#[doc(hidden)]
pub fn parse_inbound_general(frame: &Bytes) -> Result<Inbound, InvalidJson> {
    Ok(inbound_general(frame, std::str::from_utf8(frame).ok())?.cut(frame))
}

/// The general packet parse: any key order, whitespace, escapes, extra keys, non-objects.
fn inbound_general(frame: &Bytes, text: Option<&str>) -> Result<Inbound<Span>, InvalidJson> {
    let slice = |raw: &RawValue| Span::of(frame, raw.get().as_bytes());
    // Valid JSON that is not an object is an undefined event in Nest, not a framing
    // error; only unparsable text closes the connection.
    const KEYS: [&str; 4] = ["pattern", "data", "id", "metadata"];
    let Some(Fields {
        values: [pattern, data, id, metadata],
        ..
    }) = object_fields(frame, text, &KEYS)?
    else {
        return Ok(Inbound::Undefined);
    };
    if pattern.is_none() && data.is_none() {
        return Ok(Inbound::Undefined);
    }
    let pattern = pattern.map(slice);
    let data = data.map(slice);
    let metadata = metadata.map(slice);
    Ok(match id {
        Some(id) => Inbound::Request {
            pattern,
            data,
            id: slice(id),
            metadata,
        },
        None => Inbound::Event {
            pattern,
            data,
            metadata,
        },
    })
}

/// How packets travel: framed (`<len>#<json>`) on Nest's TCP transport, bare JSON on
/// NATS, where every message already holds exactly one packet. The packet text is the
/// same on both; the encoders below write it for either.
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
    /// Appends one packet made of `parts` (all UTF-8; ASCII literals at even positions,
    /// values between them, see [`encode_frame_parts`]) to `dst`.
    fn put(self, dst: &mut BytesMut, parts: &[&[u8]]) {
        match self {
            Wire::Tcp => encode_frame_parts(dst, parts),
            Wire::Bare => {
                dst.reserve(parts.iter().map(|p| p.len()).sum());
                for p in parts {
                    dst.extend_from_slice(p);
                }
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
                    b"{\"response\":",
                    r,
                    b",\"isDisposed\":true,\"id\":",
                    id,
                    b"}",
                ],
            ),
            None => self.put(dst, &[b"{\"isDisposed\":true,\"id\":", id, b"}"]),
        }
    }

    /// `{"response":R,"id":ID}`: a streamed item that is not the last.
    pub fn stream_item(self, dst: &mut BytesMut, response: &[u8], id: &[u8]) {
        self.put(dst, &[b"{\"response\":", response, b",\"id\":", id, b"}"]);
    }

    /// `{"err":E,"isDisposed":true,"id":ID}`.
    pub fn error(self, dst: &mut BytesMut, err: &[u8], id: &[u8]) {
        self.put(
            dst,
            &[b"{\"err\":", err, b",\"isDisposed\":true,\"id\":", id, b"}"],
        );
    }

    /// Nest's exact no-handler reply: `{"id":ID,"status":"error","err":"There is no …"}`.
    pub fn no_handler(self, dst: &mut BytesMut, id: &[u8]) {
        self.put(
            dst,
            &[
                b"{\"id\":",
                id,
                b",\"status\":\"error\",\"err\":\"",
                NO_HANDLER_MESSAGE.as_bytes(),
                b"\"}",
            ],
        );
    }

    /// `{"pattern":P,"data":D,"metadata":M,"id":"ID"}` (a request; `metadata` only when
    /// given, where Nest 12's clients put it) or, with `id = None`, an event.
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
    pub(crate) fn outbound_raw(
        self,
        dst: &mut BytesMut,
        pattern_json: &[u8],
        data: &[u8],
        metadata: Option<&[u8]>,
        id: Option<u64>,
    ) {
        let mut id_text = itoa::Buffer::new();
        let id_text: &[u8] = id.map_or(b"", |id| id_text.format(id).as_bytes());
        // Absent optional fields are empty parts: no allocation on the client's send path.
        let (meta_key, metadata): (&[u8], &[u8]) = match metadata {
            Some(m) => (b",\"metadata\":", m),
            None => (b"", b""),
        };
        let (id_open, id_close): (&[u8], &[u8]) = match id {
            Some(_) => (b",\"id\":\"", b"\""),
            None => (b"", b""),
        };
        self.put(
            dst,
            &[
                b"{\"pattern\":",
                pattern_json,
                b",\"data\":",
                data,
                meta_key,
                metadata,
                id_open,
                id_text,
                id_close,
                b"}",
            ],
        );
    }
}

/// [`Wire::response`] on TCP: `{"response":R,"isDisposed":true,"id":ID}` framed.
pub fn encode_response(dst: &mut BytesMut, response: Option<&[u8]>, id: &[u8]) {
    Wire::Tcp.response(dst, response, id)
}

/// [`Wire::stream_item`] on TCP: `{"response":R,"id":ID}` framed.
pub fn encode_stream_item(dst: &mut BytesMut, response: &[u8], id: &[u8]) {
    Wire::Tcp.stream_item(dst, response, id)
}

/// [`Wire::error`] on TCP: `{"err":E,"isDisposed":true,"id":ID}` framed.
pub fn encode_error(dst: &mut BytesMut, err: &[u8], id: &[u8]) {
    Wire::Tcp.error(dst, err, id)
}

/// [`Wire::no_handler`] on TCP: Nest's no-handler reply, framed.
pub fn encode_no_handler(dst: &mut BytesMut, id: &[u8]) {
    Wire::Tcp.no_handler(dst, id)
}

/// `{"pattern":P,"data":D,"id":"ID"}` (a request) or, with `id = None`, an event, framed.
pub fn encode_outbound<T: Serialize + ?Sized>(
    dst: &mut BytesMut,
    pattern_json: &str,
    data: &T,
    id: Option<u64>,
) -> Result<(), serde_json::Error> {
    Wire::Tcp.outbound(dst, pattern_json, data, None, id)
}

/// Like [`encode_outbound`], with a `metadata` object (raw JSON) between `data` and `id`,
/// where Nest 12's `ClientTCP` puts it.
pub fn encode_outbound_with_metadata<T: Serialize + ?Sized>(
    dst: &mut BytesMut,
    pattern_json: &str,
    data: &T,
    metadata: Option<&[u8]>,
    id: Option<u64>,
) -> Result<(), serde_json::Error> {
    Wire::Tcp.outbound(dst, pattern_json, data, metadata, id)
}

/// A reply received by a client, interpreted as Nest's `ClientTCP` interprets it.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// `err` is truthy: the call failed with this raw error.
    Error {
        /// Raw JSON of `id`.
        id: Option<Bytes>,
        /// Raw JSON of `err`.
        err: Bytes,
    },
    /// A value and/or completion.
    Value {
        /// Raw JSON of `id`.
        id: Option<Bytes>,
        /// Raw JSON of `response` (`None` when absent).
        response: Option<Bytes>,
        /// `isDisposed` is truthy: no more packets follow for this id.
        disposed: bool,
    },
}

impl Reply {
    /// The raw id JSON, if any.
    pub fn id(&self) -> Option<&Bytes> {
        match self {
            Reply::Error { id, .. } | Reply::Value { id, .. } => id.as_ref(),
        }
    }
}

/// JavaScript truthiness of a JSON value: `null`, `false`, `0` and `""` are falsy.
fn truthy(raw: &RawValue) -> bool {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'n') | Some(b'f') => false,
        Some(b'"') => t.len() > 2,
        Some(b'-' | b'0'..=b'9') => t.parse::<f64>() != Ok(0.0),
        _ => true,
    }
}

/// Keys a Nest response may have; any other key makes the whole object a foreign payload.
const REPLY_KEYS: [&str; 5] = ["id", "err", "response", "isDisposed", "status"];

/// Parses a frame received by a client.
pub fn parse_reply(frame: &Bytes) -> Result<Reply, InvalidJson> {
    reply_from(frame, std::str::from_utf8(frame).ok())
}

/// [`parse_reply`] for a frame the codec already validated as UTF-8.
pub(crate) fn parse_reply_frame(frame: &crate::codec::FrameText) -> Result<Reply, InvalidJson> {
    reply_from(frame.bytes(), Some(frame.as_str()))
}

fn reply_from(frame: &Bytes, text: Option<&str>) -> Result<Reply, InvalidJson> {
    if let Some(reply) = text.and_then(|t| reply_shaped(frame, t)) {
        return Ok(reply);
    }
    reply_general(frame, text)
}

/// [`parse_reply`] without the shortcut for value replies: what the shortcut must always
/// agree with (the `packet` fuzz target checks it).
#[doc(hidden)]
pub fn parse_reply_general(frame: &Bytes) -> Result<Reply, InvalidJson> {
    reply_general(frame, std::str::from_utf8(frame).ok())
}

/// The general reply parse: any key order, whitespace, escapes, errors, foreign payloads.
fn reply_general(frame: &Bytes, text: Option<&str>) -> Result<Reply, InvalidJson> {
    let slice = |raw: &RawValue| frame.slice_ref(raw.get().as_bytes());
    let fields = object_fields(frame, text, &REPLY_KEYS)?;
    let id = fields.as_ref().and_then(|f| f.values[0]).map(slice);
    let Some(Fields {
        values: [_, err, response, is_disposed, _],
        ..
    }) = fields.filter(|f| f.total > 0 && !f.unknown)
    else {
        // A foreign payload (not an object, no keys, or unknown keys): Nest delivers the
        // whole value as the response and completes.
        return Ok(Reply::Value {
            id,
            response: Some(frame.clone()),
            disposed: true,
        });
    };
    if let Some(err) = err.filter(|e| truthy(e)) {
        return Ok(Reply::Error {
            id,
            err: slice(err),
        });
    }
    Ok(Reply::Value {
        id,
        response: response.map(slice),
        disposed: is_disposed.is_some_and(truthy),
    })
}

#[cfg(test)]
mod tests;
