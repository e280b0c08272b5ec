//! Lone UTF-16 surrogates in JSON text, as JavaScript writes them.
//!
//! A JavaScript string is UTF-16 and may hold a surrogate with no partner (a string cut in
//! the middle of an emoji: `'😀'.slice(0, 1)` is `'\ud83d'`). `JSON.stringify` writes it
//! as the escape `"\ud83d"`, and Nest sends that on every transport. A Rust `String` cannot
//! hold it, and serde_json refuses such text outright ("unexpected end of hex escape",
//! "lone leading surrogate in hex escape"); it has no lossy mode.
//!
//! nestling decodes it the way Node's own UTF-8 encoder treats it (`Buffer.from('\ud83d')`
//! is `EF BF BD`): each lone surrogate becomes U+FFFD, a surrogate *pair* stays the
//! character it encodes. Only the failure path pays: text is first decoded as it is, and
//! rewritten and decoded again only when that fails and it holds a lone surrogate escape.

use std::borrow::Cow;

use serde::de::DeserializeOwned;

/// Decodes `json` into `T` after a first attempt failed with `first`: if `json` holds lone
/// surrogate escapes, they are replaced with `\ufffd` and the text decoded again; otherwise
/// (or if that fails too) `first` is returned.
#[cold]
#[inline(never)]
pub(crate) fn retry<T: DeserializeOwned>(
    json: &[u8],
    first: serde_json::Error,
) -> Result<T, serde_json::Error> {
    if !first.is_syntax() {
        return Err(first);
    }
    let (Cow::Owned(fixed), replaced) = replace(json) else {
        return Err(first);
    };
    match serde_json::from_slice(&fixed) {
        Ok(value) => {
            tracing::debug!(
                replaced,
                "replaced lone UTF-16 surrogate escapes with U+FFFD, as Node's UTF-8 encoder does"
            );
            Ok(value)
        }
        Err(_) => Err(first),
    }
}

/// `json` with every `\uXXXX` escape of a lone surrogate (a high one not followed by a low
/// one, or a low one not preceded by a high one) replaced with `\ufffd`, and the number
/// replaced. Borrowed when there is none. Escaped backslashes (`\\ud83d` is the text
/// `\ud83d`, not an escape) are left alone.
pub(crate) fn replace(json: &[u8]) -> (Cow<'_, [u8]>, usize) {
    let mut out: Option<Vec<u8>> = None;
    let mut replaced = 0;
    let mut copied = 0; // bytes of `json` already in `out`
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &json[i..]) {
        let start = i + at;
        match json.get(start + 1) {
            Some(b'u') => {}
            Some(_) => {
                i = start + 2; // `\\`, `\"`, `\n`, …: the escaped byte is not an escape
                continue;
            }
            None => break,
        }
        let Some(unit) = hex_unit(json, start) else {
            i = start + 2;
            continue;
        };
        let low = hex_unit(json, start + 6).filter(|next| (0xDC00..=0xDFFF).contains(next));
        let lone = match unit {
            0xD800..=0xDBFF if low.is_some() => {
                i = start + 12; // a pair: one character
                continue;
            }
            0xD800..=0xDFFF => true,
            _ => false,
        };
        if lone {
            let out = out.get_or_insert_with(|| Vec::with_capacity(json.len()));
            out.extend_from_slice(&json[copied..start]);
            out.extend_from_slice(b"\\ufffd");
            copied = start + 6;
            replaced += 1;
        }
        i = start + 6;
    }
    match out {
        Some(mut out) => {
            out.extend_from_slice(&json[copied..]);
            (Cow::Owned(out), replaced)
        }
        None => (Cow::Borrowed(json), 0),
    }
}

/// The code unit of the `\uXXXX` escape at `at`, if there is one.
fn hex_unit(json: &[u8], at: usize) -> Option<u16> {
    let escape = json.get(at..at + 6)?;
    if escape[0] != b'\\' || escape[1] != b'u' {
        return None;
    }
    escape[2..].iter().try_fold(0u16, |n, &b| {
        let digit = (b as char).to_digit(16)?;
        Some(n << 4 | digit as u16)
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fixed(json: &str) -> String {
        String::from_utf8(replace(json.as_bytes()).0.into_owned()).unwrap()
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(fixed(r#""a\ud83db""#), r#""a\ufffdb""#);
        assert_eq!(fixed(r#""\udc00\ud83d""#), r#""\ufffd\ufffd""#);
        assert_eq!(fixed(r#""\ud83d\ud83d\ude00""#), r#""\ufffd\ud83d\ude00""#);
        assert_eq!(fixed(r#"["\uD83D","\uDE00"]"#), r#"["\ufffd","\ufffd"]"#);
        // Pairs, other escapes and escaped backslashes are left alone.
        for same in [
            r#""\ud83d\ude00""#,
            r#""\\ud83d""#,
            r#""\\\\ud83d""#,
            r#""\u00e9\n\"""#,
            r#""\u12""#,
            "\"😀\"",
            "\"\\",
        ] {
            assert!(
                matches!(replace(same.as_bytes()), (Cow::Borrowed(_), 0)),
                "{same}"
            );
        }
        assert_eq!(fixed(r#""\\\ud83d""#), r#""\\\ufffd""#);
    }

    #[test]
    fn retry_decodes_what_serde_json_refuses() {
        let json = br#"{"k":"a\ud83db","n":1}"#;
        let first = serde_json::from_slice::<serde_json::Value>(json).unwrap_err();
        let value: serde_json::Value = retry(json, first).unwrap();
        assert_eq!(value, serde_json::json!({"k": "a\u{FFFD}b", "n": 1}));
        // Not a surrogate problem: the first error stays.
        let first = serde_json::from_slice::<String>(b"7").unwrap_err();
        let again = retry::<String>(b"7", first).unwrap_err();
        assert!(again.to_string().contains("expected a string"), "{again}");
        let first = serde_json::from_slice::<String>(br#""\ud83d"#).unwrap_err();
        let shown = first.to_string();
        assert_eq!(
            retry::<String>(br#""\ud83d"#, first)
                .unwrap_err()
                .to_string(),
            shown
        );
    }

    /// A JSON string literal for UTF-16 `units`, written as `JSON.stringify` does (lone
    /// surrogates escaped, lower case) or with escapes for every non-ASCII unit (upper or
    /// lower case), as other writers may.
    fn literal(units: &[u16], escape_all: bool, upper: bool) -> String {
        let mut out = String::from("\"");
        for c in char::decode_utf16(units.iter().copied()) {
            match c {
                Ok('"') => out.push_str("\\\""),
                Ok('\\') => out.push_str("\\\\"),
                Ok(c) if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                Ok(c) if !escape_all || c.is_ascii() => out.push(c),
                Ok(c) => {
                    let mut pair = [0u16; 2];
                    for unit in c.encode_utf16(&mut pair) {
                        out.push_str(&if upper {
                            format!("\\u{unit:04X}")
                        } else {
                            format!("\\u{unit:04x}")
                        });
                    }
                }
                Err(lone) => {
                    out.push_str(&format!("\\u{:04x}", lone.unpaired_surrogate()));
                }
            }
        }
        out.push('"');
        out
    }

    fn unit() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(b'a' as u16),
            Just(b'\\' as u16),
            Just(b'"' as u16),
            Just(b'u' as u16),
            Just(0x0A),
            Just(0x6C42), // 求
            0xD800u16..=0xDBFF,
            0xDC00u16..=0xDFFF,
            any::<u16>(),
        ]
    }

    proptest! {
        /// Against the plain reference, UTF-16 decoded lossily (what Node's UTF-8 encoder
        /// gives for any JS string): the rewritten text decodes to exactly that.
        #[test]
        fn decodes_like_nodes_utf8_encoder(
            units in prop::collection::vec(unit(), 0..24),
            escape_all: bool,
            upper: bool,
        ) {
            let json = literal(&units, escape_all, upper);
            let expected = String::from_utf16_lossy(&units);
            let decoded: String = match serde_json::from_str(&json) {
                Ok(s) => s,
                Err(first) => retry(json.as_bytes(), first).unwrap(),
            };
            prop_assert_eq!(decoded, expected);
        }
    }
}
