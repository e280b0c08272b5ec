//! The pattern a client sends: its JSON for `send`, and Nest's normalised form for `emit`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

use super::normalize_top;

/// A message pattern as a client sends it: a string such as `"sum"` or any JSON value such
/// as `{"cmd": "sum"}`.
///
/// `send` puts the pattern on the wire as given; `emit` sends Nest's normalised string form
/// (exactly what a Nest `ClientProxy` does), so both reach Nest and nestling servers alike.
///
/// ```
/// use nestling_runtime::Pattern;
///
/// let p = Pattern::new("sum").unwrap();
/// assert_eq!(p.as_json(), r#""sum""#);
///
/// let p = Pattern::new(serde_json::json!({"cmd": "sum", "b": 1})).unwrap();
/// assert_eq!(p.as_json(), r#"{"cmd":"sum","b":1}"#); // sent as given
/// // emitted as Nest's normalised string, keys sorted:
/// assert_eq!(p.event_json(), r#""{\"b\":1,\"cmd\":\"sum\"}""#);
/// ```
///
/// Cloning is cheap, and building one from a short string (`"sum"`, `"user.create"`)
/// allocates nothing: a client call takes its own copy of the pattern.
#[derive(Clone)]
pub struct Pattern {
    repr: Repr,
}

/// JSON texts up to this many bytes (quotes included) are kept inline.
const INLINE: usize = 30;

#[derive(Clone)]
enum Repr {
    /// A pattern whose `send` and `emit` texts are the same (a string, a boolean, null)
    /// and short: most string patterns. No heap, and a clone is a copy.
    Inline {
        len: u8,
        json: [u8; INLINE],
    },
    Shared(Arc<Texts>),
}

struct Texts {
    json: String,
    /// `None`: the same as `json`.
    event_json: Option<String>,
}

impl PartialEq for Pattern {
    /// Equal when sent alike: `emit`'s text follows from `send`'s.
    fn eq(&self, other: &Self) -> bool {
        self.as_json() == other.as_json()
    }
}

impl Eq for Pattern {}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pattern")
            .field("json", &self.as_json())
            .field("event_json", &self.event_json())
            .finish()
    }
}

impl Pattern {
    /// Builds a pattern from any serialisable value.
    ///
    /// Fails only if `value` cannot be serialised to JSON (e.g. a map with non-string keys).
    pub fn new(value: impl Serialize) -> Result<Self, serde_json::Error> {
        let json = serde_json::to_string(&value)?;
        // A string, the common case: sent as is by both `send` and `emit`, so there is
        // nothing to parse or normalise.
        if json.starts_with('"') {
            return Ok(Self::from_texts(&json, None));
        }
        Self::from_text(&json)
    }

    /// A string pattern. When the string needs no JSON escaping its JSON is the string in
    /// quotes, written here without a serializer.
    fn string(s: &str) -> Result<Self, serde_json::Error> {
        let plain =
            s.len() + 2 <= INLINE && s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if !plain {
            return Self::new(s);
        }
        let mut json = [0; INLINE];
        json[0] = b'"';
        json[1..=s.len()].copy_from_slice(s.as_bytes());
        json[s.len() + 1] = b'"';
        Ok(Self {
            repr: Repr::Inline {
                len: (s.len() + 2) as u8,
                json,
            },
        })
    }

    /// Builds a pattern from its JSON text, e.g. `r#"{"cmd":"sum"}"#` or `r#""sum""#`.
    ///
    /// ```
    /// let p = nestling_runtime::Pattern::from_json(r#"{"cmd":"sum"}"#).unwrap();
    /// assert_eq!(p.event_json(), r#""{\"cmd\":\"sum\"}""#);
    /// ```
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        Self::from_text(json)
    }

    fn from_text(json: &str) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_str(json)?;
        let event_json = match &value {
            Value::String(_) | Value::Bool(_) | Value::Null => None,
            other => Some(serde_json::to_string(&normalize_top(other))?),
        };
        Ok(Self::from_texts(json, event_json))
    }

    fn from_texts(json: &str, event_json: Option<String>) -> Self {
        let repr = match event_json {
            None if json.len() <= INLINE => {
                let mut inline = [0; INLINE];
                inline[..json.len()].copy_from_slice(json.as_bytes());
                Repr::Inline {
                    len: json.len() as u8,
                    json: inline,
                }
            }
            event_json => Repr::Shared(Arc::new(Texts {
                json: json.to_owned(),
                event_json,
            })),
        };
        Self { repr }
    }

    /// The JSON text sent by `send` (the pattern as given).
    pub fn as_json(&self) -> &str {
        match &self.repr {
            // Always valid: the bytes were copied whole from a `&str`.
            Repr::Inline { .. } => std::str::from_utf8(self.json_bytes()).unwrap_or(""),
            Repr::Shared(texts) => &texts.json,
        }
    }

    /// The JSON text sent by `emit` (Nest's normalised string form for objects and numbers).
    pub fn event_json(&self) -> &str {
        match &self.repr {
            Repr::Shared(texts) => texts.event_json.as_deref().unwrap_or(&texts.json),
            Repr::Inline { .. } => self.as_json(),
        }
    }

    /// The channel broker transports publish this pattern on (a NATS subject, a RabbitMQ
    /// routing key), as Nest's clients name it: a string pattern as is, any other pattern as
    /// its normalised JSON ([`event_json`](Self::event_json)).
    pub(crate) fn channel(&self) -> String {
        let text = self.event_json();
        serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned())
    }

    /// [`Pattern::as_json`] as bytes, for framing: no UTF-8 check on the send path.
    pub(crate) fn json_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Inline { len, json } => &json[..usize::from(*len)],
            Repr::Shared(texts) => texts.json.as_bytes(),
        }
    }

    /// [`Pattern::event_json`] as bytes.
    pub(crate) fn event_json_bytes(&self) -> &[u8] {
        match &self.repr {
            Repr::Shared(texts) => texts.event_json.as_ref().unwrap_or(&texts.json).as_bytes(),
            Repr::Inline { .. } => self.json_bytes(),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_json())
    }
}

/// Conversion into a [`Pattern`], accepted by the client's `send` and `emit`.
///
/// Implemented for string types, [`serde_json::Value`] and `&Pattern`.
///
/// ```
/// use nestling_runtime::{IntoPattern, Pattern};
/// let p: Pattern = "sum".into_pattern().unwrap();
/// assert_eq!(p.as_json(), "\"sum\"");
/// ```
pub trait IntoPattern {
    /// Performs the conversion.
    fn into_pattern(self) -> Result<Pattern, serde_json::Error>;
}

impl IntoPattern for &str {
    fn into_pattern(self) -> Result<Pattern, serde_json::Error> {
        Pattern::string(self)
    }
}
impl IntoPattern for String {
    fn into_pattern(self) -> Result<Pattern, serde_json::Error> {
        Pattern::string(&self)
    }
}
impl IntoPattern for &String {
    fn into_pattern(self) -> Result<Pattern, serde_json::Error> {
        Pattern::string(self)
    }
}
impl IntoPattern for Value {
    fn into_pattern(self) -> Result<Pattern, serde_json::Error> {
        Pattern::new(self)
    }
}
impl IntoPattern for &Pattern {
    fn into_pattern(self) -> Result<Pattern, serde_json::Error> {
        Ok(self.clone())
    }
}
impl IntoPattern for Pattern {
    fn into_pattern(self) -> Result<Pattern, serde_json::Error> {
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plain_strings_are_inline_and_read_like_serde_json_wrote_them() {
        for s in [
            "sum",
            "",
            "user.create",
            "求和",
            "a😀b",
            "x".repeat(28).as_str(),
        ] {
            let p = s.into_pattern().unwrap();
            assert!(matches!(p.repr, Repr::Inline { .. }), "{s:?}");
            assert_eq!(p.as_json(), serde_json::to_string(s).unwrap());
            assert_eq!(p.event_json(), p.as_json());
            assert_eq!(p.json_bytes(), p.as_json().as_bytes());
            assert_eq!(p.event_json_bytes(), p.as_json().as_bytes());
            assert_eq!(p, Pattern::new(s).unwrap());
            assert_eq!(p, Pattern::from_json(p.as_json()).unwrap());
        }
    }

    #[test]
    fn strings_that_need_escaping_are_written_by_serde_json() {
        let long = "y".repeat(29);
        for s in ["a\"b", "back\\slash", "tab\t", "\u{1}", long.as_str()] {
            let p = s.into_pattern().unwrap();
            assert_eq!(p.as_json(), serde_json::to_string(s).unwrap());
            assert_eq!(p.event_json(), p.as_json());
            let back: String = serde_json::from_str(p.as_json()).unwrap();
            assert_eq!(back, s);
        }
        // Too long to keep inline (31 bytes with its quotes).
        assert!(matches!(long.into_pattern().unwrap().repr, Repr::Shared(_)));
    }

    #[test]
    fn other_values_keep_both_texts() {
        assert!(matches!(
            Pattern::new(true).unwrap().repr,
            Repr::Inline { .. }
        ));
        let p = Pattern::new(serde_json::json!({"cmd": "sum"})).unwrap();
        assert!(matches!(p.repr, Repr::Shared(_)));
        assert_eq!(p.as_json(), r#"{"cmd":"sum"}"#);
        assert_eq!(p.event_json(), r#""{\"cmd\":\"sum\"}""#);
        assert_eq!(p.json_bytes(), p.as_json().as_bytes());
        assert_eq!(p.event_json_bytes(), p.event_json().as_bytes());
        assert_eq!(p.clone(), p);
        assert_ne!(p, Pattern::new("sum").unwrap());
    }
}
