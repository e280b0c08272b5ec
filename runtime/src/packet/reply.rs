//! Replies a client receives, interpreted as Nest's `ClientTCP` interprets them: a fast cut
//! of the value replies Nest's servers write ([`reply_shaped`]) and the general serde parse
//! ([`reply_general`]) it must always agree with.

use bytes::Bytes;
use serde::de;
use serde_json::value::RawValue;

use super::fields::{object_fields, Fields};
use super::shape::{trailing_id_start, unpadded};
use super::InvalidJson;
use crate::codec::FrameText;

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

/// The TCP client's parse of a frame the codec validated as UTF-8: [`parse_reply`]
/// without checking the text's UTF-8 again.
pub(crate) fn parse_reply_frame(frame: &FrameText) -> Result<Reply, InvalidJson> {
    reply_from(frame.bytes(), Some(frame.as_str()))
}

/// Parses a frame received by a client (or a NATS reply's payload): the fast cut for value
/// replies in the shape Nest's servers write, else the general parse (the result is the
/// same either way).
///
/// ```
/// use bytes::Bytes;
/// use nestling_runtime::packet::{parse_reply, Reply};
///
/// let frame = Bytes::from_static(br#"{"err":"boom","isDisposed":true,"id":"7"}"#);
/// assert!(matches!(parse_reply(&frame).unwrap(), Reply::Error { .. }));
/// ```
pub fn parse_reply(frame: &Bytes) -> Result<Reply, InvalidJson> {
    reply_from(frame, std::str::from_utf8(frame).ok())
}

/// [`parse_reply`] without the fast cut: the plain reference the cut must always agree
/// with (the unit tests and the `packet` fuzz target compare the two).
#[doc(hidden)]
pub fn parse_reply_general(frame: &Bytes) -> Result<Reply, InvalidJson> {
    reply_general(frame, std::str::from_utf8(frame).ok())
}

/// `text` is `frame` as `&str` when it is UTF-8 (the fast cut reads text only).
fn reply_from(frame: &Bytes, text: Option<&str>) -> Result<Reply, InvalidJson> {
    if let Some(reply) = text.and_then(|t| reply_shaped(frame, t)) {
        return Ok(reply);
    }
    reply_general(frame, text)
}

/// The reply Nest's servers (and nestling's) write for a value,
/// `{"response":R,"isDisposed":true,"id":I}`, cut at its fixed tokens as requests are cut
/// (`inbound::nest_shaped`): serde only checks that `R` is one JSON value, and anything
/// else (errors, streamed items, other spellings) takes the general parse.
pub(super) fn reply_shaped(frame: &Bytes, text: &str) -> Option<Reply> {
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

/// The general reply parse: any key order, whitespace, escapes, errors, foreign payloads.
/// `text` is `frame` as `&str` when it is known to be UTF-8.
pub(super) fn reply_general(frame: &Bytes, text: Option<&str>) -> Result<Reply, InvalidJson> {
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
