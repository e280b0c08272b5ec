//! Exit codes, error reporting and JSON rendering.

use std::io::Write as _;

use nestling::ClientError;
use serde_json::Value;

/// The service answered with an error (or with a reply that could not be used).
pub const REMOTE: u8 = 1;
/// Connecting failed, the connection closed, or a time limit passed.
pub const CONNECTION: u8 = 2;
/// Bad arguments.
pub const USAGE: u8 = 3;

/// Why a command failed: what to print on stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// A human message, printed as `nestling: error: <message>` (empty: print nothing more).
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: USAGE,
            message: message.into(),
        }
    }

    pub fn connection(message: impl Into<String>) -> Self {
        Self {
            code: CONNECTION,
            message: message.into(),
        }
    }

    /// A failure whose details were already printed.
    pub fn silent(code: u8) -> Self {
        Self {
            code,
            message: String::new(),
        }
    }

    /// Reports a client error: a remote `err` value as JSON (the service's own words), any
    /// other error as a message line.
    pub fn client(error: &ClientError, compact: bool) -> Self {
        let code = exit_code(error);
        match error.remote() {
            Some(remote) => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{}", render(remote.value(), compact, false));
                Self::silent(code)
            }
            None => Self {
                code,
                message: error.to_string(),
            },
        }
    }

    pub fn report(&self) {
        if !self.message.is_empty() {
            let _ = writeln!(
                std::io::stderr().lock(),
                "nestling: error: {}",
                self.message
            );
        }
    }
}

/// Exit code for a client error.
pub fn exit_code(error: &ClientError) -> u8 {
    match error {
        ClientError::Remote { .. }
        | ClientError::EmptyReply { .. }
        | ClientError::Decode { .. } => REMOTE,
        ClientError::Encode { .. } => USAGE,
        // Connect, Unavailable, ConnectTimeout, ConnectionClosed, Timeout, and whatever a
        // newer runtime adds: the call did not get through.
        _ => CONNECTION,
    }
}

/// A JSON value as text: pretty (default) or compact; with `raw`, a string value as itself.
pub fn render(value: &Value, compact: bool, raw: bool) -> String {
    match value {
        Value::String(s) if raw => s.clone(),
        _ if compact => value.to_string(),
        _ => serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string()),
    }
}

/// Writes one line to stdout. `Err` when stdout is gone (e.g. piped into `head`).
pub fn print_line(line: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// Removes the whitespace between JSON tokens (not inside strings) of valid JSON text, so a
/// value received from a peer prints on one line exactly as sent (number spelling, key order,
/// escapes and duplicate keys untouched).
pub fn compact_json(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in raw.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rendering() {
        let v = json!({"b": [1, 2], "a": "x"});
        assert_eq!(render(&v, true, false), r#"{"b":[1,2],"a":"x"}"#);
        assert_eq!(
            render(&v, false, false),
            "{\n  \"b\": [\n    1,\n    2\n  ],\n  \"a\": \"x\"\n}"
        );
        assert_eq!(render(&json!("求和"), false, false), "\"求和\"");
        assert_eq!(render(&json!("求和"), true, true), "求和");
        assert_eq!(render(&json!(6), false, true), "6");
    }

    #[test]
    fn compaction_keeps_strings_and_spelling() {
        assert_eq!(
            compact_json("{ \"a b\" : [ 1.0 ,\n 2e3 ],\r\n\t\"q\\\" x\": \"\\ud800 y\" }"),
            r#"{"a b":[1.0,2e3],"q\" x":"\ud800 y"}"#
        );
        assert_eq!(compact_json(r#""\\" "#), r#""\\""#);
    }

    #[test]
    fn exit_codes() {
        let remote = ClientError::Remote {
            pattern: "\"x\"".into(),
            error: nestling::RemoteError::new(json!("no")),
        };
        assert_eq!(exit_code(&remote), REMOTE);
        let timeout = ClientError::Timeout {
            pattern: "\"x\"".into(),
            timeout: std::time::Duration::from_millis(1),
        };
        assert_eq!(exit_code(&timeout), CONNECTION);
        let closed = ClientError::ConnectionClosed {
            addr: "a".into(),
            reason: "r".into(),
        };
        assert_eq!(exit_code(&closed), CONNECTION);
    }
}
