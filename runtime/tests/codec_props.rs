//! Property tests for Nest TCP framing through the public API
//! (`nest-tcp-protocol.md` §1: `len` counts the UTF-16 units of the JSON text).

use bytes::{Bytes, BytesMut};
use nestling_runtime::codec::{encode_frame, FrameError, NestCodec};
use nestling_runtime::packet::{self, Inbound, Reply};
use proptest::prelude::*;
use proptest::sample::Index;
use tokio_util::codec::{Decoder, Encoder};

/// Characters weighted towards the interesting cases: astral (2 units, 4 bytes),
/// BMP multibyte (1 unit, 2–3 bytes), and bytes that look like framing (`#`, digits).
fn wire_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => proptest::char::range('\u{10000}', '\u{10FFFF}'),
        2 => proptest::char::range('\u{80}', '\u{FFFF}'),
        1 => proptest::char::range(' ', '~'),
        1 => prop::sample::select(vec!['#', '0', '9', '-', '\r', '\n', '"', '\\', '😀', '求']),
    ]
}

fn wire_string() -> impl Strategy<Value = String> {
    prop::collection::vec(wire_char(), 0..40).prop_map(|cs| cs.into_iter().collect())
}

/// A JSON text: a string literal, or a Nest-like packet object holding strings.
fn json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        wire_string().prop_map(|s| serde_json::to_string(&s).unwrap()),
        (
            wire_string(),
            wire_string(),
            prop::option::of(wire_string())
        )
            .prop_map(|(p, d, id)| {
                let mut v = serde_json::json!({ "pattern": p, "data": d });
                if let Some(id) = id {
                    v["id"] = serde_json::Value::String(id);
                }
                serde_json::to_string(&v).unwrap()
            }),
        // JS-style escaped lone surrogates stay 6 ASCII units each.
        wire_string().prop_map(|s| format!(r#"{{"data":"{}\ud800"}}"#, s.len())),
    ]
}

fn encode_all(texts: &[String]) -> BytesMut {
    let mut codec = NestCodec::new();
    let mut buf = BytesMut::new();
    for t in texts {
        codec.encode(t.as_str(), &mut buf).unwrap();
    }
    buf
}

/// Byte offsets at which to cut a stream of `len` bytes, sorted, duplicates allowed.
fn cut_points(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.sort_unstable();
    points
}

/// Feeds `stream` in the chunks delimited by `points`, decoding after every chunk, then
/// signals EOF. Stops at the first error.
fn decode_chunked(
    codec: &mut NestCodec,
    stream: &[u8],
    points: &[usize],
) -> Result<Vec<Bytes>, FrameError> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for &end in points.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[start..end]);
        start = end;
        while let Some(f) = codec.decode(&mut buf)? {
            frames.push(f);
        }
    }
    while let Some(f) = codec.decode_eof(&mut buf)? {
        frames.push(f);
    }
    Ok(frames)
}

fn as_strs(frames: &[Bytes]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| std::str::from_utf8(f).expect("decoded frames are UTF-8"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// (1) Any sequence of JSON texts survives encode → decode exactly.
    #[test]
    fn roundtrip_in_one_read(texts in prop::collection::vec(json_text(), 0..8)) {
        let mut buf = encode_all(&texts);
        let mut codec = NestCodec::new();
        let mut frames = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            frames.push(f);
        }
        prop_assert!(buf.is_empty());
        prop_assert!(!codec.in_frame());
        prop_assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
        let expected: Vec<&str> = texts.iter().map(String::as_str).collect();
        prop_assert_eq!(as_strs(&frames), expected);
    }

    /// (2) The concatenated stream cut at arbitrary byte offsets (inside headers, inside
    /// multibyte characters, between frames) decodes to the same frames.
    #[test]
    fn roundtrip_in_arbitrary_chunks(
        texts in prop::collection::vec(json_text(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let stream = encode_all(&texts);
        let points = cut_points(&cuts, stream.len());
        let frames = decode_chunked(&mut NestCodec::new(), &stream, &points).unwrap();
        let expected: Vec<&str> = texts.iter().map(String::as_str).collect();
        prop_assert_eq!(as_strs(&frames), expected);
    }

    /// Same as (2) with every byte delivered on its own.
    #[test]
    fn roundtrip_byte_by_byte(texts in prop::collection::vec(json_text(), 1..4)) {
        let stream = encode_all(&texts);
        let points: Vec<usize> = (0..stream.len()).collect();
        let frames = decode_chunked(&mut NestCodec::new(), &stream, &points).unwrap();
        let expected: Vec<&str> = texts.iter().map(String::as_str).collect();
        prop_assert_eq!(as_strs(&frames), expected);
    }

    /// (4) The header is exactly `json.encode_utf16().count()`, in decimal without
    /// padding, followed by `#` and the UTF-8 text unchanged.
    #[test]
    fn header_is_utf16_length(s in wire_string()) {
        let mut buf = BytesMut::new();
        encode_frame(&s, &mut buf);
        let hash = buf.iter().position(|&b| b == b'#').unwrap();
        let header = std::str::from_utf8(&buf[..hash]).unwrap();
        let units = s.encode_utf16().count();
        prop_assert_eq!(header, units.to_string());
        prop_assert_eq!(&buf[hash + 1..], s.as_bytes());
        prop_assert_eq!(nestling_runtime::utf16::utf16_len(&s), units);
    }

    /// Encoded responses decode and parse back to the same id and value.
    #[test]
    fn response_packets_roundtrip(value in wire_string(), id in wire_string()) {
        let value_json = serde_json::to_string(&value).unwrap();
        let id_json = serde_json::to_string(&id).unwrap();
        let mut buf = BytesMut::new();
        packet::Wire::Tcp.response(&mut buf, Some(value_json.as_bytes()), id_json.as_bytes());
        let frame = NestCodec::new().decode(&mut buf).unwrap().unwrap();
        prop_assert!(buf.is_empty());
        match packet::parse_reply(&frame).unwrap() {
            Reply::Value { id: Some(got_id), response: Some(response), disposed: true } => {
                prop_assert_eq!(serde_json::from_slice::<String>(&got_id).unwrap(), id);
                prop_assert_eq!(serde_json::from_slice::<String>(&response).unwrap(), value);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// Encoded requests decode and parse back to the same pattern, data and id.
    #[test]
    fn outbound_packets_roundtrip(pattern in wire_string(), data in wire_string(), id in any::<u64>()) {
        let pattern_json = serde_json::to_string(&pattern).unwrap();
        let mut buf = BytesMut::new();
        packet::Wire::Tcp.outbound(&mut buf, &pattern_json, &data, None, Some(id)).unwrap();
        let frame = NestCodec::new().decode(&mut buf).unwrap().unwrap();
        match packet::parse_inbound(&frame).unwrap() {
            Inbound::Request { pattern: Some(p), data: Some(d), id: got_id, metadata: None } => {
                prop_assert_eq!(serde_json::from_slice::<String>(&p).unwrap(), pattern);
                prop_assert_eq!(serde_json::from_slice::<String>(&d).unwrap(), data);
                prop_assert_eq!(serde_json::from_slice::<String>(&got_id).unwrap(), id.to_string());
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

/// Bytes biased towards framing syntax and UTF-8 lead/continuation bytes.
fn garbage_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        2 => any::<u8>(),
        2 => prop::sample::select(b"0123456789#{}\" -+.\r\n".to_vec()),
        1 => 0x80u8..=0xBF,
        1 => 0xC0u8..=0xFF,
    ]
}

/// Garbage segments interleaved with well-formed frames, so the decoder is driven
/// through body states as well as header states.
fn hostile_stream() -> impl Strategy<Value = Vec<u8>> {
    let segment = prop_oneof![
        prop::collection::vec(garbage_byte(), 0..64),
        json_text().prop_map(|t| {
            let mut b = BytesMut::new();
            encode_frame(&t, &mut b);
            b.to_vec()
        }),
        // A plausible header with an arbitrary (possibly huge) length.
        any::<u32>().prop_map(|n| format!("{n}#").into_bytes()),
    ];
    prop::collection::vec(segment, 0..8).prop_map(|segs| segs.concat())
}

const SMALL_MAX: usize = 4096;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (3) Arbitrary bytes in arbitrary chunks never panic; every frame that does come
    /// out is valid UTF-8 of 1..=max UTF-16 units.
    #[test]
    fn garbage_never_panics(
        stream in hostile_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let points = cut_points(&cuts, stream.len());
        let mut codec = NestCodec::with_max_frame_len(SMALL_MAX);
        let mut buf = BytesMut::new();
        let mut start = 0;
        let mut failed = false;
        'feed: for &end in points.iter().chain(std::iter::once(&stream.len())) {
            buf.extend_from_slice(&stream[start..end]);
            start = end;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let text = std::str::from_utf8(&frame);
                        prop_assert!(text.is_ok(), "frame is not UTF-8: {:?}", frame);
                        let units = text.unwrap().encode_utf16().count();
                        prop_assert!((1..=SMALL_MAX).contains(&units), "{} units", units);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break 'feed;
                    }
                }
            }
        }
        if !failed {
            // EOF handling must not panic either; it either drains or reports.
            while let Ok(Some(frame)) = codec.decode_eof(&mut buf) {
                prop_assert!(std::str::from_utf8(&frame).is_ok());
            }
        }
    }

    /// Garbage fed in one read and in chunks gives the same frames and fails (or not)
    /// alike: chunking must not change how bytes are interpreted.
    #[test]
    fn chunking_does_not_change_decoding(
        stream in hostile_stream(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        fn run(stream: &[u8], points: &[usize]) -> (Vec<Bytes>, bool) {
            let mut codec = NestCodec::with_max_frame_len(SMALL_MAX);
            let mut buf = BytesMut::new();
            let mut frames = Vec::new();
            let mut start = 0;
            for &end in points.iter().chain(std::iter::once(&stream.len())) {
                buf.extend_from_slice(&stream[start..end]);
                start = end;
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(f)) => frames.push(f),
                        Ok(None) => break,
                        Err(_) => return (frames, true),
                    }
                }
            }
            (frames, false)
        }
        let points = cut_points(&cuts, stream.len());
        let whole = run(&stream, &[]);
        let chunked = run(&stream, &points);
        prop_assert_eq!(whole, chunked);
    }
}
