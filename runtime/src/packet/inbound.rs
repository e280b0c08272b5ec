//! Packets a server receives (requests and events), classified as Nest's `ServerTCP`
//! classifies them: a fast cut of the packets Nest's clients write ([`nest_shaped`]) and the
//! general serde parse ([`inbound_general`]) it must always agree with.

use bytes::Bytes;
use serde::de;
use serde_json::value::RawValue;

use super::fields::{object_fields, Fields};
use super::shape::{simple_string_len, trailing_id_start, unpadded};
use super::{InvalidJson, Span};
use crate::codec::FrameText;

/// A packet received by a server, classified as Nest's `ServerTCP` classifies it.
///
/// Each field is the raw JSON of that key, a [`Bytes`] slice of the frame (nestling's own
/// servers keep byte offsets instead, so that one reference to the frame serves them all).
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

impl Inbound<Span> {
    /// The packet with its spans turned into slices of `frame`.
    pub(super) fn cut(self, frame: &Bytes) -> Inbound {
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

/// A packet parsed from a TCP frame (its fields are spans of the frame), whose `data` may
/// still need checking.
pub(crate) struct Parsed {
    pub packet: Inbound<Span>,
    /// `data` was cut from a Nest-shaped packet without checking that it is one JSON value.
    /// Whoever uses it must check it — a handler decoding its payload does — and hand the
    /// frame to [`parse_frame_general`] if it is not (see `server::dispatch`).
    pub data_unchecked: bool,
}

/// The TCP server's parse of a frame the codec validated as UTF-8: the fast cut, leaving a
/// Nest-shaped packet's `data` for the dispatcher to check (see [`Parsed`]), else the
/// general parse.
pub(crate) fn parse_inbound_frame(frame: &FrameText) -> Result<Parsed, InvalidJson> {
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

/// The TCP server's second look at a frame the codec validated as UTF-8: the general parse
/// alone, for a Nest-shaped packet whose deferred `data` turned out not to be one JSON
/// value (see [`Parsed`]).
pub(crate) fn parse_frame_general(frame: &FrameText) -> Result<Inbound<Span>, InvalidJson> {
    inbound_general(frame.bytes(), Some(frame.as_str()))
}

/// Whether `data` is one JSON value: what the general parse checks and
/// [`Parsed::data_unchecked`] defers.
pub(crate) fn data_is_json(data: &[u8]) -> bool {
    serde_json::from_slice::<de::IgnoredAny>(data).is_ok()
}

/// The parse of bytes nobody has checked (a NATS message's payload): the fast cut, with
/// `data` checked, else the general parse; the fields are spans of `frame`.
pub(crate) fn parse_inbound_spans(frame: &Bytes) -> Result<Inbound<Span>, InvalidJson> {
    let text = std::str::from_utf8(frame).ok();
    if let Some((packet, _)) = text.and_then(|t| nest_shaped(t, false)) {
        return Ok(packet);
    }
    inbound_general(frame, text)
}

/// Parses a frame's JSON into an [`Inbound`] packet without copying field values: the
/// fast cut for packets in the shape Nest's clients write, else the general parse (the
/// result is the same either way).
///
/// ```
/// use bytes::Bytes;
/// use nestling_runtime::packet::{parse_inbound, Inbound};
///
/// let frame = Bytes::from_static(br#"{"pattern":"sum","data":[1,2],"id":"7"}"#);
/// let Inbound::Request { data, id, .. } = parse_inbound(&frame).unwrap() else {
///     panic!("a request");
/// };
/// assert_eq!((&data.unwrap()[..], &id[..]), (&b"[1,2]"[..], &br#""7""#[..]));
/// ```
pub fn parse_inbound(frame: &Bytes) -> Result<Inbound, InvalidJson> {
    Ok(parse_inbound_spans(frame)?.cut(frame))
}

/// [`parse_inbound`] without the fast cut: the plain reference the cut must always agree
/// with (the unit tests and the `packet` fuzz target compare the two).
#[doc(hidden)]
pub fn parse_inbound_general(frame: &Bytes) -> Result<Inbound, InvalidJson> {
    Ok(inbound_general(frame, std::str::from_utf8(frame).ok())?.cut(frame))
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
pub(super) fn nest_shaped(text: &str, may_defer: bool) -> Option<(Inbound<Span>, bool)> {
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

/// The general packet parse: any key order, whitespace, escapes, extra keys, non-objects.
/// `text` is `frame` as `&str` when it is known to be UTF-8.
pub(super) fn inbound_general(
    frame: &Bytes,
    text: Option<&str>,
) -> Result<Inbound<Span>, InvalidJson> {
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

#[cfg(test)]
mod tests;
