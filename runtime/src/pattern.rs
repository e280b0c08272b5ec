//! Message patterns and the route keys Nest derives from them.
//!
//! Nest looks handlers up by `transformPatternToRoute(pattern)`: strings stay as they are,
//! numbers become JavaScript's `String(n)`, objects (and arrays, as objects keyed `"0"`,
//! `"1"`, …) become `{"key":value,…}` with sorted keys. Incoming patterns are first turned
//! into a string and re-parsed as JSON, so `{"b":1,"cmd":"sum"}`, `{"cmd":"sum","b":1}`
//! and the string `"{\"b\":1,\"cmd\":\"sum\"}"` all reach the same handler.
//!
//! Nest sorts keys with ICU collation (`localeCompare`); we sort by code point. Both sides of
//! a lookup are normalised by the same process, so only the equivalence classes matter and
//! they are the same.

mod outgoing;

use std::borrow::Cow;
use std::fmt::Write as _;

use serde_json::Value;

/// Nest's `DEFAULT_MAX_DEPTH`: deeper object values become `[MAX_DEPTH_REACHED]`.
pub use outgoing::{IntoPattern, Pattern};

const MAX_DEPTH: usize = 5;
/// Nest's `DEFAULT_MAX_KEYS`: objects with more keys become `[TOO_MANY_KEYS]`.
const MAX_KEYS: usize = 20;

/// A normalised route key. Non-string keys (booleans, `null`, a missing pattern) get a
/// prefix no string pattern can produce, because Nest compares them by JavaScript type:
/// a handler registered as `'true'` is never reached by an incoming `true`.
pub(crate) type RouteKey = String;

const NON_STRING: char = '\u{0}';

/// Route key for a handler's declared pattern (given as JSON text by the macros).
pub(crate) fn declared_route(pattern_json: &str) -> Result<RouteKey, serde_json::Error> {
    let value: Value = serde_json::from_str(pattern_json)?;
    Ok(normalize_top(&value))
}

/// Route key for a pattern received on the wire (raw, valid JSON text of the `pattern` field).
///
/// Mirrors Nest's `getRouteFromPattern`: take the string itself (or the JSON text for
/// non-strings), try to parse it as JSON, and normalise the result.
pub(crate) fn incoming_route(text: &str) -> Cow<'_, str> {
    let as_string: Cow<'_, str> = if text.starts_with('"') {
        if !text.contains('\\') {
            // Fast path: a plain string pattern such as "sum" is its own key; borrowed,
            // so the lookup allocates nothing.
            let inner = &text[1..text.len() - 1];
            if !could_be_json(inner) {
                return Cow::Borrowed(inner);
            }
            inner.into()
        } else {
            match serde_json::from_str::<String>(text) {
                Ok(s) => s.into(),
                // Lone surrogates: keep the escaped text, no handler can match it anyway.
                Err(_) => text.into(),
            }
        }
    } else {
        text.into()
    };
    match serde_json::from_str::<Value>(&as_string) {
        Ok(value) => Cow::Owned(normalize_top(&value)),
        Err(_) => as_string,
    }
}

/// Whether `s` might parse as JSON (JSON.parse allows surrounding whitespace).
fn could_be_json(s: &str) -> bool {
    matches!(
        s.trim_start().as_bytes().first(),
        Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n')
    )
}

fn normalize_top(value: &Value) -> RouteKey {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => js_number(n),
        Value::Null => format!("{NON_STRING}null"),
        Value::Bool(b) => format!("{NON_STRING}{b}"),
        Value::Object(_) | Value::Array(_) => {
            let mut out = String::new();
            write_object(value, 0, &mut out);
            out
        }
    }
}

/// Writes Nest's route form of an object or array at recursion `depth`.
fn write_object(value: &Value, depth: usize, out: &mut String) {
    if depth > MAX_DEPTH {
        out.push_str("[MAX_DEPTH_REACHED]");
        return;
    }
    let mut entries: Vec<(String, &Value)> = match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect(),
        _ => unreachable!("write_object is only called on objects and arrays"),
    };
    if entries.len() > MAX_KEYS {
        out.push_str("[TOO_MANY_KEYS]");
        return;
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    out.push('{');
    for (i, (key, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        escape_into(&key, out);
        out.push_str("\":");
        match v {
            Value::String(s) => {
                out.push('"');
                escape_into(s, out);
                out.push('"');
            }
            Value::Number(n) => out.push_str(&js_number(n)),
            Value::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Value::Null => out.push_str("null"),
            Value::Object(_) | Value::Array(_) => write_object(v, depth + 1, out),
        }
    }
    out.push('}');
}

/// Nest escapes only `\` and `"` inside route keys.
fn escape_into(s: &str, out: &mut String) {
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// JavaScript's `String(n)` for a JSON number (which JavaScript holds as an f64).
fn js_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        if i.unsigned_abs() <= (1u64 << 53) {
            return i.to_string();
        }
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    let mut buf = ryu_js::Buffer::new();
    buf.format(f).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(json: &str) -> RouteKey {
        incoming_route(json).into_owned()
    }

    #[test]
    fn object_patterns_match_in_any_key_order_and_as_strings() {
        let key = declared_route(r#"{"cmd":"sum","b":1}"#).unwrap();
        assert_eq!(key, r#"{"b":1,"cmd":"sum"}"#);
        assert_eq!(incoming(r#"{"b":1,"cmd":"sum"}"#), key);
        assert_eq!(incoming(r#"{"cmd":"sum","b":1}"#), key);
        assert_eq!(incoming(r#""{\"b\":1,\"cmd\":\"sum\"}""#), key);
        assert_ne!(incoming(r#"{"b":"1","cmd":"sum"}"#), key);
    }

    #[test]
    fn numbers_and_strings_as_nest_does() {
        assert_eq!(incoming("42"), declared_route(r#""42""#).unwrap());
        assert_eq!(incoming(r#""123""#), declared_route("123").unwrap());
        assert_eq!(incoming(r#""\"sum\"""#), "sum");
        assert_eq!(incoming(r#""1e3""#), "1000");
        assert_eq!(incoming("1.0"), "1");
        assert_eq!(incoming("1e21"), "1e+21");
        assert_eq!(incoming(r#""sum""#), "sum");
        assert_eq!(incoming(r#""SUM""#), "SUM");
    }

    #[test]
    fn arrays_are_objects_with_index_keys() {
        assert_eq!(incoming(r#"[1,"two"]"#), incoming(r#"{"0":1,"1":"two"}"#));
    }

    #[test]
    fn non_string_routes_never_match_string_handlers() {
        assert_ne!(incoming(r#""true""#), declared_route(r#""true""#).unwrap());
        assert_ne!(incoming("null"), declared_route(r#""null""#).unwrap());
        assert_eq!(incoming("true"), incoming(r#""true""#));
    }

    #[test]
    fn nested_values_and_limits() {
        assert_eq!(
            incoming(r#"{"ev":"x","a":1,"nested":{"z":1,"y":"s"}}"#),
            r#"{"a":1,"ev":"x","nested":{"y":"s","z":1}}"#
        );
        assert_eq!(
            incoming(r#"{"a":null,"b":true,"c":"q\"\\"}"#),
            r#"{"a":null,"b":true,"c":"q\"\\"}"#
        );
        let deep = r#"{"a":{"a":{"a":{"a":{"a":{"a":{"a":1}}}}}}}"#;
        assert_eq!(
            incoming(deep),
            r#"{"a":{"a":{"a":{"a":{"a":{"a":[MAX_DEPTH_REACHED]}}}}}}"#
        );
        let many: serde_json::Map<String, Value> =
            (0..21).map(|i| (format!("k{i}"), Value::from(i))).collect();
        assert_eq!(normalize_top(&Value::Object(many)), "[TOO_MANY_KEYS]");
    }

    #[test]
    fn event_form_is_normalised_string() {
        let p = Pattern::new(serde_json::json!({"ev":"x","a":1})).unwrap();
        assert_eq!(p.event_json(), r#""{\"a\":1,\"ev\":\"x\"}""#);
        assert_eq!(Pattern::new(42).unwrap().event_json(), r#""42""#);
        assert_eq!(Pattern::new(true).unwrap().event_json(), "true");
    }
}
