//! Nest TCP packets: the JSON objects inside frames, in both directions.
//!
//! Outgoing packets are written as JSON text directly, with keys in the order Nest writes
//! them, and never with extra keys (a Nest client treats a response with an unknown key as
//! a foreign payload). Incoming packets are parsed lazily: `data` stays raw JSON until a
//! handler deserialises it into its own type.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::codec::encode_frame;
use crate::error::NO_HANDLER_MESSAGE;

/// Deserialises a present field (even `null`) as `Some(raw)`; absent fields use `default`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct InboundFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    pattern: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    metadata: Option<&'a RawValue>,
}

/// A packet received by a server, classified as Nest's `ServerTCP` classifies it.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    /// Has an `id` key (of any JSON type): expects a reply echoing that id.
    Request {
        /// Raw JSON of `pattern` (`None` if absent: routes nowhere).
        pattern: Option<Bytes>,
        /// Raw JSON of `data` (`None` if absent, Nest's `undefined`).
        data: Option<Bytes>,
        /// Raw JSON of `id`, echoed back verbatim.
        id: Bytes,
        /// Raw JSON of `metadata`, if present.
        metadata: Option<Bytes>,
    },
    /// No `id` key: fire-and-forget.
    Event {
        /// Raw JSON of `pattern`.
        pattern: Option<Bytes>,
        /// Raw JSON of `data`.
        data: Option<Bytes>,
        /// Raw JSON of `metadata`, if present.
        metadata: Option<Bytes>,
    },
    /// Valid JSON with neither `pattern` nor `data` (including non-objects such as `5` or
    /// `[]`): Nest handles it as an event with an undefined pattern, i.e. logs and drops it.
    Undefined,
}

/// Why a frame does not hold a usable packet.
#[derive(Debug, thiserror::Error)]
#[error("frame is not valid JSON: {0}")]
pub struct InvalidJson(#[from] serde_json::Error);

/// Parses a frame's JSON into an [`Inbound`] packet without copying field values.
pub fn parse_inbound(frame: &Bytes) -> Result<Inbound, InvalidJson> {
    let slice = |raw: &RawValue| frame.slice_ref(raw.get().as_bytes());
    let fields: InboundFields<'_> = match serde_json::from_slice(frame) {
        Ok(fields) => fields,
        Err(e) => {
            // Valid JSON that is not an object (or has an odd shape) is an undefined event
            // in Nest, not a framing error; only unparsable text closes the connection.
            serde_json::from_slice::<serde::de::IgnoredAny>(frame)?;
            if e.is_data() && !frame.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b == b'{') {
                return Ok(Inbound::Undefined);
            }
            return Err(InvalidJson(e));
        }
    };
    if fields.pattern.is_none() && fields.data.is_none() {
        return Ok(Inbound::Undefined);
    }
    let pattern = fields.pattern.map(slice);
    let data = fields.data.map(slice);
    let metadata = fields.metadata.map(slice);
    Ok(match fields.id {
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

/// Scratch JSON builder: packets are assembled as text, then framed.
struct JsonText(Vec<u8>);

impl JsonText {
    fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }
    fn push(&mut self, s: &[u8]) -> &mut Self {
        self.0.extend_from_slice(s);
        self
    }
    fn frame_into(self, dst: &mut BytesMut) {
        // Every piece pushed is UTF-8 JSON (serde_json output or validated frame slices).
        let text = String::from_utf8(self.0)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        encode_frame(&text, dst);
    }
}

/// `{"response":R,"isDisposed":true,"id":ID}`, or `{"isDisposed":true,"id":ID}` when the
/// handler produced no value (Nest's `undefined`).
pub fn encode_response(dst: &mut BytesMut, response: Option<&[u8]>, id: &[u8]) {
    let mut j = JsonText::with_capacity(40 + response.map_or(0, <[u8]>::len) + id.len());
    if let Some(r) = response {
        j.push(b"{\"response\":").push(r).push(b",");
    } else {
        j.push(b"{");
    }
    j.push(b"\"isDisposed\":true,\"id\":").push(id).push(b"}");
    j.frame_into(dst);
}

/// `{"err":E,"isDisposed":true,"id":ID}`.
pub fn encode_error(dst: &mut BytesMut, err: &[u8], id: &[u8]) {
    let mut j = JsonText::with_capacity(32 + err.len() + id.len());
    j.push(b"{\"err\":")
        .push(err)
        .push(b",\"isDisposed\":true,\"id\":")
        .push(id)
        .push(b"}");
    j.frame_into(dst);
}

/// Nest's exact no-handler reply: `{"id":ID,"status":"error","err":"There is no …"}`.
pub fn encode_no_handler(dst: &mut BytesMut, id: &[u8]) {
    let mut j = JsonText::with_capacity(100 + id.len());
    j.push(b"{\"id\":")
        .push(id)
        .push(b",\"status\":\"error\",\"err\":\"")
        .push(NO_HANDLER_MESSAGE.as_bytes())
        .push(b"\"}");
    j.frame_into(dst);
}

/// `{"pattern":P,"data":D,"id":"ID"}` (a request) or, with `id = None`, an event.
pub fn encode_outbound<T: Serialize + ?Sized>(
    dst: &mut BytesMut,
    pattern_json: &str,
    data: &T,
    id: Option<u64>,
) -> Result<(), serde_json::Error> {
    let mut j = JsonText::with_capacity(64);
    j.push(b"{\"pattern\":")
        .push(pattern_json.as_bytes())
        .push(b",\"data\":");
    serde_json::to_writer(&mut j.0, data)?;
    if let Some(id) = id {
        let mut buf = itoa::Buffer::new();
        j.push(b",\"id\":\"").push(buf.format(id).as_bytes()).push(b"\"");
    }
    j.push(b"}");
    j.frame_into(dst);
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyFields<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    err: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    response: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present", rename = "isDisposed")]
    is_disposed: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    #[allow(dead_code)]
    status: Option<&'a RawValue>,
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
        Some(b'-' | b'0'..=b'9') => t.parse::<f64>().map_or(true, |f| f != 0.0),
        _ => true,
    }
}

/// Parses a frame received by a client.
pub fn parse_reply(frame: &Bytes) -> Result<Reply, InvalidJson> {
    let slice = |raw: &RawValue| frame.slice_ref(raw.get().as_bytes());
    match serde_json::from_slice::<ReplyFields<'_>>(frame) {
        Ok(f) => {
            let id = f.id.map(slice);
            if let Some(err) = f.err.filter(|e| truthy(e)) {
                return Ok(Reply::Error { id, err: slice(err) });
            }
            Ok(Reply::Value {
                id,
                response: f.response.map(slice),
                disposed: f.is_disposed.is_some_and(truthy),
            })
        }
        Err(_) => {
            // A foreign payload (unknown keys or not an object): Nest delivers the whole
            // value as the response and completes.
            #[derive(Deserialize)]
            struct IdOnly<'a> {
                #[serde(default, borrow, deserialize_with = "present")]
                id: Option<&'a RawValue>,
            }
            serde_json::from_slice::<serde::de::IgnoredAny>(frame)?;
            let id = serde_json::from_slice::<IdOnly<'_>>(frame)
                .ok()
                .and_then(|f| f.id.map(slice));
            Ok(Reply::Value {
                id,
                response: Some(frame.clone()),
                disposed: true,
            })
        }
    }
}

#[cfg(test)]
mod tests;
