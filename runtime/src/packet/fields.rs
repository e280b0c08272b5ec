//! The general parses' reader: selected top-level fields of any JSON text, read with serde
//! as `JSON.parse` would read them (shared by the inbound and the reply parse).

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

use super::InvalidJson;

/// Selected top-level fields of a JSON object, as raw slices of the frame.
///
/// A hand-written visitor rather than a derived struct: derived structs also accept JSON
/// arrays (filling fields by position) and reject duplicate keys, where Nest's `JSON.parse`
/// yields an array (not a packet) and keeps the last duplicate. It stores nothing but the
/// wanted fields, so parsing a packet allocates nothing.
pub(super) struct Fields<'a, const N: usize> {
    /// The raw value of each wanted key (the last one, for duplicates).
    pub values: [Option<&'a RawValue>; N],
    /// How many keys the object has in all.
    pub total: usize,
    /// Whether any key is not among the wanted ones.
    pub unknown: bool,
}

/// Parses `frame` as an object, keeping `keys`; `Ok(None)` for valid JSON that is not an
/// object. `text` is `frame` as `&str` when it is known to be UTF-8: serde_json then skips
/// checking every string a second time.
pub(super) fn object_fields<'a, const N: usize>(
    frame: &'a Bytes,
    text: Option<&'a str>,
    keys: &'static [&'static str; N],
) -> Result<Option<Fields<'a, N>>, InvalidJson> {
    let parsed = match text {
        Some(text) => fields_from(serde_json::Deserializer::from_str(text), keys),
        None => fields_from(serde_json::Deserializer::from_slice(frame), keys),
    };
    match parsed {
        Ok(fields) => Ok(Some(fields)),
        Err(e) => {
            serde_json::from_slice::<de::IgnoredAny>(frame).map_err(|_| InvalidJson(e))?;
            Ok(None)
        }
    }
}

fn fields_from<'a, R: serde_json::de::Read<'a>, const N: usize>(
    mut de: serde_json::Deserializer<R>,
    keys: &'static [&'static str; N],
) -> Result<Fields<'a, N>, serde_json::Error> {
    let fields = FieldsSeed(keys).deserialize(&mut de)?;
    de.end()?;
    Ok(fields)
}

struct FieldsSeed<const N: usize>(&'static [&'static str; N]);

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl<'de, const N: usize> DeserializeSeed<'de> for FieldsSeed<N> {
    type Value = Fields<'de, N>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, const N: usize> Visitor<'de> for FieldsSeed<N> {
    type Value = Fields<'de, N>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields {
            values: [None; N],
            total: 0,
            unknown: false,
        };
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let value: &'de RawValue = map.next_value()?;
            fields.total += 1;
            match self.0.iter().position(|k| *k == key) {
                Some(i) => fields.values[i] = Some(value),
                None => fields.unknown = true,
            }
        }
        Ok(fields)
    }
}
