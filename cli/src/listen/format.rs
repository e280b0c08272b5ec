//! How `listen` prints a packet, whichever transport brought it, and the echo reply.
//!
//! Values are printed exactly as received (only the whitespace between tokens is removed).

use bytes::Bytes;
use nestling::packet::Inbound;

use crate::output;

/// Where a packet came from, and what the transport carried besides it.
pub struct Origin<'a> {
    /// `peer` (TCP), `subject` (NATS) or `queue` (RabbitMQ): the JSON key, and in text the
    /// first column.
    pub key: &'static str,
    pub value: &'a str,
    /// Transport properties printed after the packet's fields: name and compact JSON.
    pub extras: Vec<(&'static str, String)>,
}

impl<'a> Origin<'a> {
    pub fn new(key: &'static str, value: &'a str) -> Self {
        Self {
            key,
            value,
            extras: Vec::new(),
        }
    }

    /// Adds a string property (JSON-quoted).
    pub fn with_str(mut self, name: &'static str, value: Option<&str>) -> Self {
        if let Some(value) = value {
            self.extras.push((name, json_string(value)));
        }
        self
    }

    /// Adds a property that is already JSON text.
    pub fn with_json(mut self, name: &'static str, json: Option<String>) -> Self {
        if let Some(json) = json {
            self.extras.push((name, json));
        }
        self
    }
}

/// A string as a JSON string literal.
pub fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

fn text(raw: &Bytes) -> String {
    output::compact_json(&String::from_utf8_lossy(raw))
}

/// `{"response":data,"isDisposed":true,"id":id}` (Nest's TCP and NATS reply); without `data`
/// (Nest's `undefined`) the `response` key is left out, as Nest does for a handler returning
/// nothing. Without `id`: Nest's ServerRMQ reply, whose correlation travels in the
/// message's `correlationId` instead.
pub fn echo_json(data: Option<&Bytes>, id: Option<&Bytes>) -> String {
    let mut out = String::from("{");
    if let Some(data) = data {
        out.push_str(r#""response":"#);
        out.push_str(&String::from_utf8_lossy(data));
        out.push(',');
    }
    out.push_str(r#""isDisposed":true"#);
    if let Some(id) = id {
        out.push_str(r#","id":"#);
        out.push_str(&String::from_utf8_lossy(id));
    }
    out.push('}');
    out
}

/// Fields of a packet in print order; absent ones are `None`.
fn fields<'p>(packet: &'p Inbound, frame: &'p Bytes) -> Vec<(&'static str, Option<&'p Bytes>)> {
    match packet {
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => vec![
            ("pattern", pattern.as_ref()),
            ("data", data.as_ref()),
            ("id", Some(id)),
            ("metadata", metadata.as_ref()),
        ],
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => vec![
            ("pattern", pattern.as_ref()),
            ("data", data.as_ref()),
            ("metadata", metadata.as_ref()),
        ],
        Inbound::Undefined => vec![("frame", Some(frame))],
    }
}

/// One compact JSON object: the origin, `kind`, then `pattern`, `data`, `id`, `metadata`
/// when present (absent keys are absent on the wire too), `frame` for undefined packets,
/// then the transport's properties.
pub fn json_line(origin: &Origin, packet: &Inbound, frame: &Bytes) -> String {
    let mut out = format!(
        r#"{{"{}":{},"kind":"{}""#,
        origin.key,
        json_string(origin.value),
        kind(packet)
    );
    for (name, raw) in fields(packet, frame) {
        if let Some(raw) = raw {
            out.push_str(&format!(r#","{name}":{}"#, text(raw)));
        }
    }
    for (name, json) in &origin.extras {
        out.push_str(&format!(r#","{name}":{json}"#));
    }
    out.push('}');
    out
}

/// `<origin> <kind> pattern=… data=… id=…` then the transport's properties, values as
/// compact JSON; `pattern`, `data` and `id` are `<absent>` when missing.
pub fn text_line(origin: &Origin, packet: &Inbound, frame: &Bytes) -> String {
    let mut out = format!("{} {:<9}", origin.value, kind(packet));
    for (name, raw) in fields(packet, frame) {
        match raw {
            Some(raw) => out.push_str(&format!(" {name}={}", text(raw))),
            None if name != "metadata" => out.push_str(&format!(" {name}=<absent>")),
            None => {}
        }
    }
    for (name, json) in &origin.extras {
        out.push_str(&format!(" {name}={json}"));
    }
    out.truncate(out.trim_end().len());
    out
}

pub fn kind(packet: &Inbound) -> &'static str {
    match packet {
        Inbound::Request { .. } => "request",
        Inbound::Event { .. } => "event",
        Inbound::Undefined => "undefined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use nestling::codec::encode_frame;
    use nestling::packet::parse_inbound;

    fn packet(json: &str) -> (Inbound, Bytes) {
        let frame = Bytes::from(json.to_owned());
        (parse_inbound(&frame).unwrap(), frame)
    }

    fn peer() -> Origin<'static> {
        Origin::new("peer", "127.0.0.1:4000")
    }

    #[test]
    fn json_lines() {
        let (p, f) = packet(r#"{"pattern":"sum","data":[1, 2],"id":"7"}"#);
        assert_eq!(
            json_line(&peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"request","pattern":"sum","data":[1,2],"id":"7"}"#
        );
        let (p, f) = packet(r#"{"pattern":"log","data":"求和1111","metadata":{"t":"1"}}"#);
        assert_eq!(
            json_line(&peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"event","pattern":"log","data":"求和1111","metadata":{"t":"1"}}"#
        );
        let (p, f) = packet(r#"{"pattern":"x","id":null}"#);
        assert_eq!(
            json_line(&peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"request","pattern":"x","id":null}"#
        );
        let (p, f) = packet("[ 1 ]");
        assert_eq!(
            json_line(&peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"undefined","frame":[1]}"#
        );
    }

    #[test]
    fn broker_origins_carry_their_properties() {
        let (p, f) = packet(r#"{"pattern":{"cmd":"sum"},"data":[1],"id":"7"}"#);
        let origin = Origin::new("subject", r#"{"cmd":"sum"}"#)
            .with_str("reply", Some("_INBOX.a.7"))
            .with_json("headers", None);
        assert_eq!(
            json_line(&origin, &p, &f),
            r#"{"subject":"{\"cmd\":\"sum\"}","kind":"request","pattern":{"cmd":"sum"},"data":[1],"id":"7","reply":"_INBOX.a.7"}"#
        );
        assert_eq!(
            text_line(&origin, &p, &f),
            r#"{"cmd":"sum"} request   pattern={"cmd":"sum"} data=[1] id="7" reply="_INBOX.a.7""#
        );
        let origin = Origin::new("queue", "q")
            .with_str("correlationId", Some("c1"))
            .with_json("headers", Some("{}".into()));
        let (p, f) = packet(r#"{"pattern":"log","data":"x"}"#);
        assert_eq!(
            text_line(&origin, &p, &f),
            r#"q event     pattern="log" data="x" correlationId="c1" headers={}"#
        );
    }

    #[test]
    fn text_lines() {
        let (p, f) = packet(r#"{"pattern":{"cmd":"sum"},"data":[1,2],"id":"7"}"#);
        assert_eq!(
            text_line(&peer(), &p, &f),
            r#"127.0.0.1:4000 request   pattern={"cmd":"sum"} data=[1,2] id="7""#
        );
        let (p, f) = packet(r#"{"pattern":"log"}"#);
        assert_eq!(
            text_line(&peer(), &p, &f),
            r#"127.0.0.1:4000 event     pattern="log" data=<absent>"#
        );
        let (p, f) = packet("5");
        assert_eq!(
            text_line(&peer(), &p, &f),
            "127.0.0.1:4000 undefined frame=5"
        );
    }

    #[test]
    fn echo_replies() {
        let data = Bytes::from(r#"{"a":"😀"}"#);
        let id = Bytes::from_static(br#""12""#);
        assert_eq!(
            echo_json(Some(&data), Some(&id)),
            r#"{"response":{"a":"😀"},"isDisposed":true,"id":"12"}"#
        );
        assert_eq!(
            echo_json(None, Some(&id)),
            r#"{"isDisposed":true,"id":"12"}"#
        );
        // Nest's ServerRMQ drops the id.
        assert_eq!(
            echo_json(Some(&data), None),
            r#"{"response":{"a":"😀"},"isDisposed":true}"#
        );
        let mut framed = BytesMut::new();
        encode_frame(&echo_json(Some(&data), Some(&id)), &mut framed);
        // 51 UTF-16 units (the emoji counts 2), 53 bytes.
        assert!(framed.starts_with(b"51#"), "{framed:?}");
    }
}
