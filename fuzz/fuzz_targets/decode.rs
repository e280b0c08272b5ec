//! Fuzz target `decode`: arbitrary bytes, delivered in arbitrary chunkings, through
//! `NestCodec` (as a server connection reads a socket), and every decoded frame through
//! both packet parsers.
//!
//! Input layout: the first 4 bytes (when present) seed the chunking, the rest is the byte
//! stream. Checked properties, besides "never panics":
//!
//! * every frame is valid UTF-8 of 1..=MAX_FRAME_LEN UTF-16 units;
//! * the result does not depend on how the stream was split into reads: the frames and
//!   the final error (or clean end) equal those of the same bytes decoded in one read;
//! * every raw slice `parse_inbound` / `parse_reply` hand out is itself valid JSON.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use nestling_runtime::codec::NestCodec;
use nestling_runtime::packet::{parse_inbound, parse_reply, Inbound, Reply};
use nestling_runtime::utf16::utf16_len;
use tokio_util::codec::Decoder;

/// Small limit so that the `TooLarge` paths are reached by ordinary inputs.
const MAX_FRAME_LEN: usize = 4096;

/// What decoding a whole stream produced: the frames, then how it ended.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Bytes>,
    /// `Debug` of the error that stopped decoding, or of the `decode_eof` result.
    end: String,
}

/// Deterministic chunk sizes from a 32-bit seed (xorshift).
struct Chunks {
    state: u32,
    max: usize,
}

impl Chunks {
    fn new(seed: [u8; 4]) -> Self {
        // The low bits of the first byte pick the largest chunk, from byte-at-a-time to
        // page-sized reads; the rest randomises the sizes below that.
        let max = [
            1, 2, 3, 5, 8, 17, 64, 65, 128, 511, 1024, 4096, 8192, 3, 7, 13,
        ][usize::from(seed[0] & 15)];
        Self {
            state: u32::from_le_bytes(seed) | 1,
            max,
        }
    }
    fn next(&mut self) -> usize {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.state = x;
        1 + (x as usize) % self.max
    }
}

fn decode_stream<'a>(reads: impl Iterator<Item = &'a [u8]>) -> Outcome {
    let mut codec = NestCodec::with_max_frame_len(MAX_FRAME_LEN);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for read in reads {
        buf.extend_from_slice(read);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                // The connection is closed on any framing error: nothing more is decoded.
                Err(e) => {
                    return Outcome {
                        frames,
                        end: format!("{e:?}"),
                    }
                }
            }
        }
    }
    // End of stream: what a client connection does when the peer closes.
    let end = loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => frames.push(frame),
            other => break format!("{other:?}"),
        }
    };
    Outcome { frames, end }
}

fn assert_json(raw: &Bytes, what: &str, frame: &Bytes) {
    assert!(
        serde_json::from_slice::<serde::de::IgnoredAny>(raw).is_ok(),
        "{what} slice {raw:?} of frame {frame:?} is not valid JSON"
    );
}

fn check_packets(frame: &Bytes) {
    match parse_inbound(frame) {
        Ok(Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        }) => {
            assert_json(&id, "id", frame);
            for (what, raw) in [("pattern", pattern), ("data", data), ("metadata", metadata)] {
                if let Some(raw) = raw {
                    assert_json(&raw, what, frame);
                }
            }
        }
        Ok(Inbound::Event {
            pattern,
            data,
            metadata,
        }) => {
            assert!(
                pattern.is_some() || data.is_some(),
                "event without pattern and data: {frame:?}"
            );
            for (what, raw) in [("pattern", pattern), ("data", data), ("metadata", metadata)] {
                if let Some(raw) = raw {
                    assert_json(&raw, what, frame);
                }
            }
        }
        Ok(Inbound::Undefined) | Err(_) => {}
    }
    match parse_reply(frame) {
        Ok(Reply::Error { id, err }) => {
            assert_json(&err, "err", frame);
            if let Some(id) = id {
                assert_json(&id, "id", frame);
            }
        }
        Ok(Reply::Value { id, response, .. }) => {
            if let Some(id) = id {
                assert_json(&id, "id", frame);
            }
            if let Some(response) = response {
                assert_json(&response, "response", frame);
            }
        }
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let (seed, stream) = if data.len() >= 4 {
        let (s, rest) = data.split_at(4);
        ([s[0], s[1], s[2], s[3]], rest)
    } else {
        ([0; 4], data)
    };

    let mut chunks = Chunks::new(seed);
    let mut reads = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let n = chunks.next().min(stream.len() - at);
        reads.push(&stream[at..at + n]);
        at += n;
    }

    let chunked = decode_stream(reads.iter().copied());
    let whole = decode_stream(std::iter::once(stream));
    assert_eq!(
        chunked,
        whole,
        "decoding depends on how the stream is split into reads ({} reads)",
        reads.len()
    );

    for frame in &chunked.frames {
        let text = std::str::from_utf8(frame).expect("decoded frames are UTF-8");
        let units = utf16_len(text);
        assert!(
            (1..=MAX_FRAME_LEN).contains(&units),
            "frame of {units} UTF-16 units with a limit of {MAX_FRAME_LEN}: {frame:?}"
        );
        check_packets(frame);
    }
});
