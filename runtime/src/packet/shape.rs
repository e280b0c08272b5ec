//! The shortcuts' scanners: the pieces of a packet written in Nest's one shape (simple
//! strings, plain ids, unpadded values) that both fast cuts, of requests and of replies,
//! recognise without a parser.

/// Where the id that ends `body` (a packet's text without its closing `}`) starts: a string
/// without escapes, or a plain non-negative integer. `None`: no such id ends it.
pub(super) fn trailing_id_start(body: &[u8]) -> Option<usize> {
    match body.last() {
        // The last quote before the closing one opens the string if nothing between them
        // needs an escape. (`memrchr` and a branch-free check: ids are 20–36 characters.)
        Some(b'"') => {
            let rest = &body[..body.len() - 1];
            memchr::memrchr(b'"', rest).filter(|&open| no_escapes(&rest[open + 1..]))
        }
        Some(c) if c.is_ascii_digit() => body
            .iter()
            .rposition(|c| !c.is_ascii_digit())
            .map(|last| last + 1)
            .filter(|&start| body.len() - start == 1 || body[start] != b'0'),
        _ => None,
    }
}

/// Whether `content` can stand in a JSON string as it is: no escape and no control
/// character. Folded without early exit, so the compiler checks many bytes per step.
fn no_escapes(content: &[u8]) -> bool {
    !content
        .iter()
        .fold(false, |bad, &c| bad | (c < 0x20) | (c == b'\\'))
}

/// A value cut from a shaped packet has no whitespace around it: the general parse's slice
/// of the same value would not include any.
pub(super) fn unpadded(value: &str) -> bool {
    let edge = |c: Option<&u8>| c.is_some_and(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
    edge(value.as_bytes().first()) && edge(value.as_bytes().last())
}

/// Length of a JSON string's content up to its closing quote, if it has no escapes and no
/// control characters (then the content is the string itself).
pub(super) fn simple_string_len(b: &[u8]) -> Option<usize> {
    let end = b
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    (b[end] == b'"').then_some(end)
}
