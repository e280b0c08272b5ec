//! Fuzz target `packet`: arbitrary bytes as one frame's JSON text through `parse_inbound`
//! and `parse_reply`; and, whenever the bytes are valid JSON, every reply encoder
//! round-trips through the framing decoder and the client's reply parser.
//!
//! Checked properties, besides "never panics":
//!
//! * `parse_inbound` and `parse_reply` (with their shortcuts for Nest-shaped packets and
//!   value replies) give the same results as the general parses, `parse_inbound_general`
//!   and `parse_reply_general`;
//! * `Wire::Tcp`'s `response`, `stream_item`, `error`, `no_handler` and `outbound` produce
//!   exactly one frame that `NestCodec` decodes back to the packet text, with nothing left
//!   over;
//! * `parse_reply` (or `parse_inbound` for `outbound`) of that frame gives back the
//!   value and id that went in, byte for byte, with JavaScript truthiness deciding whether
//!   an `err` is an error (Nest's `ClientTCP`);
//! * ids used: a plain string id, the fuzzed value itself, and, when the input is a
//!   request, that request's own id (the server echoes it verbatim).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nestling_runtime::codec::NestCodec;
use nestling_runtime::packet::{
    parse_inbound, parse_inbound_general, parse_reply, parse_reply_general, Inbound, Reply, Wire,
};
use nestling_runtime::NO_HANDLER_MESSAGE;
use serde_json::value::RawValue;
use tokio_util::codec::Decoder;

/// Decodes `wire`, which must hold exactly one complete frame with text `expected`.
fn single_frame(wire: BytesMut, expected: &[u8]) -> Bytes {
    let mut codec = NestCodec::new();
    let mut buf = wire;
    let frame = match codec.decode(&mut buf) {
        Ok(Some(frame)) => frame,
        other => panic!("encoded packet did not decode to a frame: {other:?}"),
    };
    assert!(buf.is_empty(), "bytes left after the frame: {buf:?}");
    assert!(!codec.in_frame(), "codec still inside a frame");
    assert_eq!(
        &frame[..],
        expected,
        "frame text differs from the packet written"
    );
    frame
}

/// JSON whitespace trimmed from both ends: what a `RawValue` slice covers.
fn trim_json(v: &[u8]) -> &[u8] {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r');
    let start = v.iter().position(|b| !ws(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// JavaScript truthiness of one JSON value (given trimmed).
fn js_truthy(v: &[u8]) -> bool {
    match v {
        b"null" | b"false" | b"\"\"" => false,
        [b'-' | b'0'..=b'9', ..] => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .is_none_or(|n| n != 0.0),
        _ => true,
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn check_replies(value: &[u8], id: &[u8]) {
    let b = |s: &[u8]| Some(Bytes::copy_from_slice(s));

    // {"response":V,"isDisposed":true,"id":ID}
    let mut wire = BytesMut::new();
    Wire::Tcp.response(&mut wire, Some(value), id);
    let text = cat(&[
        b"{\"response\":",
        value,
        b",\"isDisposed\":true,\"id\":",
        id,
        b"}",
    ]);
    let reply = parse_reply(&single_frame(wire, &text)).expect("response packet parses");
    assert_eq!(
        reply,
        Reply::Value {
            id: b(id),
            response: b(value),
            disposed: true
        }
    );

    // {"isDisposed":true,"id":ID}: a handler with no value.
    let mut wire = BytesMut::new();
    Wire::Tcp.response(&mut wire, None, id);
    let text = cat(&[b"{\"isDisposed\":true,\"id\":", id, b"}"]);
    let reply = parse_reply(&single_frame(wire, &text)).expect("empty response parses");
    assert_eq!(
        reply,
        Reply::Value {
            id: b(id),
            response: None,
            disposed: true
        }
    );

    // {"response":V,"id":ID}: a stream item that is not the last.
    let mut wire = BytesMut::new();
    Wire::Tcp.stream_item(&mut wire, value, id);
    let text = cat(&[b"{\"response\":", value, b",\"id\":", id, b"}"]);
    let reply = parse_reply(&single_frame(wire, &text)).expect("stream item parses");
    assert_eq!(
        reply,
        Reply::Value {
            id: b(id),
            response: b(value),
            disposed: false
        }
    );

    // {"err":E,"isDisposed":true,"id":ID}: an error only when E is truthy (Nest client).
    let mut wire = BytesMut::new();
    Wire::Tcp.error(&mut wire, value, id);
    let text = cat(&[
        b"{\"err\":",
        value,
        b",\"isDisposed\":true,\"id\":",
        id,
        b"}",
    ]);
    let reply = parse_reply(&single_frame(wire, &text)).expect("error packet parses");
    let expected = if js_truthy(value) {
        Reply::Error {
            id: b(id),
            err: Bytes::copy_from_slice(value),
        }
    } else {
        Reply::Value {
            id: b(id),
            response: None,
            disposed: true,
        }
    };
    assert_eq!(reply, expected, "err {:?}", String::from_utf8_lossy(value));

    // Nest's no-handler reply.
    let mut wire = BytesMut::new();
    Wire::Tcp.no_handler(&mut wire, id);
    let message = format!("\"{NO_HANDLER_MESSAGE}\"");
    let text = cat(&[
        b"{\"id\":",
        id,
        b",\"status\":\"error\",\"err\":",
        message.as_bytes(),
        b"}",
    ]);
    let reply = parse_reply(&single_frame(wire, &text)).expect("no-handler packet parses");
    assert_eq!(
        reply,
        Reply::Error {
            id: b(id),
            err: Bytes::from(message)
        }
    );
}

fn check_outbound(value: &[u8]) {
    let Ok(text) = std::str::from_utf8(value) else {
        return;
    };
    let Ok(raw) = RawValue::from_string(text.to_owned()) else {
        return;
    };
    for id in [None, Some(7u64), Some(u64::MAX)] {
        let mut wire = BytesMut::new();
        Wire::Tcp
            .outbound(&mut wire, text, &*raw, None, id)
            .expect("a raw value serialises");
        let id_text = id.map(|n| format!("\"{n}\""));
        let mut expected = cat(&[
            b"{\"pattern\":",
            text.as_bytes(),
            b",\"data\":",
            raw.get().as_bytes(),
        ]);
        if let Some(i) = &id_text {
            expected.extend_from_slice(b",\"id\":");
            expected.extend_from_slice(i.as_bytes());
        }
        expected.push(b'}');
        let packet = parse_inbound(&single_frame(wire, &expected)).expect("outbound packet parses");
        let pattern = Some(Bytes::copy_from_slice(trim_json(value)));
        let data = Some(Bytes::copy_from_slice(trim_json(raw.get().as_bytes())));
        let want = match id_text {
            Some(i) => Inbound::Request {
                pattern,
                data,
                id: Bytes::from(i),
                metadata: None,
            },
            None => Inbound::Event {
                pattern,
                data,
                metadata: None,
            },
        };
        assert_eq!(packet, want);
    }
}

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let inbound = parse_inbound(&frame);
    // The shortcuts for Nest-shaped packets and replies never change the result.
    match (parse_reply(&frame), parse_reply_general(&frame)) {
        (Ok(fast), Ok(general)) => assert_eq!(fast, general, "reply shortcut differs on {data:?}"),
        (Err(_), Err(_)) => {}
        (fast, general) => panic!("reply shortcut {fast:?} vs general {general:?} on {data:?}"),
    }
    match (&inbound, parse_inbound_general(&frame)) {
        (Ok(fast), Ok(general)) => assert_eq!(fast, &general, "shortcut differs on {data:?}"),
        (Err(_), Err(_)) => {}
        (fast, general) => panic!("shortcut {fast:?} vs general {general:?} on {data:?}"),
    }

    // The encoders take raw JSON slices of a decoded frame, and decoded frames are always
    // UTF-8 (the codec replaces invalid bytes). `IgnoredAny` alone does not check UTF-8
    // inside strings (it accepts `"\xfa"`), so both conditions are needed.
    if std::str::from_utf8(data).is_err() {
        return;
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(data).is_err() {
        assert!(
            inbound.is_err(),
            "parse_inbound accepted invalid JSON {data:?}"
        );
        return;
    }
    let value = trim_json(data);
    check_replies(value, b"\"i1\"");
    check_replies(value, value);
    if let Ok(Inbound::Request { id, data: d, .. }) = &inbound {
        check_replies(value, id);
        if let Some(d) = d {
            check_replies(d, id);
        }
    }
    check_outbound(data);
});
