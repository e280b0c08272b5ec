//! Unit tests of the inbound parse, against the wire spec (`nest-tcp-protocol.md` §2.1,
//! §2.2 and §8), and of its fast cut against the general parse.

use super::*;
use crate::packet::tests::{event, frame, json_value, request};

fn inbound(json: &str) -> Inbound {
    parse_inbound(&frame(json)).unwrap_or_else(|e| panic!("parse_inbound({json}) failed: {e}"))
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

    proptest! {
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
