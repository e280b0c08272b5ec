//! Unit tests of the reply parse, against the wire spec (`nest-tcp-protocol.md` §2.4 and
//! §8), and of its fast cut against the general parse.

use super::*;
use crate::packet::tests::{b, error, frame, json_value, value};

fn reply(json: &str) -> Reply {
    parse_reply(&frame(json)).unwrap_or_else(|e| panic!("parse_reply({json}) failed: {e}"))
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

// ---------------------------------------------------------------------------
// The shortcut for value replies agrees with the general parse
// ---------------------------------------------------------------------------

mod shaped {
    use super::*;
    use proptest::prelude::*;

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
    }
}
