//! Fixtures shared by the packet layer's unit tests (`inbound/tests.rs`, `reply/tests.rs`,
//! `wire/tests.rs`), which check the packets against the wire spec
//! (`nest-tcp-protocol.md` §2 and §8) and the fast cuts against the general parses.

use bytes::Bytes;
use proptest::prelude::*;

use super::{Inbound, Reply};

/// A frame holding `json`.
pub(super) fn frame(json: &str) -> Bytes {
    Bytes::copy_from_slice(json.as_bytes())
}

pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub(super) fn request(
    pattern: Option<&str>,
    data: Option<&str>,
    id: &str,
    metadata: Option<&str>,
) -> Inbound {
    Inbound::Request {
        pattern: pattern.map(b),
        data: data.map(b),
        id: b(id),
        metadata: metadata.map(b),
    }
}

pub(super) fn event(pattern: Option<&str>, data: Option<&str>, metadata: Option<&str>) -> Inbound {
    Inbound::Event {
        pattern: pattern.map(b),
        data: data.map(b),
        metadata: metadata.map(b),
    }
}

pub(super) fn value(id: Option<&str>, response: Option<&str>, disposed: bool) -> Reply {
    Reply::Value {
        id: id.map(b),
        response: response.map(b),
        disposed,
    }
}

pub(super) fn error(id: Option<&str>, err: &str) -> Reply {
    Reply::Error {
        id: id.map(b),
        err: b(err),
    }
}

/// Any JSON value, small, with strings full of the characters the fast cuts look for.
pub(super) fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z\"\\\\,:{}\\[\\] 求😀]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z\",:]{0,3}", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
