//! Payload validation: Nest's `ValidationPipe` with class-validator DTOs, for payload types
//! that derive [`validator::Validate`](https://docs.rs/validator) (feature `validator`) or
//! [`garde::Validate`](https://docs.rs/garde) (feature `garde`).
//!
//! A handler validates its payload when its pattern attribute says `validate`
//! (`#[message_pattern("create_user", validate)]`, Nest's `@UsePipes(new ValidationPipe())`),
//! or every handler does when the server says
//! [`validate_payloads(true)`](crate::ServerBuilder::validate_payloads) (Nest's
//! `app.useGlobalPipes(new ValidationPipe())`). A payload that breaks a rule is answered,
//! without running the handler, with what a Nest client receives from a Nest service whose
//! `ValidationPipe` throws its errors as an `RpcException` (the documented fix for
//! validation errors reaching RPC callers as "Internal server error", nestjs/nest#8999):
//!
//! ```json
//! {"message":["name must be longer than or equal to 2 characters","address.city must be longer than or equal to 2 characters","items.1.qty must not be greater than 99"],"error":"Bad Request","statusCode":400}
//! ```
//!
//! One message per broken rule, each naming its field by path as class-validator does
//! (`address.city`, `items.1.qty`), worded as class-validator words the rule where the
//! rule maps: length, range, email, url, required, contains, regex. On a validating
//! handler a payload that does not deserialise into the type (a missing field, a string
//! where a number belongs) is answered with the same envelope (`age must be an integer
//! number`, `email should not be null or undefined`); text that is not JSON at all keeps
//! the usual `invalid payload` error.
//!
//! The messages of all errors together are bounded like Nest's `maxErrorMessagesLength`:
//! past [`MAX_MESSAGES_LEN`] characters the rest is left out and the list ends with
//! [`OMITTED_MESSAGE`].

pub(crate) mod probe;

use serde_json::Value;

use crate::error::RpcException;
use crate::handler::HandlerFailure;

/// How many characters of messages (each counted with its field path) one failure
/// carries before the rest is left out: Nest's default `maxErrorMessagesLength`.
pub const MAX_MESSAGES_LEN: usize = 1_000_000;

/// The last message of a failure that [`MAX_MESSAGES_LEN`] cut short (Nest's text).
pub const OMITTED_MESSAGE: &str = "Further validation errors were omitted";

/// Nest's `BadRequestException` body as an [`RpcException`]:
/// `{"message": message, "error": "Bad Request", "statusCode": 400}`, key order and all.
/// The answer nestling gives to a payload that fails validation; use it to reject a
/// payload from handler code in the same shape.
///
/// ```
/// use nestling::validation::bad_request;
///
/// let e = bad_request(vec!["name must be longer than or equal to 2 characters"]);
/// assert_eq!(
///     e.to_wire().to_string(),
///     r#"{"message":["name must be longer than or equal to 2 characters"],"error":"Bad Request","statusCode":400}"#
/// );
/// let e = bad_request("Validation failed (numeric string is expected)");
/// assert_eq!(e.to_wire()["statusCode"], 400);
/// ```
pub fn bad_request(message: impl Into<Value>) -> RpcException {
    let mut body = serde_json::Map::new();
    body.insert("message".into(), message.into());
    body.insert("error".into(), "Bad Request".into());
    body.insert("statusCode".into(), 400.into());
    RpcException::new(Value::Object(body))
}

/// One step of a field path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// What a broken rule says about its field.
#[derive(Debug)]
pub(crate) enum Said {
    /// A rule's own wording, after the field path: `must be an email`.
    Rule(String),
    /// A message of the user's: whole, prefixed with the parent path as class-validator
    /// does (`$property` becomes the field's name).
    Custom(String),
}

/// One broken rule.
#[derive(Debug)]
pub(crate) struct Violation {
    pub path: Vec<Seg>,
    pub said: Said,
}

fn join(path: &[Seg]) -> String {
    let mut out = String::new();
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        match seg {
            Seg::Key(k) => out.push_str(k),
            Seg::Index(i) => out.push_str(&i.to_string()),
        }
    }
    out
}

impl Violation {
    fn message(&self) -> String {
        match &self.said {
            Said::Rule(text) if self.path.is_empty() => format!("payload {text}"),
            Said::Rule(text) => format!("{} {text}", join(&self.path)),
            Said::Custom(text) => {
                let (parent, last) = match self.path.split_last() {
                    Some((last, parent)) => (parent, join(std::slice::from_ref(last))),
                    None => (&[][..], String::new()),
                };
                let text = text.replace("$property", &last);
                if parent.is_empty() {
                    text
                } else {
                    format!("{}.{text}", join(parent))
                }
            }
        }
    }
}

/// The 400 answer for `violations`, messages bounded by [`MAX_MESSAGES_LEN`].
pub(crate) fn failure(violations: &[Violation]) -> HandlerFailure {
    let mut messages = Vec::new();
    let mut budget = MAX_MESSAGES_LEN;
    for v in violations {
        let m = v.message();
        let cost = m.chars().count();
        if cost > budget {
            messages.push(Value::from(OMITTED_MESSAGE));
            break;
        }
        budget -= cost;
        messages.push(Value::from(m));
    }
    bad_request(messages).into()
}

/// Orders violations the way the payload's keys are written (class-validator reports in
/// declaration order, which neither `validator`'s error map nor garde's sorted report
/// keeps; a payload a client built from its DTO lists the keys in that order). Keys the payload lacks come last, by
/// name. Stable: the rules of one field keep their order.
#[cfg(any(feature = "validator", feature = "garde", test))]
pub(crate) fn order_by_payload(violations: &mut [Violation], payload: Option<&[u8]>) {
    let value = payload.and_then(|p| serde_json::from_slice::<Value>(p).ok());
    violations.sort_by_cached_key(|v| key_of_path(&v.path, value.as_ref()));
}

#[cfg(any(feature = "validator", feature = "garde", test))]
fn key_of_path(path: &[Seg], mut at: Option<&Value>) -> Vec<(usize, String)> {
    path.iter()
        .map(|seg| match seg {
            Seg::Key(k) => {
                let pos = at
                    .and_then(Value::as_object)
                    .and_then(|o| o.keys().position(|x| x == k));
                at = at.and_then(|v| v.get(k));
                (pos.unwrap_or(usize::MAX), k.clone())
            }
            Seg::Index(i) => {
                at = at.and_then(|v| v.get(i));
                (*i, String::new())
            }
        })
        .collect()
}

#[cfg(any(feature = "validator", test))]
/// Numbers as JavaScript prints them (`0`, not `0.0`), as class-validator's messages do.
fn js_number(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e21 => {
                format!("{}", f as i128)
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// class-validator's wording of a rule `validator` reports as `code` with `params`.
#[cfg(any(feature = "validator", test))]
fn rule_text(
    code: &str,
    params: &std::collections::HashMap<std::borrow::Cow<'static, str>, Value>,
) -> String {
    let param = |k: &str| params.get(k);
    let num = |k: &str| param(k).map(js_number);
    match code {
        "length" => {
            let (len, unit) = match param("value") {
                Some(Value::Array(a)) => (Some(a.len() as f64), "elements"),
                Some(Value::String(s)) => (Some(s.chars().count() as f64), "characters"),
                _ => (None, "characters"),
            };
            let as_f = |k: &str| param(k).and_then(Value::as_f64);
            let (min, max) = match as_f("equal") {
                Some(_) => (num("equal"), num("equal")),
                None => (num("min"), num("max")),
            };
            let short = match (len, as_f("equal").or(as_f("min"))) {
                (Some(len), Some(min)) => len < min,
                _ => max.is_none(),
            };
            match (short, unit) {
                (true, "elements") => {
                    format!("must contain at least {} elements", min.unwrap_or_default())
                }
                (false, "elements") => format!(
                    "must contain no more than {} elements",
                    max.unwrap_or_default()
                ),
                (true, _) => format!(
                    "must be longer than or equal to {} characters",
                    min.unwrap_or_default()
                ),
                (false, _) => format!(
                    "must be shorter than or equal to {} characters",
                    max.unwrap_or_default()
                ),
            }
        }
        "range" => {
            let value = param("value").and_then(Value::as_f64);
            let bound = |k: &str| param(k).and_then(Value::as_f64).zip(value);
            if bound("min").is_some_and(|(m, v)| v < m) {
                format!("must not be less than {}", num("min").unwrap_or_default())
            } else if bound("exclusive_min").is_some_and(|(m, v)| v <= m) {
                format!(
                    "must be greater than {}",
                    num("exclusive_min").unwrap_or_default()
                )
            } else if bound("exclusive_max").is_some_and(|(m, v)| v >= m) {
                format!(
                    "must be less than {}",
                    num("exclusive_max").unwrap_or_default()
                )
            } else {
                format!(
                    "must not be greater than {}",
                    num("max").unwrap_or_default()
                )
            }
        }
        "email" => "must be an email".into(),
        "url" => "must be a URL address".into(),
        "required" => "should not be null or undefined".into(),
        "contains" => format!(
            "must contain a {} string",
            num("needle").unwrap_or_default()
        ),
        "does_not_contain" => {
            format!(
                "should not contain a {} string",
                num("needle").unwrap_or_default()
            )
        }
        "must_match" => format!("must match {}", num("other").unwrap_or_default()),
        "regex" => "must match the required regular expression".into(),
        "credit_card" => "must be a credit card".into(),
        "ip" | "ipv4" | "ipv6" => "must be an ip address".into(),
        "non_control_character" => "must not contain control characters".into(),
        other => format!("is invalid ({other})"),
    }
}

/// The violations `validator` found, paths in class-validator's form.
#[cfg(feature = "validator")]
pub(crate) fn from_validator(errors: &validator::ValidationErrors) -> Vec<Violation> {
    fn walk(errors: &validator::ValidationErrors, path: &mut Vec<Seg>, out: &mut Vec<Violation>) {
        // `validator` keeps its errors in a hash map: sort by name so the order does not
        // depend on the hasher (`order_by_payload` then puts them in the payload's order).
        let mut fields: Vec<_> = errors.errors().iter().collect();
        fields.sort_by(|a, b| a.0.cmp(b.0));
        for (field, kind) in fields {
            // `__all__` holds the errors of struct-level (`schema`) rules: no field of its own.
            let own = field != "__all__";
            if own {
                path.push(Seg::Key(field.to_string()));
            }
            match kind {
                validator::ValidationErrorsKind::Field(list) => {
                    for e in list {
                        let said = match &e.message {
                            Some(m) => Said::Custom(m.to_string()),
                            None => Said::Rule(rule_text(&e.code, &e.params)),
                        };
                        out.push(Violation {
                            path: path.clone(),
                            said,
                        });
                    }
                }
                validator::ValidationErrorsKind::Struct(inner) => walk(inner, path, out),
                validator::ValidationErrorsKind::List(items) => {
                    for (i, inner) in items {
                        path.push(Seg::Index(*i));
                        walk(inner, path, out);
                        path.pop();
                    }
                }
            }
            if own {
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    walk(errors, &mut Vec::new(), &mut out);
    out
}

/// class-validator's wording for garde's rules (garde's messages carry no field name;
/// the path is put in front).
#[cfg(feature = "garde")]
struct ClassValidatorWording;

#[cfg(feature = "garde")]
impl garde::i18n::I18n for ClassValidatorWording {
    fn length_lower_than(&self, min: usize) -> std::borrow::Cow<'static, str> {
        format!("must be longer than or equal to {min} characters").into()
    }
    fn length_greater_than(&self, max: usize) -> std::borrow::Cow<'static, str> {
        format!("must be shorter than or equal to {max} characters").into()
    }
    fn range_lower_than(&self, min: &dyn std::fmt::Display) -> std::borrow::Cow<'static, str> {
        format!("must not be less than {min}").into()
    }
    fn range_greater_than(&self, max: &dyn std::fmt::Display) -> std::borrow::Cow<'static, str> {
        format!("must not be greater than {max}").into()
    }
    fn credit_card_invalid(
        &self,
        _: garde::i18n::InvalidCreditCard,
    ) -> std::borrow::Cow<'static, str> {
        "must be a credit card".into()
    }
    fn pattern_no_match(&self, pattern: &dyn std::fmt::Display) -> std::borrow::Cow<'static, str> {
        format!("must match /{pattern}/ regular expression").into()
    }
    fn contains_missing(&self, pattern: &dyn std::fmt::Display) -> std::borrow::Cow<'static, str> {
        format!("must contain a {pattern} string").into()
    }
    fn url_invalid(&self, _: garde::i18n::InvalidUrl) -> std::borrow::Cow<'static, str> {
        "must be a URL address".into()
    }
    fn prefix_missing(&self, pattern: &dyn std::fmt::Display) -> std::borrow::Cow<'static, str> {
        format!("must start with {pattern}").into()
    }
    fn suffix_missing(&self, pattern: &dyn std::fmt::Display) -> std::borrow::Cow<'static, str> {
        format!("must end with {pattern}").into()
    }
    fn phone_number_invalid(
        &self,
        _: garde::i18n::InvalidPhoneNumber,
    ) -> std::borrow::Cow<'static, str> {
        "must be a valid phone number".into()
    }
    fn ip_invalid(&self, _: garde::i18n::IpKind) -> std::borrow::Cow<'static, str> {
        "must be an ip address".into()
    }
    fn matches_field_mismatch(
        &self,
        field: &dyn std::fmt::Display,
    ) -> std::borrow::Cow<'static, str> {
        format!("must match {field}").into()
    }
    fn email_invalid(&self, _: garde::i18n::InvalidEmail) -> std::borrow::Cow<'static, str> {
        "must be an email".into()
    }
    fn ascii_invalid(&self) -> std::borrow::Cow<'static, str> {
        "must contain only ASCII characters".into()
    }
    fn alphanumeric_invalid(&self) -> std::borrow::Cow<'static, str> {
        "must contain only letters and numbers".into()
    }
    fn required_not_set(&self) -> std::borrow::Cow<'static, str> {
        "should not be null or undefined".into()
    }
}

/// Runs garde's rules with class-validator's wording (garde sorts its report by path;
/// `order_by_payload` puts it in the payload's order).
#[cfg(feature = "garde")]
pub(crate) fn garde_violations<T>(value: &T) -> Vec<Violation>
where
    T: garde::Validate,
    T::Context: Default,
{
    let Err(report) = garde::i18n::with_i18n(ClassValidatorWording, || value.validate()) else {
        return Vec::new();
    };
    report
        .iter()
        .map(|(path, error)| Violation {
            path: garde_path(&path.to_string()),
            said: Said::Rule(error.message().to_string()),
        })
        .collect()
}

/// garde's `items[0].qty` as segments.
#[cfg(any(feature = "garde", test))]
fn garde_path(text: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in text.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|k| !k.is_empty()) {
            out.push(Seg::Key(key.to_string()));
        }
        for index in pieces {
            let index = index.trim_end_matches(']');
            out.push(match index.parse() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(index.to_string()),
            });
        }
    }
    out
}

/// The violation a payload that does not deserialise reports, with the path
/// `serde_path_to_error` found (`prefix` first: the field a `#[payload("field")]`
/// parameter reads). `None` for text that is not JSON: that is not a validation matter.
pub(crate) fn from_serde(
    prefix: Option<&str>,
    error: &serde_path_to_error::Error<serde_json::Error>,
) -> Option<Violation> {
    if !error.inner().is_data() {
        return None;
    }
    let mut path: Vec<Seg> = prefix
        .map(|p| Seg::Key(p.to_string()))
        .into_iter()
        .collect();
    for seg in error.path().iter() {
        match seg {
            serde_path_to_error::Segment::Seq { index } => path.push(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key } => path.push(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Enum { variant } => path.push(Seg::Key(variant.clone())),
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let text = error.inner().to_string();
    // serde_json appends the position, which says nothing to a caller of a field.
    let text = match text.rfind(" at line ") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    Some(serde_violation(path, text))
}

/// Whether `T` decodes from a JSON object (a struct or a map). serde lets a struct decode
/// from an array too (its fields in order), which for a payload is a mistake to name as
/// such rather than by the first element that did not fit.
pub(crate) fn expects_object<T: serde::de::DeserializeOwned>() -> bool {
    use serde::de::{Deserializer, Visitor};

    #[derive(Debug)]
    struct Shape(bool);
    impl std::fmt::Display for Shape {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("shape probe")
        }
    }
    impl std::error::Error for Shape {}
    impl serde::de::Error for Shape {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Shape(false)
        }
    }
    struct Probe;
    impl<'de> Deserializer<'de> for Probe {
        type Error = Shape;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Shape> {
            Err(Shape(false))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Shape> {
            Err(Shape(true))
        }
        fn deserialize_map<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Shape> {
            Err(Shape(true))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct enum
            identifier ignored_any
        }
    }
    matches!(T::deserialize(Probe), Err(Shape(true)))
}

/// The violation of JSON `text` that did not decode into `T` (`prefix`: the property a
/// `#[payload("field")]` parameter reads), or `None` when `text` is not JSON.
pub(crate) fn undecodable<T: serde::de::DeserializeOwned>(
    prefix: Option<&str>,
    text: &[u8],
) -> Option<Violation> {
    let path: Vec<Seg> = prefix
        .map(|p| Seg::Key(p.to_string()))
        .into_iter()
        .collect();
    let trimmed = text.trim_ascii_start();
    if trimmed.starts_with(b"[") && expects_object::<T>() {
        return Some(Violation {
            path,
            said: Said::Rule("must be an object".into()),
        });
    }
    let de = &mut serde_json::Deserializer::from_slice(text);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Ok(_) => None,
        Err(e) => from_serde(prefix, &e),
    }
}

fn between<'t>(text: &'t str, open: &str, close: &str) -> Option<&'t str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(&text[start..start + len])
}

fn serde_violation(mut path: Vec<Seg>, text: &str) -> Violation {
    if text.starts_with("invalid type: null") {
        return Violation {
            path,
            said: Said::Rule("should not be null or undefined".into()),
        };
    }
    if let Some(field) = text
        .strip_prefix("missing field ")
        .and_then(|t| between(t, "`", "`"))
    {
        path.push(Seg::Key(field.to_string()));
        return Violation {
            path,
            said: Said::Rule("should not be null or undefined".into()),
        };
    }
    if let Some(field) = text
        .strip_prefix("unknown field ")
        .and_then(|t| between(t, "`", "`"))
    {
        path.push(Seg::Key(field.to_string()));
        return Violation {
            path,
            said: Said::Custom("property $property should not exist".into()),
        };
    }
    if let Some(rest) = text.strip_prefix("unknown variant ") {
        let allowed: Vec<&str> = rest
            .split_once("expected ")
            .map(|(_, e)| e.trim_start_matches("one of "))
            .unwrap_or_default()
            .split(", ")
            .map(|v| v.trim_matches('`'))
            .filter(|v| !v.is_empty())
            .collect();
        return Violation {
            path,
            said: Said::Rule(format!(
                "must be one of the following values: {}",
                allowed.join(", ")
            )),
        };
    }
    if text.starts_with("invalid type: ")
        || text.starts_with("invalid value: ")
        || text.starts_with("invalid length ")
    {
        if let Some((_, expected)) = text.split_once(", expected ") {
            return Violation {
                path,
                said: Said::Rule(format!("must be {}", expectation(expected))),
            };
        }
    }
    Violation {
        path,
        said: Said::Rule(format!("is invalid: {text}")),
    }
}

/// serde's name of what it expected, in class-validator's words where one exists.
fn expectation(expected: &str) -> String {
    const INTEGERS: [&str; 12] = [
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
    ];
    match expected {
        e if INTEGERS.contains(&e) => "an integer number".into(),
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "a character" | "a char" => "a string".into(),
        "a boolean" => "a boolean value".into(),
        "a sequence" => "an array".into(),
        e if e.starts_with("struct ") || e == "a map" => "an object".into(),
        e if e.starts_with("a tuple") || e.starts_with("an array") => "an array".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> std::collections::HashMap<std::borrow::Cow<'static, str>, Value> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone().into(), v.clone()))
            .collect()
    }

    #[test]
    fn rules_read_like_class_validator() {
        let t = |code, p| rule_text(code, &params(p));
        assert_eq!(
            t("length", json!({"min": 2, "max": 20, "value": "A"})),
            "must be longer than or equal to 2 characters"
        );
        assert_eq!(
            t("length", json!({"min": 2, "max": 3, "value": "Anna"})),
            "must be shorter than or equal to 3 characters"
        );
        assert_eq!(
            t("length", json!({"equal": 5, "value": "1"})),
            "must be longer than or equal to 5 characters"
        );
        assert_eq!(
            t("length", json!({"min": 1, "value": []})),
            "must contain at least 1 elements"
        );
        assert_eq!(
            t("range", json!({"min": 0, "max": 150, "value": -1})),
            "must not be less than 0"
        );
        assert_eq!(
            t("range", json!({"min": 1.0, "max": 99.0, "value": 100})),
            "must not be greater than 99"
        );
        assert_eq!(t("email", json!({"value": "x"})), "must be an email");
        assert_eq!(t("my_rule", json!({})), "is invalid (my_rule)");
    }

    #[test]
    fn messages_name_the_field_path() {
        let v = |path: Vec<Seg>, said| Violation { path, said }.message();
        let key = |k: &str| Seg::Key(k.into());
        assert_eq!(
            v(
                vec![key("items"), Seg::Index(1), key("qty")],
                Said::Rule("must not be greater than 99".into())
            ),
            "items.1.qty must not be greater than 99"
        );
        assert_eq!(
            v(
                vec![key("address"), key("city")],
                Said::Custom("$property is too short".into())
            ),
            "address.city is too short"
        );
        assert_eq!(
            v(vec![key("name")], Said::Custom("bad name".into())),
            "bad name"
        );
        assert_eq!(
            garde_path("items[0].qty"),
            vec![key("items"), Seg::Index(0), key("qty")]
        );
        assert_eq!(garde_path("[2]"), vec![Seg::Index(2)]);
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        qty: u8,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        name: String,
        items: Vec<Item>,
    }

    fn serde_message(json: &str) -> Option<String> {
        undecodable::<Order>(None, json.as_bytes()).map(|v| v.message())
    }

    #[test]
    fn serde_errors_become_field_messages() {
        assert_eq!(
            serde_message(r#"{"name":"a","items":[{"qty":1},{"qty":"x"}]}"#).as_deref(),
            Some("items.1.qty must be an integer number")
        );
        assert_eq!(
            serde_message(r#"{"items":[]}"#).as_deref(),
            Some("name should not be null or undefined")
        );
        assert_eq!(
            serde_message(r#"[1]"#).as_deref(),
            Some("payload must be an object")
        );
        assert_eq!(
            serde_message(r#"{"name":null,"items":[]}"#).as_deref(),
            Some("name should not be null or undefined")
        );
        assert_eq!(
            serde_message(r#""x""#).as_deref(),
            Some("payload must be an object")
        );
        assert_eq!(
            serde_message(r#"{"name":"#),
            None,
            "not JSON: not a validation error"
        );
        assert!(expects_object::<Order>());
        assert!(expects_object::<std::collections::HashMap<String, u8>>());
        assert!(!expects_object::<Vec<Item>>());
        assert!(!expects_object::<Option<Order>>());
    }

    #[test]
    fn order_follows_the_payload() {
        let key = |k: &str| Seg::Key(k.into());
        let rule = |path| Violation {
            path,
            said: Said::Rule("x".into()),
        };
        let mut v = vec![
            rule(vec![key("items"), Seg::Index(1), key("qty")]),
            rule(vec![key("address"), key("city")]),
            rule(vec![key("zeta")]),
            rule(vec![key("items"), Seg::Index(0), key("sku")]),
            rule(vec![key("name")]),
        ];
        order_by_payload(
            &mut v,
            Some(br#"{"name":"A","address":{"city":"O"},"items":[{"sku":""},{"qty":100}]}"#),
        );
        let got: Vec<String> = v.iter().map(|v| join(&v.path)).collect();
        assert_eq!(
            got,
            ["name", "address.city", "items.0.sku", "items.1.qty", "zeta"]
        );
    }

    #[test]
    fn messages_are_bounded() {
        let many: Vec<Violation> = (0..200_000)
            .map(|i| Violation {
                path: vec![Seg::Key(format!("f{i}"))],
                said: Said::Rule("must be an email".into()),
            })
            .collect();
        let HandlerFailure::Rpc(body) = failure(&many) else {
            panic!("not an rpc failure")
        };
        let messages = body["message"].as_array().unwrap();
        assert!(messages.len() < 200_000);
        assert_eq!(messages.last().unwrap(), OMITTED_MESSAGE);
        assert_eq!(body["statusCode"], 400);
    }
}
