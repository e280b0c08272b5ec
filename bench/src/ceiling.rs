//! The "ceiling" server: the least a Rust program can do to serve the tutorial's two
//! handlers on Nest's wire. No framework: a single-threaded tokio runtime, one task per
//! connection that reads, cuts frames, parses each packet in one serde pass (the `data`
//! array is summed while it is parsed, nothing is allocated for it) and writes all replies
//! of one read with a single `write_all`.
//!
//! `sum` (request) answers `{"response":N,"isDisposed":true,"id":ID}`; `log` (event) prints
//! its text on stdout, one line per event, exactly like nestling's example handler
//! (`println!`); `tally` (event) only counts, and `tallied` (request) answers the count, as
//! the example's handlers of those names; any other request gets Nest's no-handler reply.
//!
//! HOST/PORT as the other servers (PORT=0 picks a free port); prints `READY <port>`.

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::wire;

/// Runs the ceiling server until killed.
pub fn run() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
        let port: u16 = std::env::var("PORT")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "READY {}", listener.local_addr()?.port())?;
            out.flush()?;
        }
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream));
        }
    })
}

async fn connection(mut stream: TcpStream) {
    let mut rbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut wbuf: Vec<u8> = Vec::with_capacity(64 * 1024);
    loop {
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(64 * 1024);
        }
        match stream.read_buf(&mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut at = 0;
        loop {
            match wire::next_frame(&rbuf[at..]) {
                Ok(Some((start, end))) => {
                    handle(&rbuf[at + start..at + end], &mut wbuf);
                    at += end;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        rbuf.drain(..at);
        if !wbuf.is_empty() {
            if stream.write_all(&wbuf).await.is_err() {
                return;
            }
            wbuf.clear();
        }
    }
}

/// One incoming packet. `data` is decoded by [`Data`] in the same pass.
#[derive(Deserialize)]
struct Packet<'a> {
    #[serde(borrow)]
    pattern: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Data<'a>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
}

/// What the two handlers need from `data`: the sum of a number array, or a string.
#[derive(Default)]
enum Data<'a> {
    Sum(i64),
    Text(Cow<'a, str>),
    #[default]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Data<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut total = 0i64;
                let mut numeric = true;
                while let Some(item) = seq.next_element::<Num>()? {
                    match item.0 {
                        Some(n) if numeric => total = total.wrapping_add(n),
                        _ => numeric = false,
                    }
                }
                Ok(if numeric {
                    Data::Sum(total)
                } else {
                    Data::Other
                })
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Data::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Data::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Data::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Data::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Data::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Data::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Data::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Data::Other)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An array element: an integer, or anything else (`None`).
struct Num(Option<i64>);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(Some(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(i64::try_from(v).ok()))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
                Ok(Num(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Num, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Num(None))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Num, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Num(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// The sum a `sum` packet asks for; `None` for any other packet. The RabbitMQ ceiling's
/// parse: the same single serde pass as over TCP.
pub fn sum_of(body: &[u8]) -> Option<i64> {
    let packet = serde_json::from_slice::<Packet>(body).ok()?;
    match (packet.pattern.map(RawValue::get), packet.data) {
        (Some("\"sum\""), Data::Sum(n)) => Some(n),
        _ => None,
    }
}

/// The sum and the id (its JSON text) of a `sum` request; `None` for any other packet.
/// The NATS ceiling's parse: the same single serde pass.
pub fn sum_and_id(body: &[u8]) -> Option<(i64, &str)> {
    let packet = serde_json::from_slice::<Packet>(body).ok()?;
    match (packet.pattern.map(RawValue::get), packet.data, packet.id) {
        (Some("\"sum\""), Data::Sum(n), Some(id)) => Some((n, id.get())),
        _ => None,
    }
}

const NO_HANDLER: &str = "There is no matching message handler defined in the remote service.";

/// `tally` events handled so far.
static TALLY: AtomicU64 = AtomicU64::new(0);

/// Handles one frame body, appending any reply frame to `out`.
fn handle(body: &[u8], out: &mut Vec<u8>) {
    let Ok(packet) = serde_json::from_slice::<Packet>(body) else {
        return; // not a packet the bench sends; a real server would log it
    };
    let is_sum = packet.pattern.is_some_and(|p| p.get() == "\"sum\"");
    match packet.id {
        Some(id) => {
            let mut json = Vec::with_capacity(64);
            match (is_sum, packet.data) {
                (false, _) if packet.pattern.is_some_and(|p| p.get() == "\"tallied\"") => {
                    let _ = write!(
                        json,
                        "{{\"response\":{},\"isDisposed\":true,\"id\":{}}}",
                        TALLY.load(Ordering::Relaxed),
                        id.get()
                    );
                }
                (true, Data::Sum(n)) => {
                    let _ = write!(
                        json,
                        "{{\"response\":{n},\"isDisposed\":true,\"id\":{}}}",
                        id.get()
                    );
                }
                (true, _) => {
                    let _ = write!(
                        json,
                        "{{\"err\":{{\"status\":\"error\",\"message\":\"Internal server error\"}},\"isDisposed\":true,\"id\":{}}}",
                        id.get()
                    );
                }
                (false, _) => {
                    let _ = write!(
                        json,
                        "{{\"id\":{},\"status\":\"error\",\"err\":\"{NO_HANDLER}\"}}",
                        id.get()
                    );
                }
            }
            wire::push_frame(out, &json);
        }
        None if packet.pattern.is_some_and(|p| p.get() == "\"tally\"") => {
            TALLY.fetch_add(1, Ordering::Relaxed);
        }
        None => {
            let is_log = packet.pattern.is_some_and(|p| p.get() == "\"log\"");
            if let (true, Data::Text(text)) = (is_log, packet.data) {
                // The same work as the example handler's `println!("{text}")`.
                println!("{text}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &str) -> String {
        let mut out = Vec::new();
        handle(body.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn sum_reply_is_framed_in_utf16_units() {
        let r = reply(r#"{"pattern":"sum","data":[1,2,3],"id":"7"}"#);
        assert_eq!(r, r#"41#{"response":6,"isDisposed":true,"id":"7"}"#);
        // Non-ASCII id: 2 units for the emoji, 4 bytes on the wire.
        let r = reply(r#"{"pattern":"sum","data":[],"id":"😀"}"#);
        let body = r#"{"response":0,"isDisposed":true,"id":"😀"}"#;
        assert_eq!(r, format!("{}#{body}", body.len() - 2));
    }

    #[test]
    fn events_and_unknown_patterns() {
        assert_eq!(reply(r#"{"pattern":"log","data":"x"}"#), "");
        let r = reply(r#"{"pattern":"nope","data":1,"id":5}"#);
        assert!(r.ends_with(&format!(
            r#"{{"id":5,"status":"error","err":"{NO_HANDLER}"}}"#
        )));
        let r = reply(r#"{"pattern":"sum","data":"x","id":1}"#);
        assert!(r.contains("Internal server error"));
    }
}
