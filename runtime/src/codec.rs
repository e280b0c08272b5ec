//! Nest TCP framing: `<len>#<json>`, where `len` counts UTF-16 code units of the JSON text.
//!
//! [`NestCodec`] is a [`Decoder`]/[`Encoder`] pair usable with `tokio_util::codec::Framed`.
//! Decoded frames are the JSON text as UTF-8 [`Bytes`] (invalid UTF-8 is replaced with
//! U+FFFD exactly as Node's `StringDecoder` does), ready for the packet layer.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::utf16::{find_boundary, utf16_len_bytes, Boundary};

/// Nest's default `maxBufferSize`: 134,217,728 UTF-16 units (512 MiB / 4).
pub const DEFAULT_MAX_FRAME_LEN: usize = 134_217_728;

/// The largest frame limit a codec accepts, in UTF-16 units (≈ 1.4 G; 10× Nest's default):
/// a frame then stays below 4 GiB of UTF-8 (three bytes per unit at most), so the server
/// addresses a packet's fields with 32-bit offsets.
pub const MAX_FRAME_LEN_LIMIT: usize = u32::MAX as usize / 3;

/// Longest length header accepted before the `#` (digits plus leniencies such as leading
/// whitespace or `\r\n` between frames). Nest waits forever for a `#`; we refuse early so a
/// peer cannot make us buffer an endless header.
pub const MAX_HEADER_LEN: usize = 64;

/// Why a byte stream is not valid Nest framing. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix has no digits (Nest: "Corrupted length value").
    #[error(
        "corrupted length value {header:?} in frame header: expected a decimal length before '#'"
    )]
    CorruptedLength {
        /// The header text as received (lossy UTF-8).
        header: String,
    },
    /// The length prefix is zero or negative, so no JSON can follow.
    #[error(
        "invalid frame length {header:?}: the length must be a positive number of UTF-16 units"
    )]
    InvalidLength {
        /// The header text as received (lossy UTF-8).
        header: String,
    },
    /// No `#` within [`MAX_HEADER_LEN`] bytes.
    #[error("frame header longer than {MAX_HEADER_LEN} bytes without '#': the peer is not speaking Nest TCP framing")]
    HeaderTooLong,
    /// The declared length exceeds the configured maximum.
    #[error("frame of {len} UTF-16 units exceeds the limit of {max}; raise max_frame_len if such payloads are expected")]
    TooLarge {
        /// Declared length in UTF-16 units.
        len: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The declared length ends in the middle of a character above U+FFFF.
    #[error("frame length ends inside a surrogate pair: the sender probably counted bytes or code points instead of UTF-16 units")]
    SplitsCharacter,
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left undecoded.
        buffered: usize,
    },
    /// The underlying transport failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Decoder/encoder for Nest's `<len>#<json>` framing.
///
/// ```
/// use bytes::BytesMut;
/// use nestling_runtime::codec::NestCodec;
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = NestCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(r#"{"pattern":"log","data":"求和1111"}"#, &mut buf).unwrap();
/// assert!(buf.starts_with(b"33#")); // 33 UTF-16 units, 37 bytes
/// let frame = codec.decode(&mut buf).unwrap().unwrap();
/// assert_eq!(&frame[..], r#"{"pattern":"log","data":"求和1111"}"#.as_bytes());
/// ```
#[derive(Debug, Clone)]
pub struct NestCodec {
    max_frame_len: usize,
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Body {
        len: usize,
        scanned_bytes: usize,
        scanned_units: usize,
        valid: bool,
    },
}

impl Default for NestCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl NestCodec {
    /// A codec with Nest's default frame limit ([`DEFAULT_MAX_FRAME_LEN`]).
    pub fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A codec that rejects frames longer than `max` UTF-16 units (at most
    /// [`MAX_FRAME_LEN_LIMIT`]; a larger `max` is lowered to it).
    ///
    /// ```
    /// use nestling_runtime::codec::{NestCodec, MAX_FRAME_LEN_LIMIT};
    /// assert_eq!(NestCodec::with_max_frame_len(1024).max_frame_len(), 1024);
    /// assert_eq!(NestCodec::with_max_frame_len(usize::MAX).max_frame_len(), MAX_FRAME_LEN_LIMIT);
    /// ```
    pub fn with_max_frame_len(max: usize) -> Self {
        Self {
            max_frame_len: max.min(MAX_FRAME_LEN_LIMIT),
            state: State::Header,
        }
    }

    /// The configured limit in UTF-16 units.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// True while part of a frame (a header or a body) has been consumed but not completed.
    pub fn in_frame(&self) -> bool {
        matches!(self.state, State::Body { .. })
    }
}

/// Parses a length header with JavaScript `parseInt(header, 10)` leniency: leading
/// whitespace, an optional sign, digits, and any trailing junk (Nest peers accept
/// ` 40`, `+40`, `040`, `40abc`, `40.9` and `\r\n40` as 40).
fn parse_header(header: &[u8], max: usize) -> Result<usize, FrameError> {
    // The common case, plain digits: no text conversion, no trimming. Up to 18 digits
    // cannot overflow a u64; anything else takes the general path below.
    if (1..=18).contains(&header.len()) && header.iter().all(u8::is_ascii_digit) {
        let len = header
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return match usize::try_from(len) {
            Ok(0) => Err(FrameError::InvalidLength {
                header: String::from_utf8_lossy(header).into_owned(),
            }),
            Ok(len) if len <= max => Ok(len),
            Ok(len) => Err(FrameError::TooLarge { len, max }),
            Err(_) => Err(FrameError::TooLarge {
                len: usize::MAX,
                max,
            }),
        };
    }
    let text = String::from_utf8_lossy(header);
    // JavaScript's whitespace: Unicode White_Space minus NEL (U+0085), plus the BOM.
    let trimmed =
        text.trim_start_matches(|c: char| (c.is_whitespace() && c != '\u{85}') || c == '\u{feff}');
    let (negative, rest) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(FrameError::CorruptedLength {
            header: text.into_owned(),
        });
    }
    let mut len: usize = 0;
    for d in rest.as_bytes()[..digits].iter() {
        len = match len
            .checked_mul(10)
            .and_then(|l| l.checked_add(usize::from(d - b'0')))
        {
            Some(l) => l,
            None => {
                return Err(FrameError::TooLarge {
                    len: usize::MAX,
                    max,
                })
            }
        };
    }
    if negative || len == 0 {
        return Err(FrameError::InvalidLength {
            header: text.into_owned(),
        });
    }
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// A decoded frame known to be UTF-8 text: only [`NestCodec::decode_text`] makes one, from a
/// frame the decoder validated while finding its end (or rebuilt with U+FFFD). The packet
/// parser then reads it as `&str`, without checking every byte a second time.
///
/// A transport of your own gets them from [`NestCodec::decode_text`] and hands them to
/// `nestling::transport::Inbox::handle_frame`.
///
/// ```
/// use nestling::codec::NestCodec;
/// let mut codec = NestCodec::new();
/// let mut buf = bytes::BytesMut::from(&b"13#{\"pattern\":1}"[..]);
/// let frame = codec.decode_text(&mut buf).unwrap().unwrap();
/// assert_eq!(frame.as_str(), r#"{"pattern":1}"#);
/// ```
#[derive(Debug, Clone)]
pub struct FrameText(Bytes);

impl FrameText {
    /// The frame's bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The frame as text.
    #[allow(unsafe_code)] // One of the crate's two exceptions to `deny(unsafe_code)`.
    pub fn as_str(&self) -> &str {
        // SAFETY: a `FrameText` is only built by `NestCodec::decode_text` from `decode`'s
        // output, which is UTF-8: `find_boundary` validated every byte (`valid`), or the
        // frame was rebuilt with `String::from_utf8_lossy`; or by `TryFrom<Bytes>`, which
        // checks with `std::str::from_utf8`. The proptests
        // (`runtime/tests/codec_props.rs`) and the `decode` fuzz target assert this for
        // every frame they decode.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// A packet that arrived without Nest's framing (a message, an in-process call): checked
/// to be UTF-8 here.
///
/// ```
/// use nestling::codec::FrameText;
/// let frame = FrameText::try_from(bytes::Bytes::from_static(br#"{"pattern":"sum"}"#)).unwrap();
/// assert_eq!(frame.as_str(), r#"{"pattern":"sum"}"#);
/// assert!(FrameText::try_from(bytes::Bytes::from_static(b"\xff")).is_err());
/// ```
impl TryFrom<Bytes> for FrameText {
    type Error = std::str::Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(FrameText(bytes))
    }
}

impl NestCodec {
    /// [`Decoder::decode`], keeping the fact that the frame is UTF-8 in its type.
    pub fn decode_text(&mut self, src: &mut BytesMut) -> Result<Option<FrameText>, FrameError> {
        let frame = self.decode(src)?;
        debug_assert!(frame
            .as_ref()
            .is_none_or(|f| std::str::from_utf8(f).is_ok()));
        Ok(frame.map(FrameText))
    }
}

impl Decoder for NestCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        loop {
            match self.state {
                State::Header => {
                    let Some(hash) = src.iter().position(|&b| b == b'#') else {
                        if src.len() > MAX_HEADER_LEN {
                            return Err(FrameError::HeaderTooLong);
                        }
                        return Ok(None);
                    };
                    if hash > MAX_HEADER_LEN {
                        return Err(FrameError::HeaderTooLong);
                    }
                    let len = parse_header(&src[..hash], self.max_frame_len)?;
                    src.advance(hash + 1);
                    self.state = State::Body {
                        len,
                        scanned_bytes: 0,
                        scanned_units: 0,
                        valid: true,
                    };
                }
                State::Body {
                    len,
                    scanned_bytes,
                    scanned_units,
                    valid,
                } => match find_boundary(src, scanned_bytes, scanned_units, valid, len) {
                    Boundary::At { bytes, valid } => {
                        self.state = State::Header;
                        let raw = src.split_to(bytes).freeze();
                        // The scan validated the UTF-8 already; only frames with invalid
                        // bytes are rebuilt, with U+FFFD as Node's decoder would.
                        return Ok(Some(if valid {
                            raw
                        } else {
                            Bytes::from(String::from_utf8_lossy(&raw).into_owned())
                        }));
                    }
                    Boundary::NeedMore {
                        scanned_bytes,
                        scanned_units,
                        valid,
                    } => {
                        self.state = State::Body {
                            len,
                            scanned_bytes,
                            scanned_units,
                            valid,
                        };
                        // Each unit is at most 3 bytes, but reserving for the common
                        // (ASCII) case avoids over-allocating on a hostile length.
                        src.reserve((len - scanned_units).min(1 << 20));
                        return Ok(None);
                    }
                    Boundary::SplitsCharacter => return Err(FrameError::SplitsCharacter),
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // Whitespace after the last frame (e.g. a trailing newline) is harmless at EOF.
                let only_space = buf.iter().all(u8::is_ascii_whitespace);
                if self.in_frame() || !only_space {
                    Err(FrameError::Truncated {
                        buffered: buf.len(),
                    })
                } else {
                    buf.clear();
                    Ok(None)
                }
            }
        }
    }
}

/// Appends one frame holding `json` (which must be the complete JSON text) to `dst`.
///
/// ```
/// let mut buf = bytes::BytesMut::new();
/// nestling_runtime::codec::encode_frame(r#"{"data":"a😀b"}"#, &mut buf);
/// assert_eq!(&buf[..], "15#{\"data\":\"a😀b\"}".as_bytes());
/// ```
pub fn encode_frame(json: &str, dst: &mut BytesMut) {
    encode_frame_parts(dst, &[(b"", json.as_bytes())], b"");
}

/// A fixed piece of packet syntax (`{"response":`, `,"id":`, …), which must be ASCII: its
/// UTF-16 length is then its byte length. Only `'static` bytes fit, so a value (serde_json
/// output, a slice of a frame) cannot stand in for one.
pub(crate) type Lit = &'static [u8];

/// Writes one frame whose JSON text is `parts` — each a literal and the value that follows
/// it — then `tail`, straight into `dst`: the length is counted over the parts, so packets
/// are framed without first being assembled in a buffer of their own. Values must be UTF-8
/// (serde_json output, slices of decoded frames); only they are counted, in the same pass
/// that sums the bytes, as a literal's length is its byte length.
pub(crate) fn encode_frame_parts(dst: &mut BytesMut, parts: &[(Lit, &[u8])], tail: Lit) {
    debug_assert!(tail.is_ascii(), "literals are ASCII");
    let (mut units, mut bytes) = (tail.len(), tail.len());
    for &(lit, value) in parts {
        debug_assert!(lit.is_ascii(), "literals are ASCII");
        bytes += lit.len() + value.len();
        units += lit.len() + utf16_len_bytes(value);
    }
    let mut header = itoa::Buffer::new();
    let header = header.format(units);
    dst.reserve(header.len() + 1 + bytes);
    dst.extend_from_slice(header.as_bytes());
    dst.extend_from_slice(b"#");
    for &(lit, value) in parts {
        dst.extend_from_slice(lit);
        dst.extend_from_slice(value);
    }
    dst.extend_from_slice(tail);
}

impl Encoder<&str> for NestCodec {
    type Error = FrameError;

    fn encode(&mut self, json: &str, dst: &mut BytesMut) -> Result<(), FrameError> {
        encode_frame(json, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
