//! Turning a reply's raw JSON into the caller's result, the same for `send` and
//! `send_stream`: a value into `R`, an `err` into [`ClientError::Remote`].

use std::fmt::Display;

use serde::de::DeserializeOwned;

use crate::error::{ClientError, RemoteError};

/// A `response` value deserialised into `R`; [`ClientError::Decode`] (with the reply's
/// first 200 characters) if it does not fit.
pub(crate) fn value<R: DeserializeOwned>(
    pattern: &impl Display,
    raw: &[u8],
) -> Result<R, ClientError> {
    let decoded = serde_json::from_slice(raw).or_else(|e| crate::lone_surrogates::retry(raw, e));
    decoded.map_err(|source| ClientError::Decode {
        pattern: pattern.to_string(),
        reply: String::from_utf8_lossy(raw).chars().take(200).collect(),
        source,
    })
}

/// The service's `err`, kept as received: its JSON value, or the raw text as a string if
/// it is not JSON.
#[cold]
pub(crate) fn remote_error(pattern: &impl Display, raw: &[u8]) -> ClientError {
    let value = serde_json::from_slice(raw)
        .or_else(|e| crate::lone_surrogates::retry(raw, e))
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(raw).into_owned()));
    ClientError::Remote {
        pattern: pattern.to_string(),
        error: RemoteError::new(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_the_raw_err_and_name_the_pattern() {
        match remote_error(&"sum", br#"{"status":"error","message":"bad"}"#) {
            ClientError::Remote { pattern, error } => {
                assert_eq!(pattern, "sum");
                assert_eq!(error.message(), Some("bad"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match remote_error(&"sum", b"not json") {
            ClientError::Remote { error, .. } => assert_eq!(error.value(), "not json"),
            other => panic!("unexpected {other:?}"),
        }
        match value::<u8>(&"sum", b"\"x\"") {
            Err(ClientError::Decode { pattern, reply, .. }) => {
                assert_eq!((pattern.as_str(), reply.as_str()), ("sum", "\"x\""));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(value::<u8>(&"sum", b"7").unwrap(), 7);
    }
}
