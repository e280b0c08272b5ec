//! Turning command-line text into an address, a pattern and a payload.

use std::io::Read as _;
use std::path::Path;

use nestling::Pattern;
use serde_json::Value;

use crate::output::Failure;
use crate::Target;

/// `8888` and `:8888` mean `127.0.0.1:8888`; anything else is used as given.
pub fn address(addr: &str) -> String {
    let port = addr.strip_prefix(':').unwrap_or(addr);
    if port.parse::<u16>().is_ok() {
        format!("127.0.0.1:{port}")
    } else {
        addr.to_owned()
    }
}

/// A pattern argument: a JSON object or array when it starts with `{` or `[` (after
/// leading whitespace), a plain string otherwise.
pub fn pattern(text: &str) -> Result<Pattern, Failure> {
    let trimmed = text.trim_start();
    let value = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        serde_json::from_str::<Value>(text).map_err(|e| {
            Failure::usage(format!(
                "the pattern {text:?} starts like a JSON object/array but is not valid JSON: {e}"
            ))
        })?
    } else {
        Value::String(text.to_owned())
    };
    Pattern::new(value).map_err(|e| Failure::usage(format!("invalid pattern {text:?}: {e}")))
}

/// A payload argument: JSON if it parses, otherwise the text itself as a JSON string.
pub fn payload_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// The payload of `call`/`emit`: the argument, the `--data-file`, or `null`.
///
/// A file must hold valid JSON (a file is never taken as a string by mistake).
pub fn payload(target: &Target) -> Result<Value, Failure> {
    if let Some(path) = &target.data_file {
        let text = read_file(path)?;
        return serde_json::from_str(&text).map_err(|e| {
            Failure::usage(format!(
                "--data-file {}: not valid JSON: {e}",
                path.display()
            ))
        });
    }
    Ok(target.data.as_deref().map_or(Value::Null, payload_text))
}

fn read_file(path: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| Failure::usage(format!("--data-file {}: {e}", path.display())))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_ports_mean_localhost() {
        assert_eq!(address("8888"), "127.0.0.1:8888");
        assert_eq!(address(":8888"), "127.0.0.1:8888");
        assert_eq!(address("10.0.0.1:8888"), "10.0.0.1:8888");
        assert_eq!(address("localhost:3000"), "localhost:3000");
        assert_eq!(address("[::1]:3000"), "[::1]:3000");
    }

    #[test]
    fn patterns_are_strings_unless_they_look_like_json_objects_or_arrays() {
        assert_eq!(pattern("sum").unwrap().as_json(), r#""sum""#);
        assert_eq!(pattern("求和").unwrap().as_json(), r#""求和""#);
        assert_eq!(pattern("42").unwrap().as_json(), r#""42""#);
        assert_eq!(pattern("\"q\"").unwrap().as_json(), r#""\"q\"""#);
        assert_eq!(
            pattern(r#"{"cmd":"sum","b":1}"#).unwrap().as_json(),
            r#"{"cmd":"sum","b":1}"#
        );
        assert_eq!(pattern(r#" [1,"a"]"#).unwrap().as_json(), r#"[1,"a"]"#);
        let err = pattern("{cmd:sum}").unwrap_err();
        assert_eq!(err.code, crate::output::USAGE);
        assert!(err.message.contains("not valid JSON"), "{}", err.message);
    }

    #[test]
    fn payloads_are_json_or_else_strings() {
        assert_eq!(payload_text("[1,2,3]"), json!([1, 2, 3]));
        assert_eq!(payload_text("42"), json!(42));
        assert_eq!(payload_text(r#""求和1111""#), json!("求和1111"));
        assert_eq!(payload_text("求和1111"), json!("求和1111"));
        assert_eq!(payload_text("hello world"), json!("hello world"));
        assert_eq!(payload_text("{oops"), json!("{oops"));
        assert_eq!(payload_text("null"), Value::Null);
        assert_eq!(payload_text(""), json!(""));
    }
}
