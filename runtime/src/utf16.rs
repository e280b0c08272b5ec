//! UTF-16 accounting over UTF-8 bytes.
//!
//! Nest's length prefix counts UTF-16 code units of the JSON *text* (JavaScript's
//! `string.length`), while the wire carries UTF-8. These helpers translate between the two
//! without re-encoding, following the WHATWG UTF-8 decoder that Node's `StringDecoder`
//! uses: every maximal invalid subpart becomes one U+FFFD, i.e. one unit.

/// Number of UTF-16 code units in valid UTF-8 text (what JavaScript's `.length` reports).
///
/// Every code point is one unit except those above U+FFFF (4-byte sequences), which are two.
/// So the count is "bytes that start a character" plus "4-byte lead bytes".
pub fn utf16_len(text: &str) -> usize {
    utf16_len_bytes(text.as_bytes())
}

/// [`utf16_len`] over bytes known to be UTF-8 (for invalid input the count is simply
/// approximate; it never panics).
pub fn utf16_len_bytes(bytes: &[u8]) -> usize {
    // Fast path: most packets are pure ASCII, where units == bytes.
    if bytes.is_ascii() {
        return bytes.len();
    }
    // Chunks of 127 bytes keep a u8 accumulator from overflowing (each byte adds at most
    // 2), which lets the compiler vectorise the inner loop.
    bytes
        .chunks(127)
        .map(|chunk| {
            let mut acc: u8 = 0;
            for &b in chunk {
                acc += u8::from((b as i8) >= -0x40) + u8::from(b >= 0xF0);
            }
            usize::from(acc)
        })
        .sum()
}

/// Result of walking UTF-8 bytes to find where `units` UTF-16 units end.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Boundary {
    /// The first `bytes` bytes hold exactly the requested units.
    At {
        /// Byte length of the frame body.
        bytes: usize,
        /// Whether those bytes are valid UTF-8 (no U+FFFD replacement needed).
        valid: bool,
    },
    /// More bytes are needed; `scanned_bytes`/`scanned_units` may be resumed from.
    NeedMore {
        /// Bytes already walked.
        scanned_bytes: usize,
        /// Units counted in those bytes.
        scanned_units: usize,
        /// Whether every byte walked so far was valid UTF-8.
        valid: bool,
    },
    /// The requested count ends between the two halves of a surrogate pair
    /// (the peer's length cuts a 4-byte character in half).
    SplitsCharacter,
}

/// Finds the byte offset at which `target` UTF-16 units end, starting from a previous
/// partial scan (`from_bytes`, `from_units`), so that a frame arriving in many reads is
/// scanned once overall.
pub fn find_boundary(
    buf: &[u8],
    from_bytes: usize,
    from_units: usize,
    from_valid: bool,
    target: usize,
) -> Boundary {
    let mut i = from_bytes;
    let mut units = from_units;
    let mut valid = from_valid;
    while units < target {
        // Fast path: the rest of the frame is ASCII, one unit per byte.
        let want = target - units;
        if let Some(window) = buf.get(i..i + want) {
            if window.is_ascii() {
                return Boundary::At {
                    bytes: i + want,
                    valid,
                };
            }
        }
        if i >= buf.len() {
            return Boundary::NeedMore {
                scanned_bytes: i,
                scanned_units: units,
                valid,
            };
        }
        // Skip the ASCII run before the next multi-byte sequence in one go.
        let end = buf.len().min(i + want);
        let ascii = buf[i..end]
            .iter()
            .position(|&b| b >= 0x80)
            .unwrap_or(end - i);
        i += ascii;
        units += ascii;
        if units >= target || i >= buf.len() {
            continue;
        }
        match sequence(&buf[i..]) {
            Seq::Char { len, units: u } => {
                if units + u > target {
                    return Boundary::SplitsCharacter;
                }
                i += len;
                units += u;
            }
            Seq::Invalid { len } => {
                i += len;
                units += 1;
                valid = false;
            }
            Seq::Incomplete => {
                return Boundary::NeedMore {
                    scanned_bytes: i,
                    scanned_units: units,
                    valid,
                }
            }
        }
    }
    Boundary::At { bytes: i, valid }
}

enum Seq {
    /// A well-formed character of `len` bytes and `units` UTF-16 units.
    Char { len: usize, units: usize },
    /// A maximal invalid subpart of `len` bytes, decoded as one U+FFFD.
    Invalid { len: usize },
    /// A valid prefix that the buffer ends in the middle of.
    Incomplete,
}

/// Classifies the non-ASCII sequence at the start of `s` per the WHATWG UTF-8 decoder.
fn sequence(s: &[u8]) -> Seq {
    let lead = s[0];
    let (need, lo, hi) = match lead {
        0xC2..=0xDF => (1, 0x80, 0xBF),
        0xE0 => (2, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
        0xED => (2, 0x80, 0x9F),
        0xF0 => (3, 0x90, 0xBF),
        0xF1..=0xF3 => (3, 0x80, 0xBF),
        0xF4 => (3, 0x80, 0x8F),
        _ => return Seq::Invalid { len: 1 },
    };
    for k in 1..=need {
        let Some(&b) = s.get(k) else {
            return Seq::Incomplete;
        };
        let (l, h) = if k == 1 { (lo, hi) } else { (0x80, 0xBF) };
        if !(l..=h).contains(&b) {
            return Seq::Invalid { len: k };
        }
    }
    Seq::Char {
        len: need + 1,
        units: if need == 3 { 2 } else { 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_javascript() {
        assert_eq!(utf16_len(r#"{"pattern":"log","data":"求和1111"}"#), 33);
        assert_eq!(utf16_len(r#"{"pattern":"log","data":"a😀b"}"#), 31);
        assert_eq!(utf16_len("é"), 1);
        assert_eq!(utf16_len(""), 0);
    }

    #[test]
    fn boundary_in_multibyte_text() {
        let s = "a求😀b".as_bytes(); // units: a=1 求=1 😀=2 b=1
        assert_eq!(
            find_boundary(s, 0, 0, true, 2),
            Boundary::At {
                bytes: 4,
                valid: true
            }
        );
        assert_eq!(
            find_boundary(s, 0, 0, true, 4),
            Boundary::At {
                bytes: 8,
                valid: true
            }
        );
        assert_eq!(find_boundary(s, 0, 0, true, 3), Boundary::SplitsCharacter);
        assert_eq!(
            find_boundary(s, 0, 0, true, 6),
            Boundary::NeedMore {
                scanned_bytes: 9,
                scanned_units: 5,
                valid: true
            }
        );
    }

    #[test]
    fn incomplete_character_waits_and_resumes() {
        let full = "x求".as_bytes();
        let part = &full[..2];
        let Boundary::NeedMore {
            scanned_bytes,
            scanned_units,
            valid,
        } = find_boundary(part, 0, 0, true, 2)
        else {
            panic!("expected NeedMore")
        };
        assert_eq!((scanned_bytes, scanned_units, valid), (1, 1, true));
        assert_eq!(
            find_boundary(full, scanned_bytes, scanned_units, valid, 2),
            Boundary::At {
                bytes: 4,
                valid: true
            }
        );
    }

    #[test]
    fn invalid_bytes_count_one_unit_each_maximal_subpart() {
        // Node: `ff fe` decodes to two U+FFFD (2 units).
        assert_eq!(
            find_boundary(&[0xff, 0xfe], 0, 0, true, 2),
            Boundary::At {
                bytes: 2,
                valid: false
            }
        );
        // E1 80 is a valid prefix cut by 'A': one U+FFFD, then 'A'.
        assert_eq!(
            find_boundary(&[0xE1, 0x80, b'A'], 0, 0, true, 2),
            Boundary::At {
                bytes: 3,
                valid: false
            }
        );
        assert_eq!(
            String::from_utf8_lossy(&[0xE1, 0x80, b'A'])
                .encode_utf16()
                .count(),
            2
        );
    }
}
