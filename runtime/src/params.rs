//! Handler parameters beyond the whole payload: Nest's `@Payload('field')` and its
//! transformation pipes (`ParseIntPipe`).
//!
//! A parameter marked `#[payload("id")]` receives the payload object's `id` property,
//! decoded into the parameter's type (any `serde::Deserialize` type; a missing property
//! decodes as `null`, so `Option<T>` takes it as `None`). [`Parse<T>`] is `ParseIntPipe`
//! and its kin: the property may be a string (`"42"`) or a JSON number or boolean, and is
//! parsed with `T`'s `FromStr`.
//!
//! ```
//! use nestling::Parse;
//!
//! #[derive(Default)]
//! struct Users;
//!
//! #[nestling::controller]
//! impl Users {
//!     // @MessagePattern('get_user')
//!     // getUser(@Payload('id', ParseIntPipe) id: number, @Payload('name') name?: string)
//!     #[message_pattern("get_user")]
//!     fn get_user(&self, #[payload("id")] Parse(id): Parse<u64>, #[payload("name")] name: Option<String>) -> String {
//!         format!("{id}: {}", name.unwrap_or_default())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = nestling::Server::builder().build().unwrap();
//! let client = nestling::testing::client(&server);
//! let got: String = client.send("get_user", &serde_json::json!({"id": "42", "name": "Ann"})).await.unwrap();
//! assert_eq!(got, "42: Ann");
//! # }
//! ```
//!
//! The properties are found in one pass over the payload that keeps each wanted
//! property's raw JSON text and skips the others without building them; each parameter
//! then decodes from its own text. No map of the payload is built.

use std::str::FromStr;

use serde::de::{DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::handler::{HandlerFailure, Request};
use crate::validation::{bad_request, failure, undecodable, Said, Seg, Violation};

/// A payload property parsed from text with `T`'s [`FromStr`]: Nest's `ParseIntPipe`,
/// `ParseFloatPipe` and `ParseBoolPipe`, for any `FromStr` type. Takes a JSON string
/// (`"42"`) or a number or boolean (as its JSON text: `42`, `true`).
///
/// A missing property, `null`, or text `T` does not parse is answered as Nest answers for
/// `@Payload('id', new ParseIntPipe({ exceptionFactory: m => new RpcException(new
/// BadRequestException(m).getResponse()) }))`:
/// `{"message":"Validation failed (numeric string is expected)","error":"Bad Request","statusCode":400}`
/// (for integer and float types; `boolean string is expected` for `bool`;
/// `Validation failed (<the FromStr error>)` for other types). Nest's plain `ParseIntPipe`
/// (no factory) gives its RPC caller only "Internal server error"; the factory is the
/// documented way to let the caller see why.
///
/// ```
/// use nestling::Parse;
///
/// #[derive(Default)]
/// struct Orders;
///
/// #[nestling::controller]
/// impl Orders {
///     #[message_pattern("order")]
///     fn order(&self, #[payload("id")] id: Parse<u32>) -> u32 {
///         *id + 1 // Parse<T> derefs to T; or destructure: `Parse(id): Parse<u32>`
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let server = nestling::Server::builder().build().unwrap();
/// let client = nestling::testing::client(&server);
/// let n: u32 = client.send("order", &serde_json::json!({"id": 41})).await.unwrap();
/// assert_eq!(n, 42);
/// let e = client.send::<_, _, u32>("order", &serde_json::json!({"id": "4x"})).await.unwrap_err();
/// assert!(e.to_string().contains("numeric string is expected"), "{e}");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Parse<T>(pub T);

impl<T> Parse<T> {
    /// The parsed value.
    ///
    /// ```
    /// assert_eq!(nestling::Parse(7u8).into_inner(), 7);
    /// ```
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Parse<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Types a `#[payload("field")]` parameter can have: every `serde::Deserialize` type, and
/// [`Parse<T>`].
///
/// ```
/// fn takes<T: nestling::FromField>() {}
/// takes::<u64>();
/// takes::<Option<String>>();
/// takes::<nestling::Parse<i32>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be read from a payload property",
    label = "a #[payload(\"field\")] parameter decodes the property into this type",
    note = "use a type implementing `serde::Deserialize`, or `nestling::Parse<T>` to parse a string with `T: FromStr` (Nest's ParseIntPipe)"
)]
pub trait FromField: Sized {
    /// Decodes the property `name`, whose raw JSON is `raw` (`None` when the payload has
    /// no such property).
    fn from_field(raw: Option<&RawValue>, name: &str) -> Result<Self, HandlerFailure>;
}

impl<T: DeserializeOwned> FromField for T {
    #[inline]
    fn from_field(raw: Option<&RawValue>, name: &str) -> Result<Self, HandlerFailure> {
        let text = raw.map_or("null", RawValue::get);
        serde_json::from_str(text).map_err(|_| field_failure::<T>(name, text))
    }
}

/// Why a property did not decode: the same 400 answer a validating handler gives, the
/// message naming the property (and the path inside it).
#[cold]
fn field_failure<T: DeserializeOwned>(name: &str, text: &str) -> HandlerFailure {
    // The text is JSON (the payload scan checked it): decode again to find the path of the
    // mismatch.
    let violation = undecodable::<T>(Some(name), text.as_bytes());
    let violation = violation.unwrap_or_else(|| Violation {
        path: vec![Seg::Key(name.to_string())],
        said: Said::Rule("is invalid".into()),
    });
    failure(&[violation])
}

impl<T> FromField for Parse<T>
where
    T: FromStr + 'static,
    T::Err: std::fmt::Display,
{
    fn from_field(raw: Option<&RawValue>, _name: &str) -> Result<Self, HandlerFailure> {
        let text = raw.map(RawValue::get).unwrap_or("null");
        let unquoted = match serde_json::from_str::<std::borrow::Cow<'_, str>>(text) {
            Ok(s) => Some(s),
            // A number or boolean parses from its JSON text, as Nest's pipes take them.
            Err(_) if !text.starts_with(['{', '[', 'n']) => Some(text.into()),
            Err(_) => None,
        };
        match unquoted.map(|s| s.parse::<T>()) {
            Some(Ok(v)) => Ok(Parse(v)),
            Some(Err(e)) => Err(parse_failure::<T>(Some(&e.to_string()))),
            None => Err(parse_failure::<T>(None)),
        }
    }
}

/// Nest's pipe message for `T`.
#[cold]
fn parse_failure<T: 'static>(error: Option<&str>) -> HandlerFailure {
    use std::any::TypeId;
    let id = TypeId::of::<T>();
    let numeric = [
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<i128>(),
        TypeId::of::<isize>(),
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<u128>(),
        TypeId::of::<usize>(),
        TypeId::of::<f32>(),
        TypeId::of::<f64>(),
    ];
    let message = if numeric.contains(&id) {
        "Validation failed (numeric string is expected)".to_string()
    } else if id == TypeId::of::<bool>() {
        "Validation failed (boolean string is expected)".to_string()
    } else {
        match error {
            Some(e) => format!("Validation failed ({e})"),
            None => "Validation failed (string is expected)".to_string(),
        }
    };
    bad_request(message).into()
}

/// The raw JSON of the payload properties `names`, in one pass over `data` (`None` for a
/// property it lacks). A payload that is not an object has no properties, as in
/// JavaScript (`(5).id` is `undefined`); one that is not JSON is the usual bad payload.
pub fn fields<'r, const N: usize>(
    request: &'r Request,
    names: &[&str; N],
) -> Result<[Option<&'r RawValue>; N], HandlerFailure> {
    let scan = Scan { names };
    let found = match request.data_text() {
        Some(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            scan.deserialize(&mut de).and_then(|f| de.end().map(|()| f))
        }
        None => match request.data() {
            Some(bytes) => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                scan.deserialize(&mut de).and_then(|f| de.end().map(|()| f))
            }
            None => return Ok([None; N]),
        },
    };
    found.map_err(|e| {
        HandlerFailure::BadPayload(format!(
            "invalid payload for pattern {}: {e}",
            request.context().pattern()
        ))
    })
}

struct Scan<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for Scan<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for Scan<'_, N> {
    type Value = [Option<&'de RawValue>; N];

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = [None; N];
        while let Some(index) = map.next_key_seed(KeyIndex { names: self.names })? {
            match index {
                // JSON.parse keeps the last of duplicate keys; so does this.
                Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok([None; N])
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok([None; N])
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok([None; N])
    }
}

/// A key of the payload object as the index of the wanted name it equals.
struct KeyIndex<'n, const N: usize> {
    names: &'n [&'n str; N],
}

impl<'de, const N: usize> DeserializeSeed<'de> for KeyIndex<'_, N> {
    type Value = Option<usize>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for KeyIndex<'_, N> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a property name")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.names.iter().position(|n| *n == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    fn request(data: &str) -> Request {
        let ctx = Context::new(r#""p""#, "127.0.0.1:1".parse().unwrap());
        Request::new(Some(bytes::Bytes::copy_from_slice(data.as_bytes())), ctx)
    }

    fn raw(found: Option<&RawValue>) -> Option<&str> {
        found.map(RawValue::get)
    }

    #[test]
    fn finds_properties_in_one_pass() {
        let r = request(r#"{"a":1,"skip":{"x":[1,2,{"y":"}"}]},"b":"two","a":3}"#);
        let [a, b, c] = fields(&r, &["a", "b", "c"]).unwrap();
        assert_eq!(
            raw(a),
            Some("3"),
            "the last duplicate wins, as in JSON.parse"
        );
        assert_eq!(raw(b), Some(r#""two""#));
        assert_eq!(raw(c), None);
        let r = request(r#"{"a\u0062":1}"#);
        assert_eq!(
            raw(fields(&r, &["ab"]).unwrap()[0]),
            Some("1"),
            "escaped keys match"
        );
    }

    #[test]
    fn non_objects_have_no_properties_and_bad_json_is_a_bad_payload() {
        for data in ["[1,{\"a\":2}]", "5", "\"a\"", "null", "true"] {
            assert!(
                fields(&request(data), &["a"]).unwrap()[0].is_none(),
                "{data}"
            );
        }
        let ctx = Context::new(r#""p""#, "127.0.0.1:1".parse().unwrap());
        assert!(fields(&Request::new(None, ctx), &["a"]).unwrap()[0].is_none());
        for data in [r#"{"a":1"#, r#"{"a":1} x"#, r#"{"a":tru}"#] {
            let e = fields(&request(data), &["a"]).unwrap_err();
            assert!(matches!(e, HandlerFailure::BadPayload(_)), "{data}: {e:?}");
        }
    }

    fn wire(e: HandlerFailure) -> String {
        String::from_utf8(e.wire_json()).unwrap()
    }

    #[test]
    fn fields_decode_or_say_which_failed() {
        let r = request(r#"{"id":"42","n":7,"items":[{"qty":1},{"qty":"x"}]}"#);
        let [id, n, items, missing] = fields(&r, &["id", "n", "items", "missing"]).unwrap();
        assert_eq!(Parse::<u64>::from_field(id, "id").unwrap(), Parse(42));
        assert_eq!(Parse::<u64>::from_field(n, "n").unwrap(), Parse(7));
        assert_eq!(u8::from_field(n, "n").unwrap(), 7);
        assert_eq!(Option::<u8>::from_field(missing, "missing").unwrap(), None);
        assert_eq!(
            wire(u8::from_field(missing, "missing").unwrap_err()),
            r#"{"message":["missing should not be null or undefined"],"error":"Bad Request","statusCode":400}"#
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Item {
            qty: u8,
        }
        assert_eq!(
            wire(Vec::<Item>::from_field(items, "items").unwrap_err()),
            r#"{"message":["items.1.qty must be an integer number"],"error":"Bad Request","statusCode":400}"#
        );
        let numeric = r#"{"message":"Validation failed (numeric string is expected)","error":"Bad Request","statusCode":400}"#;
        for bad in [r#""4x2""#, "1.5", "null", "[1]", r#""""#] {
            let raw = serde_json::from_str::<&RawValue>(bad).unwrap();
            assert_eq!(
                wire(Parse::<i64>::from_field(Some(raw), "id").unwrap_err()),
                numeric,
                "{bad}"
            );
        }
        assert_eq!(
            wire(Parse::<i64>::from_field(None, "id").unwrap_err()),
            numeric
        );
        let t = serde_json::from_str::<&RawValue>("true").unwrap();
        assert_eq!(
            Parse::<bool>::from_field(Some(t), "b").unwrap(),
            Parse(true)
        );
        let bad = serde_json::from_str::<&RawValue>(r#""yes""#).unwrap();
        assert!(wire(Parse::<bool>::from_field(Some(bad), "b").unwrap_err())
            .contains("boolean string is expected"));
        let ip = serde_json::from_str::<&RawValue>(r#""1.2.3""#).unwrap();
        assert!(
            wire(Parse::<std::net::Ipv4Addr>::from_field(Some(ip), "ip").unwrap_err())
                .contains("Validation failed (invalid IPv4 address syntax)")
        );
    }
}
