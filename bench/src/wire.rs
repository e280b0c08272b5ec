//! Nest TCP framing, written from scratch for the bench (no nestling code): `<len>#<json>`
//! with `len` counted in UTF-16 code units of the JSON text.
//!
//! Shared by the load generator and the ceiling server, so neither measures nestling's codec.

use std::io::Write;

/// Longest header accepted before `#` (as nestling and the spec's advice).
const MAX_HEADER: usize = 64;

/// A framing error: the connection is unusable.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError(pub &'static str);

/// Number of UTF-16 code units in UTF-8 `bytes` (assumed valid UTF-8): one unit per
/// character, two for characters outside the BMP (4-byte sequences).
pub fn utf16_len(bytes: &[u8]) -> usize {
    if bytes.is_ascii() {
        return bytes.len();
    }
    bytes
        .iter()
        .map(|&b| match b {
            0x80..=0xBF => 0, // continuation byte
            0xF0..=0xFF => 2, // lead of a 4-byte sequence: a surrogate pair
            _ => 1,
        })
        .sum()
}

/// Byte length of the first `units` UTF-16 units of `bytes`, or `None` if `bytes` ends first.
fn bytes_for_units(bytes: &[u8], units: usize) -> Option<usize> {
    // Every unit takes at least one byte, so fewer bytes than units is always incomplete.
    if bytes.len() < units {
        return None;
    }
    if bytes[..units].is_ascii() {
        return Some(units);
    }
    let (mut i, mut u) = (0usize, 0usize);
    while u < units {
        let b = *bytes.get(i)?;
        let (width, w_units) = match b {
            0x00..=0x7F => (1, 1),
            0xC0..=0xDF => (2, 1),
            0xE0..=0xEF => (3, 1),
            0xF0..=0xFF => (4, 2),
            _ => (1, 1), // stray continuation byte: Node decodes it as one U+FFFD
        };
        i += width;
        u += w_units;
    }
    (i <= bytes.len()).then_some(i)
}

/// Finds the next complete frame at the start of `buf`.
///
/// Returns `Ok(Some((body_start, body_end)))` (byte offsets into `buf`), `Ok(None)` when more
/// bytes are needed, or an error for a header that can never become valid. The header is
/// read like JS `parseInt`: leading whitespace, an optional `+`, then digits up to `#`.
pub fn next_frame(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let Some(hash) = buf.iter().take(MAX_HEADER + 1).position(|&b| b == b'#') else {
        return if buf.len() > MAX_HEADER {
            Err(FrameError("frame header too long"))
        } else {
            Ok(None)
        };
    };
    let header = buf[..hash].trim_ascii_start();
    let header = header.strip_prefix(b"+").unwrap_or(header);
    let digits = header.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return Err(FrameError("corrupted length"));
    }
    let mut units = 0usize;
    for &d in &header[..digits] {
        units = units
            .checked_mul(10)
            .and_then(|u| u.checked_add(usize::from(d - b'0')))
            .ok_or(FrameError("length overflow"))?;
    }
    let start = hash + 1;
    Ok(bytes_for_units(&buf[start..], units).map(|n| (start, start + n)))
}

/// Appends one frame holding `json` to `out`.
pub fn push_frame(out: &mut Vec<u8>, json: &[u8]) {
    let _ = write!(out, "{}#", utf16_len(json));
    out.extend_from_slice(json);
}

/// Appends the request frame `{"pattern":"sum","data":<data>,"id":"<id>"}` to `out`, where
/// `prefix` is everything up to the id's opening quote (ASCII only, so units = bytes).
pub fn push_request(out: &mut Vec<u8>, prefix: &[u8], id: u64) {
    let mut digits = [0u8; 20];
    let id_text = format_u64(id, &mut digits);
    let len = prefix.len() + id_text.len() + 2; // + `"}`
    let _ = write!(out, "{len}#");
    out.extend_from_slice(prefix);
    out.extend_from_slice(id_text);
    out.extend_from_slice(b"\"}");
}

/// `{"pattern":"sum","data":<data_json>,"id":"` — the fixed part of every `sum` request.
pub fn sum_prefix(data_json: &str) -> Vec<u8> {
    assert!(data_json.is_ascii(), "request payloads are ASCII");
    format!("{{\"pattern\":\"sum\",\"data\":{data_json},\"id\":\"").into_bytes()
}

/// Decimal text of `n` in `buf`, without allocating.
pub fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Parses the decimal id the load generator sent (`"123"`).
pub fn parse_id(id: &str) -> Option<u64> {
    id.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_not_bytes() {
        let json = r#"{"pattern":"log","data":"求和1111"}"#;
        assert_eq!(utf16_len(json.as_bytes()), 33);
        assert_eq!(utf16_len("a😀b".as_bytes()), 4);
        let mut out = Vec::new();
        push_frame(&mut out, json.as_bytes());
        assert!(out.starts_with(b"33#"));
        assert_eq!(next_frame(&out), Ok(Some((3, out.len()))));
    }

    #[test]
    fn several_frames_and_partial_ones() {
        let mut buf = Vec::new();
        push_frame(&mut buf, r#"{"a":"😀"}"#.as_bytes());
        push_frame(&mut buf, br#"{"b":2}"#);
        let (s, e) = next_frame(&buf).unwrap().unwrap();
        assert_eq!(&buf[s..e], r#"{"a":"😀"}"#.as_bytes());
        let rest = &buf[e..];
        assert_eq!(next_frame(rest), Ok(Some((2, rest.len()))));
        for cut in 0..rest.len() {
            assert_eq!(next_frame(&rest[..cut]), Ok(None), "cut at {cut}");
        }
        // A 4-byte character split in the middle is incomplete, not a short frame.
        assert_eq!(next_frame(&buf[..e - 3]), Ok(None));
    }

    #[test]
    fn lenient_header_and_errors() {
        assert_eq!(next_frame(b" +2#{}"), Ok(Some((4, 6))));
        assert_eq!(next_frame(b"\r\n2#{}"), Ok(Some((4, 6))));
        assert!(next_frame(b"abc#{}").is_err());
        assert!(next_frame(&[b'1'; 80]).is_err());
    }

    #[test]
    fn request_encoding() {
        let mut out = Vec::new();
        push_request(&mut out, &sum_prefix("[1,2,3]"), 42);
        let text = String::from_utf8(out).unwrap();
        let body = r#"{"pattern":"sum","data":[1,2,3],"id":"42"}"#;
        assert_eq!(text, format!("{}#{body}", body.len()));
        assert_eq!(parse_id("42"), Some(42));
    }
}
