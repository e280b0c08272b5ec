//! Unit tests for the packet layer, checked against the wire spec
//! (`nest-tcp-protocol.md` §2 and §8).

use super::*;
use crate::codec::NestCodec;
use std::collections::BTreeMap;
use tokio_util::codec::Decoder;

fn frame(json: &str) -> Bytes {
    Bytes::copy_from_slice(json.as_bytes())
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn inbound(json: &str) -> Inbound {
    parse_inbound(&frame(json)).unwrap_or_else(|e| panic!("parse_inbound({json}) failed: {e}"))
}

fn reply(json: &str) -> Reply {
    parse_reply(&frame(json)).unwrap_or_else(|e| panic!("parse_reply({json}) failed: {e}"))
}

fn request(pattern: Option<&str>, data: Option<&str>, id: &str, metadata: Option<&str>) -> Inbound {
    Inbound::Request {
        pattern: pattern.map(b),
        data: data.map(b),
        id: b(id),
        metadata: metadata.map(b),
    }
}

fn event(pattern: Option<&str>, data: Option<&str>, metadata: Option<&str>) -> Inbound {
    Inbound::Event {
        pattern: pattern.map(b),
        data: data.map(b),
        metadata: metadata.map(b),
    }
}

fn value(id: Option<&str>, response: Option<&str>, disposed: bool) -> Reply {
    Reply::Value {
        id: id.map(b),
        response: response.map(b),
        disposed,
    }
}

fn error(id: Option<&str>, err: &str) -> Reply {
    Reply::Error {
        id: id.map(b),
        err: b(err),
    }
}

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
// parse_inbound: classification (spec §2.1, §2.2)
// ---------------------------------------------------------------------------

#[test]
fn request_captured_from_nest_client() {
    assert_eq!(
        inbound(r#"{"pattern":"hello","data":1,"id":"39c17211f6ab3cd75c3bb"}"#),
        request(
            Some(r#""hello""#),
            Some("1"),
            r#""39c17211f6ab3cd75c3bb""#,
            None
        )
    );
}

#[test]
fn event_captured_from_nest_client() {
    assert_eq!(
        inbound(r#"{"pattern":"log","data":"求和1111"}"#),
        event(Some(r#""log""#), Some(r#""求和1111""#), None)
    );
}

#[test]
fn metadata_is_accepted_and_exposed() {
    assert_eq!(
        inbound(r#"{"pattern":"withMeta","data":1,"metadata":{"traceId":"T1"}}"#),
        event(
            Some(r#""withMeta""#),
            Some("1"),
            Some(r#"{"traceId":"T1"}"#)
        )
    );
    assert_eq!(
        inbound(
            r#"{"pattern":"withMeta","data":2,"metadata":{"traceId":"T1"},"id":"accb4eaaf72d336b57b9a"}"#
        ),
        request(
            Some(r#""withMeta""#),
            Some("2"),
            r#""accb4eaaf72d336b57b9a""#,
            Some(r#"{"traceId":"T1"}"#)
        )
    );
}

#[test]
fn any_present_id_makes_a_request_and_is_kept_verbatim() {
    for id in [
        "null",
        "5",
        r#""""#,
        r#"{"x":1}"#,
        r#"{ "x" : [1, 2] }"#,
        "false",
        "-0.50",
        r#""\u0041""#,
    ] {
        let json = format!(r#"{{"pattern":"sum","data":[1,2],"id":{id}}}"#);
        assert_eq!(
            inbound(&json),
            request(Some(r#""sum""#), Some("[1,2]"), id, None),
            "{json}"
        );
    }
}

#[test]
fn absent_id_makes_an_event() {
    assert_eq!(
        inbound(r#"{"pattern":"sum","data":[1,2]}"#),
        event(Some(r#""sum""#), Some("[1,2]"), None)
    );
    // An `id` nested inside data does not count.
    assert_eq!(
        inbound(r#"{"pattern":"p","data":{"id":"nested"}}"#),
        event(Some(r#""p""#), Some(r#"{"id":"nested"}"#), None)
    );
}

#[test]
fn key_order_does_not_matter() {
    assert_eq!(
        inbound(r#"{"id":"z","data":{"a":1},"pattern":{"cmd":"sum"}}"#),
        request(Some(r#"{"cmd":"sum"}"#), Some(r#"{"a":1}"#), r#""z""#, None)
    );
}

#[test]
fn packets_without_pattern_and_data_are_undefined() {
    for json in [
        "{}",
        "5",
        "[]",
        r#""s""#,
        "true",
        "null",
        r#"{"id":"q1"}"#,
        // falsy values (Nest turns them into {})
        "0",
        "false",
        r#""""#,
        // only other keys
        r#"{"metadata":{"traceId":"T1"}}"#,
        r#"{"id":"q1","extra":1}"#,
        " { } ",
    ] {
        assert_eq!(inbound(json), Inbound::Undefined, "{json}");
    }
}

#[test]
fn arrays_are_undefined_even_with_elements() {
    // Spec §2.2: a non-object (arrays included: they have no `pattern`/`data` key) is
    // handled as an event with an undefined pattern. serde's derived struct visitor
    // accepts sequences, so `[1,2,3]` currently comes out as
    // Request { pattern: 1, data: 2, id: 3 } and gets routed, `[1,2]` as an Event, and a
    // 5-element array as Err (which closes the connection).
    for json in [
        r#"["sum",[1,2],"q9"]"#,
        "[1,2]",
        "[1]",
        r#"["a",1,"b",{}]"#,
        r#"["a",1,"b",{},5]"#,
    ] {
        assert_eq!(inbound(json), Inbound::Undefined, "{json}");
    }
}

#[test]
fn data_without_pattern_is_a_request_with_no_pattern() {
    assert_eq!(
        inbound(r#"{"id":"q2","data":1}"#),
        request(None, Some("1"), r#""q2""#, None)
    );
    assert_eq!(inbound(r#"{"data":1}"#), event(None, Some("1"), None));
}

#[test]
fn pattern_without_data_has_no_data() {
    assert_eq!(
        inbound(r#"{"pattern":"sum","id":"q3"}"#),
        request(Some(r#""sum""#), None, r#""q3""#, None)
    );
}

#[test]
fn null_pattern_or_data_is_present_not_absent() {
    assert_eq!(
        inbound(r#"{"pattern":null}"#),
        event(Some("null"), None, None)
    );
    assert_eq!(
        inbound(r#"{"data":null,"id":"q"}"#),
        request(None, Some("null"), r#""q""#, None)
    );
}

#[test]
fn unknown_keys_are_accepted() {
    assert_eq!(
        inbound(r#"{"pattern":"p","extra":"x","data":1,"more":{"deep":[1]},"id":"a"}"#),
        request(Some(r#""p""#), Some("1"), r#""a""#, None)
    );
    assert_eq!(
        inbound(r#"{"pattern":"p","data":1,"extra":"x"}"#),
        event(Some(r#""p""#), Some("1"), None)
    );
}

#[test]
fn escaped_lone_surrogate_is_accepted_verbatim() {
    // Spec §8: Nest accepts `\ud800` and echoes it escaped; serde_json would reject it
    // in a String, so the raw text must be kept.
    assert_eq!(
        inbound(r#"{"pattern":"log","data":"x\ud800y","id":"\udc00"}"#),
        request(Some(r#""log""#), Some(r#""x\ud800y""#), r#""\udc00""#, None)
    );
}

#[test]
fn fields_are_zero_copy_slices_of_the_frame() {
    let f = frame(r#"{"pattern":"p","data":{"big":[1,2,3]},"id":7}"#);
    let Inbound::Request {
        data: Some(data),
        id,
        ..
    } = parse_inbound(&f).unwrap()
    else {
        panic!("expected a request with data");
    };
    let range = f.as_ptr() as usize..f.as_ptr() as usize + f.len();
    assert!(range.contains(&(data.as_ptr() as usize)));
    assert!(range.contains(&(id.as_ptr() as usize)));
    assert_eq!(&data[..], br#"{"big":[1,2,3]}"#);
}

#[test]
fn invalid_json_is_an_error() {
    for json in [
        "",
        "   ",
        "{abc}",
        r#"{"pattern":"#,
        r#"{"pattern":"p","data":1}}"#,
        "5 6",
        "nul",
        "{'pattern':'p'}",
        r#"{"pattern":"p",}"#,
        "[1,",
    ] {
        assert!(
            parse_inbound(&frame(json)).is_err(),
            "{json:?} should be invalid JSON"
        );
    }
}

#[test]
fn duplicate_keys_last_one_wins() {
    // Nest's JSON.parse accepts duplicate keys (the last wins), so it routes this event.
    assert_eq!(
        inbound(r#"{"pattern":"a","data":1,"pattern":"b"}"#),
        event(Some(r#""b""#), Some("1"), None)
    );
}

// ---------------------------------------------------------------------------
// Response encoders (spec §2.3): byte-exact, keys in Nest's order
// ---------------------------------------------------------------------------

#[test]
fn encode_response_single_value() {
    assert_eq!(
        encoded(|d| encode_response(d, Some(b"3"), br#""i1""#)),
        r#"42#{"response":3,"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn encode_response_null_value() {
    assert_eq!(
        encoded(|d| encode_response(d, Some(b"null"), br#""i1""#)),
        r#"45#{"response":null,"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn encode_response_without_value() {
    assert_eq!(
        encoded(|d| encode_response(d, None, br#""i1""#)),
        r#"29#{"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn encode_response_echoes_non_string_ids() {
    assert_eq!(
        encoded(|d| encode_response(d, Some(b"1"), b"null")),
        r#"42#{"response":1,"isDisposed":true,"id":null}"#
    );
    assert_eq!(
        encoded(|d| encode_response(d, None, br#"{"x":1}"#)),
        r#"32#{"isDisposed":true,"id":{"x":1}}"#
    );
}

#[test]
fn encode_error_packet() {
    assert_eq!(
        encoded(|d| encode_error(
            d,
            br#"{"status":"error","message":"bad thing"}"#,
            br#""i1""#
        )),
        r#"76#{"err":{"status":"error","message":"bad thing"},"isDisposed":true,"id":"i1"}"#
    );
}

#[test]
fn encode_no_handler_packet() {
    assert_eq!(
        encoded(|d| encode_no_handler(d, br#""i1""#)),
        r#"104#{"id":"i1","status":"error","err":"There is no matching message handler defined in the remote service."}"#
    );
}

#[test]
fn encoders_count_utf16_units_for_cjk_and_emoji() {
    // 47 units, 53 bytes
    assert_eq!(
        encoded(|d| encode_response(d, Some(r#""求和😀""#.as_bytes()), br#""i1""#)),
        r#"47#{"response":"求和😀","isDisposed":true,"id":"i1"}"#
    );
    // 41 units, 47 bytes
    assert_eq!(
        encoded(|d| encode_error(d, r#""😀😀""#.as_bytes(), r#""求""#.as_bytes())),
        r#"41#{"err":"😀😀","isDisposed":true,"id":"求"}"#
    );
    // 105 units, 109 bytes
    assert_eq!(
        encoded(|d| encode_no_handler(d, r#""求😀""#.as_bytes())),
        r#"105#{"id":"求😀","status":"error","err":"There is no matching message handler defined in the remote service."}"#
    );
}

#[test]
fn encoders_append_to_existing_buffer() {
    let mut dst = BytesMut::new();
    encode_response(&mut dst, Some(b"1"), br#""a""#);
    encode_error(&mut dst, br#""e""#, br#""b""#);
    encode_no_handler(&mut dst, br#""c""#);
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
// encode_outbound (spec §2.1)
// ---------------------------------------------------------------------------

#[test]
fn encode_outbound_request_key_order() {
    assert_eq!(
        encoded(|d| encode_outbound(d, r#""sum""#, &[1, 2], Some(7)).unwrap()),
        r#"39#{"pattern":"sum","data":[1,2],"id":"7"}"#
    );
}

#[test]
fn encode_outbound_event_matches_nest_capture() {
    assert_eq!(
        encoded(|d| encode_outbound(d, r#""log""#, "求和1111", None).unwrap()),
        r#"33#{"pattern":"log","data":"求和1111"}"#
    );
    assert_eq!(
        encoded(|d| encode_outbound(d, r#""log""#, "a😀b", None).unwrap()),
        r#"31#{"pattern":"log","data":"a😀b"}"#
    );
}

#[test]
fn encode_outbound_object_pattern_is_inserted_raw() {
    assert_eq!(
        encoded(|d| encode_outbound(d, r#"{"cmd":"sum"}"#, "😀", None).unwrap()),
        r#"37#{"pattern":{"cmd":"sum"},"data":"😀"}"#
    );
}

#[test]
fn encode_outbound_id_is_a_json_string() {
    let text =
        encoded(|d| encode_outbound(d, "1", &serde_json::json!(null), Some(u64::MAX)).unwrap());
    let json: serde_json::Value = serde_json::from_str(unframe(&text)).unwrap();
    assert_eq!(json["id"], serde_json::json!(u64::MAX.to_string()));
}

#[test]
fn encode_outbound_serialization_error_writes_nothing() {
    // serde_json refuses non-string map keys.
    let mut data = BTreeMap::new();
    data.insert((1, 2), 3);
    let mut dst = BytesMut::from(&b"2#{}"[..]);
    assert!(encode_outbound(&mut dst, r#""p""#, &data, Some(1)).is_err());
    assert_eq!(&dst[..], b"2#{}", "no partial frame may be written");
}

#[test]
fn outbound_round_trips_through_codec_and_parse_inbound() {
    let mut dst = BytesMut::new();
    encode_outbound(
        &mut dst,
        r#"{"cmd":"sum"}"#,
        &serde_json::json!({"a":"😀"}),
        Some(42),
    )
    .unwrap();
    encode_outbound(&mut dst, r#""log""#, &0, None).unwrap();
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

// ---------------------------------------------------------------------------
// parse_reply (spec §2.4)
// ---------------------------------------------------------------------------

#[test]
fn reply_single_value_completes() {
    assert_eq!(
        reply(r#"{"response":3,"isDisposed":true,"id":"i1"}"#),
        value(Some(r#""i1""#), Some("3"), true)
    );
    assert_eq!(
        reply(r#"{"response":null,"isDisposed":true,"id":"i1"}"#),
        value(Some(r#""i1""#), Some("null"), true)
    );
}

#[test]
fn reply_disposed_without_value() {
    assert_eq!(
        reply(r#"{"isDisposed":true,"id":"i1"}"#),
        value(Some(r#""i1""#), None, true)
    );
}

#[test]
fn reply_stream_item_is_not_disposed() {
    assert_eq!(
        reply(r#"{"response":1,"id":"i1"}"#),
        value(Some(r#""i1""#), Some("1"), false)
    );
    // `status` without `err`: next(undefined), keep waiting (spec §2.4 step 6).
    assert_eq!(
        reply(r#"{"id":"i1","status":"error"}"#),
        value(Some(r#""i1""#), None, false)
    );
}

#[test]
fn is_disposed_uses_js_truthiness() {
    for truthy in [
        "true",
        "1",
        "-1",
        "0.5",
        r#""x""#,
        r#""false""#,
        r#""0""#,
        "{}",
        "[]",
    ] {
        let json = format!(r#"{{"response":1,"isDisposed":{truthy},"id":"i1"}}"#);
        assert_eq!(
            reply(&json),
            value(Some(r#""i1""#), Some("1"), true),
            "{json}"
        );
    }
    for falsy in ["false", "0", "-0", "0.0", "0e10", r#""""#, "null"] {
        let json = format!(r#"{{"response":1,"isDisposed":{falsy},"id":"i1"}}"#);
        assert_eq!(
            reply(&json),
            value(Some(r#""i1""#), Some("1"), false),
            "{json}"
        );
    }
}

#[test]
fn truthy_err_is_an_error_with_raw_value() {
    for err in [
        r#"{"status":"error","message":"bad thing"}"#,
        r#""boom""#,
        "1",
        "true",
        "[]",
        "{}",
        r#"{"code":42,"message":"m","extra":[1]}"#,
    ] {
        let json = format!(r#"{{"err":{err},"isDisposed":true,"id":"i1"}}"#);
        assert_eq!(reply(&json), error(Some(r#""i1""#), err), "{json}");
    }
}

#[test]
fn err_wins_over_response() {
    assert_eq!(
        reply(r#"{"response":1,"err":"e","isDisposed":true,"id":"i1"}"#),
        error(Some(r#""i1""#), r#""e""#)
    );
    // Even without isDisposed.
    assert_eq!(
        reply(r#"{"err":"e","id":"i1"}"#),
        error(Some(r#""i1""#), r#""e""#)
    );
}

#[test]
fn falsy_err_is_not_an_error() {
    for err in ["null", "0", "false", r#""""#, "-0", "0.0"] {
        let json = format!(r#"{{"err":{err},"response":5,"isDisposed":true,"id":"i1"}}"#);
        assert_eq!(
            reply(&json),
            value(Some(r#""i1""#), Some("5"), true),
            "{json}"
        );
        let json = format!(r#"{{"err":{err},"isDisposed":true,"id":"i1"}}"#);
        assert_eq!(reply(&json), value(Some(r#""i1""#), None, true), "{json}");
    }
}

#[test]
fn whitespace_does_not_change_truthiness() {
    assert_eq!(
        reply(r#"{ "err" : 0 , "response" : 2 , "isDisposed" : false , "id" : "i1" }"#),
        value(Some(r#""i1""#), Some("2"), false)
    );
    assert_eq!(
        reply("{\"err\":\n\"x\"\n,\"isDisposed\":\ttrue,\"id\":\"i1\"}"),
        error(Some(r#""i1""#), r#""x""#)
    );
}

#[test]
fn no_handler_packet_is_a_string_error() {
    assert_eq!(
        reply(
            r#"{"id":"i1","status":"error","err":"There is no matching message handler defined in the remote service."}"#
        ),
        error(
            Some(r#""i1""#),
            r#""There is no matching message handler defined in the remote service.""#
        )
    );
}

#[test]
fn foreign_payload_becomes_whole_response() {
    let json = r#"{"response":1,"isDisposed":true,"id":"X","extra":"x"}"#;
    assert_eq!(reply(json), value(Some(r#""X""#), Some(json), true));
    // Even with a truthy err: an unknown key makes the whole thing a value.
    let json = r#"{"err":"boom","id":7,"other":null}"#;
    assert_eq!(reply(json), value(Some("7"), Some(json), true));
    // Without an id.
    let json = r#"{"hello":"world"}"#;
    assert_eq!(reply(json), value(None, Some(json), true));
}

#[test]
fn non_object_reply_is_foreign_payload() {
    for json in ["5", r#""s""#, "true"] {
        assert_eq!(reply(json), value(None, Some(json), true), "{json}");
    }
}

#[test]
fn array_reply_is_foreign_payload() {
    // Spec §2.4 step 1: a value with keys outside {id,err,response,isDisposed,status}
    // (an array's keys are "0","1",…) is a foreign payload with id = value.id (undefined).
    // Currently `["i1",{"x":1}]` is read as Error { id: "i1", err: {"x":1} } and fails
    // the pending request "i1".
    for json in [r#"["i1",{"x":1}]"#, r#"["i1",null,5,true]"#, "[]"] {
        assert_eq!(reply(json), value(None, Some(json), true), "{json}");
    }
}

#[test]
fn empty_object_reply_is_foreign_payload() {
    // Spec §2.4 step 1: "has no keys" → foreign payload.
    assert_eq!(reply("{}"), value(None, Some("{}"), true));
}

#[test]
fn reply_invalid_json_is_an_error() {
    for json in ["", "{", r#"{"id":"i1""#, "{id:1}", r#"{"response":1}x"#] {
        assert!(
            parse_reply(&frame(json)).is_err(),
            "{json:?} should be invalid JSON"
        );
    }
}

#[test]
fn reply_keeps_non_string_ids_and_escapes_verbatim() {
    assert_eq!(
        reply(r#"{"response":"x\ud800y","isDisposed":true,"id":5}"#),
        value(Some("5"), Some(r#""x\ud800y""#), true)
    );
    assert_eq!(
        reply(r#"{"isDisposed":true,"id":null}"#),
        value(Some("null"), None, true)
    );
    assert_eq!(reply(r#"{"response":1}"#), value(None, Some("1"), false));
}

#[test]
fn reply_id_accessor() {
    assert_eq!(reply(r#"{"err":"e","id":"a"}"#).id(), Some(&b(r#""a""#)));
    assert_eq!(reply(r#"{"response":1,"id":2}"#).id(), Some(&b("2")));
    assert_eq!(reply(r#"{"response":1}"#).id(), None);
}

#[test]
fn encoded_responses_parse_back() {
    let mut dst = BytesMut::new();
    encode_response(&mut dst, Some(r#"{"sum":"求😀"}"#.as_bytes()), br#""i1""#);
    encode_response(&mut dst, None, b"5");
    encode_error(
        &mut dst,
        br#"{"status":"error","message":"Internal server error"}"#,
        b"null",
    );
    encode_no_handler(&mut dst, br#""i4""#);
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

// ---------------------------------------------------------------------------
// The Nest-shaped fast path agrees with the general parse
// ---------------------------------------------------------------------------

mod shaped {
    use super::*;
    use proptest::prelude::*;

    /// The fast path's answer, if it takes the frame, must be the general parse's.
    fn check(json: &str) -> Option<Inbound> {
        let frame = frame(json);
        // The text must be the frame's own bytes: the parsers slice the frame by address.
        let text = std::str::from_utf8(&frame).expect("test frames are UTF-8");
        let (fast, _) = nest_shaped(text, false)?;
        let fast = fast.cut(&frame);
        let general = inbound_general(&frame, Some(text))
            .unwrap_or_else(|e| panic!("fast path took invalid JSON {json:?}: {e}"))
            .cut(&frame);
        assert_eq!(fast, general, "{json}");
        Some(fast)
    }

    /// With the check of `data` deferred, the cut is the general parse's whenever `data`
    /// turns out to be one JSON value (what the dispatcher relies on), and a packet with
    /// `metadata` is never deferred.
    fn check_deferred(json: &str) {
        let frame = frame(json);
        let text = std::str::from_utf8(&frame).expect("test frames are UTF-8");
        let Some((packet, deferred)) = nest_shaped(text, true) else {
            return;
        };
        let packet = packet.cut(&frame);
        let data = match &packet {
            Inbound::Request { data, .. } | Inbound::Event { data, .. } => data.clone(),
            Inbound::Undefined => None,
        };
        let data = data.expect("a shaped packet has data");
        if !deferred || data_is_json(&data) {
            assert_eq!(
                Ok(packet),
                inbound_general(&frame, Some(text))
                    .map(|p| p.cut(&frame))
                    .map_err(|_| ()),
                "{json}"
            );
        }
    }

    #[test]
    fn deferred_check_of_data() {
        check_deferred(r#"{"pattern":"sum","data":[1,2,3],"id":"7"}"#);
        check_deferred(r#"{"pattern":"sum","data":[1],"metadata":{"traceId":"t"},"id":"7"}"#);
        check_deferred(r#"{"pattern":"sum","data":{"a":1},"metadata":{"t":1},"id":"7"}"#);
        check_deferred(r#"{"pattern":"sum","data":1,"id":"x","id":"y"}"#);
        let frame = frame(r#"{"pattern":"sum","data":{"a":1},"metadata":{"t":1},"id":"7"}"#);
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(
            nest_shaped(text, true).is_none(),
            "metadata packets are not cut"
        );
    }

    #[test]
    fn takes_the_packets_nest_writes() {
        for json in [
            r#"{"pattern":"sum","data":[1,2,3],"id":"c0d2a6e1-1c1b-4e2f-9d7e-2a5a0a7c3f11"}"#,
            r#"{"pattern":"sum","data":[1,2,3],"id":"7"}"#,
            r#"{"pattern":"sum","data":[1,2,3],"id":7}"#,
            r#"{"pattern":"log","data":"求和1111"}"#,
            r#"{"pattern":"{\"cmd\":\"sum\"}","data":{"a":[1,{"b":"}"}]},"id":"1"}"#,
            r#"{"pattern":"log","data":{"x":1,"id":"2"}}"#,
            r#"{"pattern":"log","data":",\"id\":\"3\""}"#,
            r#"{"pattern":"p","data":null,"id":0}"#,
        ] {
            // (The object pattern above has escapes: it takes the general path.)
            if json.contains(r#""{\"cmd"#) {
                assert!(check(json).is_none(), "{json}");
            } else {
                assert!(check(json).is_some(), "fast path missed {json}");
            }
        }
    }

    #[test]
    fn leaves_everything_else_to_the_general_parse() {
        for json in [
            r#"{"pattern":"sum","data":[1,2,3],"id":"7","metadata":{"traceId":"t"}}"#,
            r#"{"pattern":"sum","data":[1,2,3],"id":null}"#,
            r#"{"pattern":"sum","data":[1,2,3],"id":-1}"#,
            r#"{"pattern":"sum","data":[1,2,3],"id":007}"#,
            r#"{"pattern":"sum","data":[1,2,3],"id":"a\"b"}"#,
            r#"{"pattern":"sum","data": [1,2,3],"id":"7"}"#,
            r#"{"pattern":"sum","data":[1,2,3] ,"id":"7"}"#,
            r#"{"pattern":"s\u0075m","data":1}"#,
            r#"{"data":1,"pattern":"sum"}"#,
            r#"{"pattern":"sum","data":}"#,
            r#"{"pattern":"sum","data":[1,2,"id":"7"}"#,
            r#"{"pattern":"sum","data":1,"id":"7"} "#,
            r#"{"pattern":"sum","data":1,"data":2}"#,
        ] {
            assert!(check(json).is_none(), "fast path took {json}");
        }
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
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

    /// A token that may appear in a frame: the fast path's own tokens, in pieces, so
    /// that random concatenations often look almost like a Nest packet.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#"{"pattern":"#.to_string()),
            Just(r#",\"data\":"#.replace('\\', "")),
            Just(r#","id":"#.to_string()),
            Just("\"".to_string()),
            Just("}".to_string()),
            Just(" ".to_string()),
            Just("\\".to_string()),
            "[0-9]{1,3}",
            "[a-z,:\\[\\]{}]{1,3}",
            json_value().prop_map(|v| v.to_string()),
        ]
    }

    /// The reply shortcut's answer, if it takes the frame, must be the general parse's.
    fn check_reply(json: &str) -> Option<Reply> {
        let frame = frame(json);
        let text = std::str::from_utf8(&frame).expect("test frames are UTF-8");
        let fast = reply_shaped(&frame, text)?;
        let general = reply_general(&frame, Some(text))
            .unwrap_or_else(|e| panic!("reply shortcut took invalid JSON {json:?}: {e}"));
        assert_eq!(fast, general, "{json}");
        Some(fast)
    }

    #[test]
    fn reply_shortcut_takes_value_replies_only() {
        for json in [
            r#"{"response":6,"isDisposed":true,"id":"1"}"#,
            r#"{"response":{"a":[1,"}"]},"isDisposed":true,"id":7}"#,
            r#"{"response":"求和","isDisposed":true,"id":"c0d2a6e1"}"#,
        ] {
            assert!(check_reply(json).is_some(), "missed {json}");
        }
        for json in [
            r#"{"err":"x","isDisposed":true,"id":"1"}"#,
            r#"{"response":6,"id":"1"}"#,
            r#"{"response":6,"isDisposed":false,"id":"1"}"#,
            r#"{"response":1,"err":"x","isDisposed":true,"id":"1"}"#,
            r#"{"response": 6,"isDisposed":true,"id":"1"}"#,
            r#"{"response":6,"isDisposed":true,"id":"a\"b"}"#,
            r#"{"isDisposed":true,"id":"1"}"#,
        ] {
            assert!(check_reply(json).is_none(), "took {json}");
        }
    }

    fn reply_token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#"{"response":"#.to_string()),
            Just(r#","isDisposed":true,"id":"#.to_string()),
            Just(r#","err":"#.to_string()),
            Just("\"".to_string()),
            Just("}".to_string()),
            Just(" ".to_string()),
            "[0-9]{1,3}",
            "[a-z,:\\[\\]{}]{1,3}",
            json_value().prop_map(|v| v.to_string()),
        ]
    }

    proptest! {
        /// Value replies as Nest writes them: always taken, always equal.
        #[test]
        fn reply_shaped_agrees_with_general(
            response in json_value(),
            id in prop_oneof![
                "[a-z0-9-]{0,12}".prop_map(serde_json::Value::from),
                (0u64..1_000_000).prop_map(serde_json::Value::from),
            ],
        ) {
            let json = format!(r#"{{"response":{response},"isDisposed":true,"id":{id}}}"#);
            prop_assert!(check_reply(&json).is_some(), "reply shortcut missed {}", json);
        }

        /// Near misses built from the reply's own tokens: if taken, equal to the general parse.
        #[test]
        fn reply_never_disagrees_on_near_misses(parts in prop::collection::vec(reply_token(), 1..10)) {
            check_reply(&parts.concat());
        }

        /// Well-formed packets in Nest's shape: always taken, always equal.
        #[test]
        fn shaped_agrees_with_general(
            pattern in "[a-z:{}\\[\\] 求]{0,8}",
            data in json_value(),
            id in prop::option::of(prop_oneof![
                "[a-z0-9-]{0,12}".prop_map(serde_json::Value::from),
                (0u64..1_000_000).prop_map(serde_json::Value::from),
            ]),
        ) {
            let mut json = format!(r#"{{"pattern":{},"data":{}"#, serde_json::Value::from(pattern), data);
            if let Some(id) = &id {
                json.push_str(&format!(r#","id":{id}"#));
            }
            json.push('}');
            prop_assert!(check(&json).is_some(), "fast path missed {}", json);
        }

        /// Anything built from the fast path's tokens: if taken, equal to the general parse.
        #[test]
        fn never_disagrees_on_near_misses(parts in prop::collection::vec(token(), 1..10)) {
            let json: String = parts.concat();
            check(&json);
            check_deferred(&json);
        }
    }
}
