//! Nest TCP packets: the JSON objects inside frames, in both directions.
//!
//! Outgoing packets are written as JSON text directly ([`Wire`]). Incoming packets are
//! parsed lazily: `data` stays raw JSON until a handler deserialises it into its own type.
//! Each direction has a fast cut of the one shape Nest writes and a general serde parse
//! for anything else; the cut must always give the general parse's answer (the unit tests,
//! the proptests and the `packet` fuzz target compare them).
//!
//! | module    | job                                          | entry points |
//! |-----------|----------------------------------------------|--------------|
//! | `inbound` | requests and events a server receives        | [`parse_inbound`] (any bytes; tools), `parse_inbound_frame` + `parse_frame_general` (TCP server), `parse_inbound_spans` (NATS server), [`parse_inbound_general`] (the reference) |
//! | `reply`   | replies a client receives                    | [`parse_reply`] (any bytes; NATS client), `parse_reply_frame` (TCP client), [`parse_reply_general`] (the reference) |
//! | `wire`    | packets written, framed or bare              | [`Wire`] |
//! | `fields`  | the general parses' serde reader             | |
//! | `shape`   | the fast cuts' token scanners                | |
//! | `span`    | a field's place in its frame                 | |

mod fields;
mod inbound;
mod reply;
mod shape;
mod span;
mod wire;

pub(crate) use inbound::{
    data_is_json, parse_frame_general, parse_inbound_frame, parse_inbound_spans, Parsed,
};
pub use inbound::{parse_inbound, parse_inbound_general, Inbound};
pub(crate) use reply::parse_reply_frame;
pub use reply::{parse_reply, parse_reply_general, Reply};
pub(crate) use span::Span;
pub use wire::Wire;

/// Why a frame does not hold a usable packet.
#[derive(Debug, thiserror::Error)]
#[error("frame is not valid JSON: {0}")]
pub struct InvalidJson(#[from] serde_json::Error);

#[cfg(test)]
mod tests;
