//! Unit tests of the encoders, against the wire spec (`nest-tcp-protocol.md` §2.1 and
//! §2.3): byte-exact, keys in Nest's order, and parsed back as they went in.

use std::collections::BTreeMap;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::*;
use crate::codec::NestCodec;
use crate::packet::tests::{error, event, request, value};
use crate::packet::{parse_inbound, parse_reply};

/// Runs an encoder into a fresh buffer and returns the frame as text.
fn encoded(f: impl FnOnce(&mut BytesMut)) -> String {
    let mut dst = BytesMut::new();
    f(&mut dst);
    String::from_utf8(dst.to_vec()).expect("frames are UTF-8")
}

/// Splits `len#json`, checking that `len` is the UTF-16 length of `json`.
fn unframe(frame: &str) -> &str {
    let (len, json) = frame.split_once('#').expect("a '#' separator");
    assert_eq!(
        len.parse::<usize>().unwrap(),
        json.encode_utf16().count(),
        "header of {frame}"
    );
    json
}

// ---------------------------------------------------------------------------
// Replies (spec §2.3): byte-exact, keys in Nest's order
// ---------------------------------------------------------------------------

#[test]
fn response_single_value() {
    assert_eq!(
        encoded(|d| Wire::Tcp.response(d, Some(b"3"), br#""i1""#)),
        r#"42#{"response":3,"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn response_null_value() {
    assert_eq!(
        encoded(|d| Wire::Tcp.response(d, Some(b"null"), br#""i1""#)),
        r#"45#{"response":null,"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn response_without_value() {
    assert_eq!(
        encoded(|d| Wire::Tcp.response(d, None, br#""i1""#)),
        r#"29#{"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn response_echoes_non_string_ids() {
    assert_eq!(
        encoded(|d| Wire::Tcp.response(d, Some(b"1"), b"null")),
        r#"42#{"response":1,"isDisposed":true,"id":null}"#
    );
    assert_eq!(
        encoded(|d| Wire::Tcp.response(d, None, br#"{"x":1}"#)),
        r#"32#{"isDisposed":true,"id":{"x":1}}"#
    );
}

#[test]
fn error_packet() {
    assert_eq!(
        encoded(|d| Wire::Tcp.error(
            d,
            br#"{"status":"error","message":"bad thing"}"#,
            br#""i1""#
        )),
        r#"76#{"err":{"status":"error","message":"bad thing"},"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn no_handler_packet() {
    assert_eq!(
        encoded(|d| Wire::Tcp.no_handler(d, br#""i1""#)),
        r#"104#{"id":"i1","status":"error","err":"There is no matching message handler defined in the remote service."}"#
    );
}

#[test]
fn stream_item_packet() {
    assert_eq!(
        encoded(|d| Wire::Tcp.stream_item(d, r#""求😀""#.as_bytes(), br#""i1""#)),
        r#"28#{"response":"求😀","id":"i1"}"#
    );
}

#[test]
fn bare_packets_are_the_framed_text_without_header() {
    let writes: [fn(Wire, &mut BytesMut); 6] = [
        |w, d| w.response(d, Some(r#""求😀""#.as_bytes()), br#""i1""#),
        |w, d| w.response(d, None, b"5"),
        |w, d| w.stream_item(d, b"[1]", br#""i2""#),
        |w, d| w.error(d, br#"{"message":"m"}"#, br#""i3""#),
        |w, d| w.no_handler(d, br#""i4""#),
        |w, d| {
            w.outbound(d, r#""p""#, "😀", Some(br#"{"t":1}"#), Some(9))
                .unwrap()
        },
    ];
    for write in writes {
        let tcp = encoded(|d| write(Wire::Tcp, d));
        let bare = encoded(|d| write(Wire::Bare, d));
        assert_eq!(unframe(&tcp), bare);
    }
}

#[test]
fn encoders_count_utf16_units_for_cjk_and_emoji() {
    // 47 units, 53 bytes
    assert_eq!(
        encoded(|d| Wire::Tcp.response(d, Some(r#""求和😀""#.as_bytes()), br#""i1""#)),
        r#"47#{"response":"求和😀","isDisposed":true,"id":"i1"}"#
    );
    // 41 units, 47 bytes
    assert_eq!(
        encoded(|d| Wire::Tcp.error(d, r#""😀😀""#.as_bytes(), r#""求""#.as_bytes())),
        r#"41#{"err":"😀😀","isDisposed":true,"id":"求"}"#
    );
    // 105 units, 109 bytes
    assert_eq!(
        encoded(|d| Wire::Tcp.no_handler(d, r#""求😀""#.as_bytes())),
        r#"105#{"id":"求😀","status":"error","err":"There is no matching message handler defined in the remote service."}"#
    );
}

#[test]
fn encoders_append_to_existing_buffer() {
    let mut dst = BytesMut::new();
    Wire::Tcp.response(&mut dst, Some(b"1"), br#""a""#);
    Wire::Tcp.error(&mut dst, br#""e""#, br#""b""#);
    Wire::Tcp.no_handler(&mut dst, br#""c""#);
    let text = std::str::from_utf8(&dst).unwrap();
    assert_eq!(
        text,
        concat!(
            r#"41#{"response":1,"isDisposed":true,"id":"a"}"#,
            r#"38#{"err":"e","isDisposed":true,"id":"b"}"#,
            r#"103#{"id":"c","status":"error","err":"There is no matching message handler defined in the remote service."}"#,
        )
    );
}

// ---------------------------------------------------------------------------
// Wire::outbound (spec §2.1)
// ---------------------------------------------------------------------------

#[test]
fn outbound_request_key_order() {
    assert_eq!(
        encoded(|d| Wire::Tcp
            .outbound(d, r#""sum""#, &[1, 2], None, Some(7))
            .unwrap()),
        r#"39#{"pattern":"sum","data":[1,2],"id":"7"}"#
    );
}

#[test]
fn outbound_event_matches_nest_capture() {
    assert_eq!(
        encoded(|d| Wire::Tcp
            .outbound(d, r#""log""#, "求和1111", None, None)
            .unwrap()),
        r#"33#{"pattern":"log","data":"求和1111"}"#
    );
    assert_eq!(
        encoded(|d| Wire::Tcp
            .outbound(d, r#""log""#, "a😀b", None, None)
            .unwrap()),
        r#"31#{"pattern":"log","data":"a😀b"}"#
    );
}

#[test]
fn outbound_object_pattern_is_inserted_raw() {
    assert_eq!(
        encoded(|d| Wire::Tcp
            .outbound(d, r#"{"cmd":"sum"}"#, "😀", None, None)
            .unwrap()),
        r#"37#{"pattern":{"cmd":"sum"},"data":"😀"}"#
    );
}

#[test]
fn outbound_id_is_a_json_string() {
    let text = encoded(|d| {
        Wire::Tcp
            .outbound(d, "1", &serde_json::json!(null), None, Some(u64::MAX))
            .unwrap()
    });
    let json: serde_json::Value = serde_json::from_str(unframe(&text)).unwrap();
    assert_eq!(json["id"], serde_json::json!(u64::MAX.to_string()));
}

#[test]
fn outbound_serialization_error_writes_nothing() {
    // serde_json refuses non-string map keys.
    let mut data = BTreeMap::new();
    data.insert((1, 2), 3);
    let mut dst = BytesMut::from(&b"2#{}"[..]);
    assert!(Wire::Tcp
        .outbound(&mut dst, r#""p""#, &data, None, Some(1))
        .is_err());
    assert_eq!(&dst[..], b"2#{}", "no partial frame may be written");
}

#[test]
fn outbound_round_trips_through_codec_and_parse_inbound() {
    let mut dst = BytesMut::new();
    Wire::Tcp
        .outbound(
            &mut dst,
            r#"{"cmd":"sum"}"#,
            &serde_json::json!({"a":"😀"}),
            None,
            Some(42),
        )
        .unwrap();
    Wire::Tcp
        .outbound(&mut dst, r#""log""#, &0, None, None)
        .unwrap();
    let mut codec = NestCodec::new();
    let first = codec.decode(&mut dst).unwrap().unwrap();
    let second = codec.decode(&mut dst).unwrap().unwrap();
    assert!(dst.is_empty());
    assert_eq!(
        parse_inbound(&first).unwrap(),
        request(
            Some(r#"{"cmd":"sum"}"#),
            Some(r#"{"a":"😀"}"#),
            r#""42""#,
            None
        )
    );
    assert_eq!(
        parse_inbound(&second).unwrap(),
        event(Some(r#""log""#), Some("0"), None)
    );
}

#[test]
fn encoded_responses_parse_back() {
    let mut dst = BytesMut::new();
    Wire::Tcp.response(&mut dst, Some(r#"{"sum":"求😀"}"#.as_bytes()), br#""i1""#);
    Wire::Tcp.response(&mut dst, None, b"5");
    Wire::Tcp.error(
        &mut dst,
        br#"{"status":"error","message":"Internal server error"}"#,
        b"null",
    );
    Wire::Tcp.no_handler(&mut dst, br#""i4""#);
    let mut codec = NestCodec::new();
    let mut replies = Vec::new();
    while let Some(f) = codec.decode(&mut dst).unwrap() {
        replies.push(parse_reply(&f).unwrap());
    }
    assert_eq!(
        replies,
        [
            value(Some(r#""i1""#), Some(r#"{"sum":"求😀"}"#), true),
            value(Some("5"), None, true),
            error(
                Some("null"),
                r#"{"status":"error","message":"Internal server error"}"#
            ),
            error(
                Some(r#""i4""#),
                &format!("\"{}\"", crate::NO_HANDLER_MESSAGE)
            ),
        ]
    );
}
