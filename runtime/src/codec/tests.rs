//! Unit tests for [`NestCodec`], checked against the wire spec
//! (`nest-tcp-protocol.md` §1 and §8).

use super::*;

/// `emit('log','求和1111')`, captured from a real Nest client (spec §1.1).
const CJK_JSON: &str = r#"{"pattern":"log","data":"求和1111"}"#;
const CJK_FRAME: &str = r#"33#{"pattern":"log","data":"求和1111"}"#;
/// `emit('log','a😀b')`: 31 UTF-16 units, 30 code points, 33 bytes.
const EMOJI_JSON: &str = r#"{"pattern":"log","data":"a😀b"}"#;
const EMOJI_FRAME: &str = r#"31#{"pattern":"log","data":"a😀b"}"#;
/// `emit('log','x\uD800y')`: JS escapes the lone surrogate as 6 ASCII characters.
const SURROGATE_JSON: &str = r#"{"pattern":"log","data":"x\ud800y"}"#;
const SURROGATE_FRAME: &str = r#"35#{"pattern":"log","data":"x\ud800y"}"#;
/// Hex dump of the first frame, from spec §1.1.
const CJK_FRAME_HEX: &str = "33 33 23 7b 22 70 61 74 74 65 72 6e 22 3a 22 6c 6f 67 22 2c 22 64 61 74 61 22 3a 22 e6 b1 82 e5 92 8c 31 31 31 31 22 7d";
/// 40 UTF-16 units (44 bytes): used for the header-leniency cases of spec §1.3.
const JSON_40: &str = r#"{"pattern":"log","data":"求和1111abcdefg"}"#;

const SPEC_CASES: [(&str, &str); 3] = [
    (CJK_JSON, CJK_FRAME),
    (EMOJI_JSON, EMOJI_FRAME),
    (SURROGATE_JSON, SURROGATE_FRAME),
];

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

/// Appends `chunk` to `buf` and decodes every complete frame now available.
fn feed(codec: &mut NestCodec, buf: &mut BytesMut, chunk: &[u8]) -> Result<Vec<Bytes>, FrameError> {
    buf.extend_from_slice(chunk);
    let mut out = Vec::new();
    while let Some(frame) = codec.decode(buf)? {
        out.push(frame);
    }
    Ok(out)
}

/// Decodes `input` delivered as a single read with a default codec.
fn decode_one_read(input: &[u8]) -> Result<Vec<Bytes>, FrameError> {
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    feed(&mut codec, &mut buf, input)
}

fn decode_err(codec: &mut NestCodec, input: &[u8]) -> FrameError {
    let mut buf = BytesMut::new();
    match feed(codec, &mut buf, input) {
        Ok(frames) => panic!(
            "expected an error for {:?}, got frames {frames:?}",
            String::from_utf8_lossy(input)
        ),
        Err(e) => e,
    }
}

fn strs(frames: &[Bytes]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| std::str::from_utf8(f).expect("decoded frames are UTF-8"))
        .collect()
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

#[test]
fn encode_matches_captured_nest_frames() {
    for (json, frame) in SPEC_CASES {
        let mut codec = NestCodec::new();
        let mut dst = BytesMut::new();
        codec.encode(json, &mut dst).unwrap();
        assert_eq!(&dst[..], frame.as_bytes(), "encoding {json}");

        let mut dst2 = BytesMut::new();
        encode_frame(json, &mut dst2);
        assert_eq!(&dst2[..], frame.as_bytes(), "encode_frame({json})");
    }
}

#[test]
fn encode_cjk_frame_is_byte_exact_hex() {
    let mut dst = BytesMut::new();
    NestCodec::new().encode(CJK_JSON, &mut dst).unwrap();
    assert_eq!(dst.len(), 40);
    assert_eq!(&dst[..], &hex(CJK_FRAME_HEX)[..]);
}

#[test]
fn encode_header_counts_utf16_units_not_bytes_or_chars() {
    // 33 units / 33 code points / 37 bytes
    assert_eq!(CJK_JSON.len(), 37);
    // 31 units / 30 code points / 33 bytes
    assert_eq!(EMOJI_JSON.len(), 33);
    assert_eq!(EMOJI_JSON.chars().count(), 30);
    let mut dst = BytesMut::new();
    encode_frame(EMOJI_JSON, &mut dst);
    assert!(dst.starts_with(b"31#"));
    assert!(!dst.starts_with(b"30#") && !dst.starts_with(b"33#"));
}

#[test]
fn encode_appends_without_separator() {
    let mut codec = NestCodec::new();
    let mut dst = BytesMut::from(&b"prefix"[..]);
    codec.encode(CJK_JSON, &mut dst).unwrap();
    codec.encode(EMOJI_JSON, &mut dst).unwrap();
    let expected = format!("prefix{CJK_FRAME}{EMOJI_FRAME}");
    assert_eq!(&dst[..], expected.as_bytes());
}

#[test]
fn encode_large_header_has_no_leading_zeros_or_sign() {
    let json = format!("\"{}\"", "a".repeat(12_343)); // 12345 units
    let mut dst = BytesMut::new();
    encode_frame(&json, &mut dst);
    assert!(dst.starts_with(b"12345#\"aaa"));
    assert_eq!(dst.len(), 6 + json.len());
}

#[test]
fn frame_parts_count_values_in_utf16_units_and_literals_by_bytes() {
    let mut dst = BytesMut::from(&b"x"[..]);
    encode_frame_parts(
        &mut dst,
        &[
            (b"{\"data\":", "\"a😀b\"".as_bytes()),
            (b"", b""),
            (b",\"id\":", "\"求\"".as_bytes()),
        ],
        b"}",
    );
    let json = "{\"data\":\"a😀b\",\"id\":\"求\"}";
    assert_eq!(
        &dst[..],
        format!("x{}#{json}", json.encode_utf16().count()).as_bytes()
    );
}

// ---------------------------------------------------------------------------
// Decoding: happy paths
// ---------------------------------------------------------------------------

#[test]
fn decode_returns_exact_json_of_captured_frames() {
    for (json, frame) in SPEC_CASES {
        let mut codec = NestCodec::new();
        let mut buf = BytesMut::from(frame.as_bytes());
        let got = codec.decode(&mut buf).unwrap().expect("a full frame");
        assert_eq!(&got[..], json.as_bytes());
        assert!(buf.is_empty(), "whole frame consumed for {frame}");
        assert!(!codec.in_frame());
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
    }
}

#[test]
fn decode_cjk_frame_from_hex() {
    let frames = decode_one_read(&hex(CJK_FRAME_HEX)).unwrap();
    assert_eq!(strs(&frames), [CJK_JSON]);
}

#[test]
fn decode_keeps_escaped_lone_surrogate_verbatim() {
    let frames = decode_one_read(SURROGATE_FRAME.as_bytes()).unwrap();
    assert_eq!(&frames[0][..], br#"{"pattern":"log","data":"x\ud800y"}"#);
}

#[test]
fn decode_several_frames_in_one_read() {
    let stream = format!("{CJK_FRAME}{EMOJI_FRAME}{SURROGATE_FRAME}2#{{}}");
    let frames = decode_one_read(stream.as_bytes()).unwrap();
    assert_eq!(strs(&frames), [CJK_JSON, EMOJI_JSON, SURROGATE_JSON, "{}"]);
}

#[test]
fn decode_frame_split_at_every_byte_position() {
    for (json, frame) in SPEC_CASES {
        let bytes = frame.as_bytes();
        for cut in 0..=bytes.len() {
            let mut codec = NestCodec::new();
            let mut buf = BytesMut::new();
            let mut frames = feed(&mut codec, &mut buf, &bytes[..cut]).unwrap();
            if cut < bytes.len() {
                assert!(
                    frames.is_empty(),
                    "{frame} cut at {cut} yielded a frame early"
                );
            }
            frames.extend(feed(&mut codec, &mut buf, &bytes[cut..]).unwrap());
            assert_eq!(strs(&frames), [json], "{frame} cut at {cut}");
            assert!(buf.is_empty());
        }
    }
}

#[test]
fn decode_stream_split_at_every_pair_of_positions() {
    // Two cuts anywhere in a three-frame stream, including inside headers and inside
    // multibyte characters.
    let stream = format!("{CJK_FRAME}{EMOJI_FRAME}{SURROGATE_FRAME}");
    let bytes = stream.as_bytes();
    for a in 0..=bytes.len() {
        for b in a..=bytes.len() {
            let mut codec = NestCodec::new();
            let mut buf = BytesMut::new();
            let mut frames = feed(&mut codec, &mut buf, &bytes[..a]).unwrap();
            frames.extend(feed(&mut codec, &mut buf, &bytes[a..b]).unwrap());
            frames.extend(feed(&mut codec, &mut buf, &bytes[b..]).unwrap());
            assert_eq!(
                strs(&frames),
                [CJK_JSON, EMOJI_JSON, SURROGATE_JSON],
                "cuts at {a} and {b}"
            );
        }
    }
}

#[test]
fn decode_one_byte_per_read() {
    let stream = format!("{CJK_FRAME}{EMOJI_FRAME}\r\n{SURROGATE_FRAME}");
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in stream.as_bytes() {
        frames.extend(feed(&mut codec, &mut buf, std::slice::from_ref(byte)).unwrap());
    }
    assert_eq!(strs(&frames), [CJK_JSON, EMOJI_JSON, SURROGATE_JSON]);
}

#[test]
fn in_frame_tracks_partial_bodies() {
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    assert!(!codec.in_frame());
    assert!(feed(&mut codec, &mut buf, b"2#{").unwrap().is_empty());
    assert!(codec.in_frame());
    assert_eq!(strs(&feed(&mut codec, &mut buf, b"}").unwrap()), ["{}"]);
    assert!(!codec.in_frame());
}

#[test]
fn body_may_contain_hash_and_digits() {
    let json = r#"{"data":"12#34#"}"#;
    let frame = format!("{}#{json}2#{{}}", json.len());
    let frames = decode_one_read(frame.as_bytes()).unwrap();
    assert_eq!(strs(&frames), [json, "{}"]);
}

// ---------------------------------------------------------------------------
// Header leniency (spec §1.3, §8)
// ---------------------------------------------------------------------------

#[test]
fn lenient_headers_are_read_as_40() {
    assert_eq!(JSON_40.encode_utf16().count(), 40);
    for header in [
        "40",
        " 40",
        "+40",
        "040",
        "40abc",
        "40.9",
        "40 ",
        "\n40",
        "\r\n40",
        "\t 40",
        "0040",
        // JS whitespace beyond ASCII: NBSP, BOM, ideographic space, line separator.
        "\u{a0}40",
        "\u{feff}40",
        "\u{3000}40",
        "\u{2028}40",
    ] {
        let input = format!("{header}#{JSON_40}2#{{}}");
        let frames = decode_one_read(input.as_bytes())
            .unwrap_or_else(|e| panic!("header {header:?} rejected: {e}"));
        assert_eq!(strs(&frames), [JSON_40, "{}"], "header {header:?}");
    }
}

#[test]
fn crlf_between_frames_is_tolerated() {
    let stream = format!("40#{JSON_40}\r\n40#{JSON_40}\r\n2#{{}}");
    let frames = decode_one_read(stream.as_bytes()).unwrap();
    assert_eq!(strs(&frames), [JSON_40, JSON_40, "{}"]);
}

#[test]
fn js_parseint_misparses_are_reproduced() {
    // `4.0e1` → 4 and `4 0` → 4: the wrong slice is cut (JSON.parse then fails upstream).
    for header in ["4.0e1", "4 0"] {
        let input = format!("{header}#{JSON_40}");
        let mut codec = NestCodec::new();
        let mut buf = BytesMut::from(input.as_bytes());
        let frame = codec.decode(&mut buf).unwrap().expect("4-unit frame");
        assert_eq!(&frame[..], br#"{"pa"#, "header {header:?}");
    }
    // `0x28` → 0: no JSON can follow.
    let err = decode_err(&mut NestCodec::new(), format!("0x28#{JSON_40}").as_bytes());
    assert!(matches!(err, FrameError::InvalidLength { .. }), "{err:?}");
}

// ---------------------------------------------------------------------------
// Framing errors
// ---------------------------------------------------------------------------

#[test]
fn header_without_digits_is_corrupted_length() {
    for input in [
        &b"abc#{}"[..],
        b"#{}",
        b" #{}",
        b"+#{}",
        b"-#{}",
        b".5#{}",
        b"\r\n#{}",
    ] {
        let err = decode_err(&mut NestCodec::new(), input);
        assert!(
            matches!(err, FrameError::CorruptedLength { .. }),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn corrupted_length_reports_header_text() {
    match decode_err(&mut NestCodec::new(), b"abc#{}") {
        FrameError::CorruptedLength { header } => assert_eq!(header, "abc"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn zero_or_negative_length_is_invalid() {
    for input in [
        &b"-5#{\"a\":1}"[..],
        b"0#{}",
        b"-0#{}",
        b"000#{}",
        b" -5#{}",
    ] {
        let err = decode_err(&mut NestCodec::new(), input);
        assert!(
            matches!(err, FrameError::InvalidLength { .. }),
            "{:?} gave {err:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn declared_length_above_max_errors_before_body_arrives() {
    let mut codec = NestCodec::with_max_frame_len(100);
    let mut buf = BytesMut::new();
    // Only the header has arrived: the codec must not wait for 101 units of body.
    match feed(&mut codec, &mut buf, b"101#") {
        Err(FrameError::TooLarge { len, max }) => assert_eq!((len, max), (101, 100)),
        other => panic!("expected TooLarge, got {other:?}"),
    }

    let mut codec = NestCodec::with_max_frame_len(1024);
    let mut buf = BytesMut::new();
    match feed(&mut codec, &mut buf, b"134217729#{\"pattern\":") {
        Err(FrameError::TooLarge { len, max }) => assert_eq!((len, max), (134_217_729, 1024)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn default_max_is_nest_max_buffer_size() {
    assert_eq!(NestCodec::new().max_frame_len(), 134_217_728);
    assert_eq!(NestCodec::default().max_frame_len(), DEFAULT_MAX_FRAME_LEN);
    let err = decode_err(&mut NestCodec::new(), b"134217729#");
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
    // Exactly the default is allowed (the codec waits for the body).
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    assert!(feed(&mut codec, &mut buf, b"134217728#{")
        .unwrap()
        .is_empty());
    assert!(codec.in_frame());
}

#[test]
fn length_overflowing_usize_is_too_large() {
    let err = decode_err(&mut NestCodec::new(), b"99999999999999999999999999999#{}");
    assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
}

#[test]
fn max_is_counted_in_utf16_units_not_bytes() {
    // 98 × 求 in quotes: 100 units, 296 bytes.
    let json = format!("\"{}\"", "求".repeat(98));
    assert_eq!(json.len(), 296);
    let frame = format!("100#{json}");
    let mut codec = NestCodec::with_max_frame_len(100);
    let mut buf = BytesMut::new();
    let frames = feed(&mut codec, &mut buf, frame.as_bytes()).unwrap();
    assert_eq!(strs(&frames), [json.as_str()]);

    let err = decode_err(&mut NestCodec::with_max_frame_len(100), b"101#");
    assert!(
        matches!(err, FrameError::TooLarge { len: 101, max: 100 }),
        "{err:?}"
    );
}

#[test]
fn header_without_hash_is_too_long() {
    let err = decode_err(&mut NestCodec::new(), &[b'1'; 70]);
    assert!(matches!(err, FrameError::HeaderTooLong), "{err:?}");
    let err = decode_err(
        &mut NestCodec::new(),
        br#"{"pattern":"a raw JSON packet without any frame header at all.."}"#,
    );
    assert!(matches!(err, FrameError::HeaderTooLong), "{err:?}");
}

#[test]
fn header_limit_boundary() {
    // Up to MAX_HEADER_LEN bytes without '#' just wait.
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    assert!(feed(&mut codec, &mut buf, &[b' '; MAX_HEADER_LEN])
        .unwrap()
        .is_empty());
    // One more byte is refused.
    assert!(matches!(
        feed(&mut codec, &mut buf, b" "),
        Err(FrameError::HeaderTooLong)
    ));

    // A header of exactly MAX_HEADER_LEN bytes is accepted...
    let header = format!("{}2", " ".repeat(MAX_HEADER_LEN - 1));
    let frames = decode_one_read(format!("{header}#{{}}").as_bytes()).unwrap();
    assert_eq!(strs(&frames), ["{}"]);
    // ...and one byte longer is not, even when the '#' is in the same read.
    let header = format!("{}2", " ".repeat(MAX_HEADER_LEN));
    let err = decode_err(&mut NestCodec::new(), format!("{header}#{{}}").as_bytes());
    assert!(matches!(err, FrameError::HeaderTooLong), "{err:?}");
}

#[test]
fn length_ending_inside_emoji_splits_character() {
    // `a😀` is 3 units; a length of 2 cuts the surrogate pair.
    let err = decode_err(&mut NestCodec::new(), "2#a😀".as_bytes());
    assert!(matches!(err, FrameError::SplitsCharacter), "{err:?}");
    let err = decode_err(&mut NestCodec::new(), "1#😀".as_bytes());
    assert!(matches!(err, FrameError::SplitsCharacter), "{err:?}");
    // Inside a longer packet: 27 units end between the two halves of 😀.
    let err = decode_err(&mut NestCodec::new(), format!("27#{EMOJI_JSON}").as_bytes());
    assert!(matches!(err, FrameError::SplitsCharacter), "{err:?}");
}

#[test]
fn split_character_detected_when_emoji_arrives_later() {
    let emoji = "😀".as_bytes();
    for cut in 0..emoji.len() {
        let mut codec = NestCodec::new();
        let mut buf = BytesMut::new();
        let mut first = b"2#a".to_vec();
        first.extend_from_slice(&emoji[..cut]);
        assert!(
            feed(&mut codec, &mut buf, &first).unwrap().is_empty(),
            "cut {cut}"
        );
        let res = feed(&mut codec, &mut buf, &emoji[cut..]);
        assert!(
            matches!(res, Err(FrameError::SplitsCharacter)),
            "cut {cut}: {res:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Invalid UTF-8 (spec §1.2 step 1, §8)
// ---------------------------------------------------------------------------

#[test]
fn invalid_bytes_count_one_unit_each_and_become_replacement_chars() {
    // Node: `ff fe` → two U+FFFD, 2 units.
    let frames = decode_one_read(b"2#\xff\xfe2#{}").unwrap();
    assert_eq!(strs(&frames), ["\u{FFFD}\u{FFFD}", "{}"]);

    let frames = decode_one_read(b"5#\"\xffa\xc0\"").unwrap();
    assert_eq!(strs(&frames), ["\"\u{FFFD}a\u{FFFD}\""]);
}

#[test]
fn truncated_sequence_is_one_replacement_char() {
    // E1 80 is a valid prefix cut by 'A': one U+FFFD (maximal subpart), then 'A'.
    let frames = decode_one_read(b"2#\xe1\x80A2#{}").unwrap();
    assert_eq!(strs(&frames), ["\u{FFFD}A", "{}"]);
    // A lone lead byte right before the next header.
    let frames = decode_one_read(b"1#\xe62#{}").unwrap();
    assert_eq!(strs(&frames), ["\u{FFFD}", "{}"]);
}

#[test]
fn invalid_sequence_split_across_reads() {
    // `e6 b1` (prefix of 求) then 'X': decided only once 'X' arrives.
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    assert!(feed(&mut codec, &mut buf, b"2#\xe6").unwrap().is_empty());
    assert!(feed(&mut codec, &mut buf, b"\xb1").unwrap().is_empty());
    let frames = feed(&mut codec, &mut buf, b"X2#{}").unwrap();
    assert_eq!(strs(&frames), ["\u{FFFD}X", "{}"]);
}

#[test]
fn encoded_surrogates_are_invalid_utf8() {
    // CESU-style `ed a0 80` (an unpaired surrogate encoded as UTF-8) is invalid:
    // WHATWG gives one U+FFFD per byte.
    let frames = decode_one_read(b"3#\xed\xa0\x80").unwrap();
    assert_eq!(strs(&frames), ["\u{FFFD}\u{FFFD}\u{FFFD}"]);
}

// ---------------------------------------------------------------------------
// End of stream
// ---------------------------------------------------------------------------

#[test]
fn eof_inside_frame_is_truncated() {
    for partial in [
        &b"33#{\"pattern\""[..],
        b"33#",
        b"33",
        b" 3",
        b"2#\xe6",
        b"abc",
    ] {
        let mut codec = NestCodec::new();
        let mut buf = BytesMut::from(partial);
        let res = codec.decode_eof(&mut buf);
        assert!(
            matches!(res, Err(FrameError::Truncated { .. })),
            "{:?}: {res:?}",
            String::from_utf8_lossy(partial)
        );
    }
}

#[test]
fn eof_truncated_reports_buffered_bytes() {
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    assert!(feed(&mut codec, &mut buf, b"10#{\"a\"").unwrap().is_empty());
    match codec.decode_eof(&mut buf) {
        Err(FrameError::Truncated { buffered }) => assert_eq!(buffered, 4),
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[test]
fn eof_after_frames_with_trailing_whitespace_is_clean() {
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::from(&b"2#{}\r\n"[..]);
    assert_eq!(&codec.decode_eof(&mut buf).unwrap().unwrap()[..], b"{}");
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
    assert!(buf.is_empty());

    for only_space in [&b""[..], b"\n", b" \r\n\t"] {
        let mut buf = BytesMut::from(only_space);
        assert_eq!(
            NestCodec::new().decode_eof(&mut buf).unwrap(),
            None,
            "{only_space:?}"
        );
        assert!(buf.is_empty());
    }
}

#[tokio::test]
async fn framed_read_end_to_end() {
    use futures_util::StreamExt;
    use tokio_util::codec::FramedRead;

    let stream = format!("{CJK_FRAME}{EMOJI_FRAME}\n");
    let frames: Vec<_> = FramedRead::new(stream.as_bytes(), NestCodec::new())
        .collect::<Vec<_>>()
        .await;
    let frames: Vec<Bytes> = frames.into_iter().map(Result::unwrap).collect();
    assert_eq!(strs(&frames), [CJK_JSON, EMOJI_JSON]);

    let truncated = format!("{CJK_FRAME}31#{{\"pattern\"");
    let results: Vec<_> = FramedRead::new(truncated.as_bytes(), NestCodec::new())
        .collect::<Vec<_>>()
        .await;
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(&results[0].as_ref().unwrap()[..], CJK_JSON.as_bytes());
    assert!(
        matches!(results[1], Err(FrameError::Truncated { .. })),
        "{results:?}"
    );
}
