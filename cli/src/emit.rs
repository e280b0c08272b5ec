//! `nestling emit`: one event frame on a connection of its own, written, flushed and closed
//! before the process exits. To a broker (`nats://`, `amqp://`), the event goes through
//! [`Client::emit`], which returns once the NATS client has flushed it or lapin has written
//! the publish to the broker's socket.
//!
//! Over TCP:
//! `nestling::Client::emit` returns once the connection's writer has handed the frame to the
//! socket (as Nest's `emit` completes), not merely queued it, but it leaves the connection
//! open until the client is dropped. A one-shot command writes the frame itself instead, so
//! that it also ends the connection cleanly: the bytes are built by
//! [`nestling::packet::Wire::outbound`] (on TCP) with the pattern's event form
//! ([`Pattern::event_json`], Nest's normalised string for objects), exactly what
//! `Client::emit` would send, then flushed, and the socket's write side is shut down (TLS's
//! close_notify, then FIN after the data).

use std::time::Duration;

use bytes::BytesMut;
use nestling::{Client, Pattern};
use serde_json::Value;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::address::Address;
use crate::output::Failure;
use crate::tls::Tls;
use crate::{input, EmitArgs};

/// Connect/write limit used when `--timeout 0` is given.
const DEFAULT_LIMIT: Duration = Duration::from_secs(5);

pub async fn run(args: EmitArgs) -> Result<(), Failure> {
    let address = Address::parse(&args.target.addr)?;
    let pattern = input::pattern(&args.target.pattern)?;
    let data = input::payload(&args.target)?;
    let limit = match args.target.timeout {
        0 => DEFAULT_LIMIT,
        ms => Duration::from_millis(ms),
    };
    let sent = match &address {
        Address::Tcp(addr) => {
            let tls = Tls::from_args(&args.target, addr)?;
            let frame = event_frame(&pattern, &data)?;
            tokio::time::timeout(limit, send(addr, &frame, tls.as_ref())).await
        }
        broker => {
            broker.reject_tls(args.target.tls)?;
            tokio::time::timeout(limit, publish(broker, &pattern, &data, limit)).await
        }
    };
    sent.unwrap_or_else(|_| {
        Err(Failure::connection(format!(
            "emitting to {} timed out after {} ms; check that the service is reachable",
            address.shown(),
            limit.as_millis()
        )))
    })
}

/// An event through a broker, with the client's own connection (closed when dropped).
async fn publish(
    broker: &Address,
    pattern: &Pattern,
    data: &Value,
    limit: Duration,
) -> Result<(), Failure> {
    let client = Client::builder(broker.client_addr())
        .connect_timeout(limit)
        .build();
    client
        .emit(pattern, data)
        .await
        .map_err(|e| Failure::client(&e, true))
}

/// The event frame `Client::emit` sends: `{"pattern":P,"data":D}` with P in event form.
fn event_frame(pattern: &Pattern, data: &Value) -> Result<BytesMut, Failure> {
    let mut frame = BytesMut::new();
    nestling::packet::Wire::Tcp
        .outbound(&mut frame, pattern.event_json(), data, None, None)
        .map_err(|e| Failure::usage(format!("could not encode the event: {e}")))?;
    Ok(frame)
}

async fn send(addr: &str, frame: &[u8], tls: Option<&Tls>) -> Result<(), Failure> {
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        Failure::connection(format!(
            "could not connect to {addr}: {e}; check that the service is running and the address is right"
        ))
    })?;
    let _ = stream.set_nodelay(true);
    let failed =
        |e: std::io::Error| Failure::connection(format!("sending the event to {addr} failed: {e}"));
    match tls {
        None => write_and_close(stream, frame).await.map_err(failed),
        Some(tls) => {
            let (connector, name) = tls.connector();
            let stream = connector.connect(name, stream).await.map_err(|e| {
                Failure::connection(format!(
                    "TLS handshake with {addr} failed: {e}; check the trusted CA and the server name"
                ))
            })?;
            write_and_close(stream, frame).await.map_err(failed)
        }
    }
}

/// Writes the frame, then closes the write side: FIN (after TLS's close_notify) follows the
/// data, which the kernel delivers even after the process exits.
async fn write_and_close<S: AsyncWrite + Unpin>(
    mut stream: S,
    frame: &[u8],
) -> std::io::Result<()> {
    stream.write_all(frame).await?;
    stream.flush().await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_frames_match_nest() {
        // The spec's reference frame for `emit('log', '求和1111')`.
        let frame = event_frame(&Pattern::new("log").unwrap(), &json!("求和1111")).unwrap();
        assert_eq!(
            &frame[..],
            "33#{\"pattern\":\"log\",\"data\":\"求和1111\"}".as_bytes()
        );
        // Object patterns go out as Nest's normalised string, keys sorted.
        let frame = event_frame(
            &crate::input::pattern(r#"{"ev":"x","a":1}"#).unwrap(),
            &json!("a😀b"),
        )
        .unwrap();
        let text = std::str::from_utf8(&frame).unwrap();
        assert_eq!(
            text,
            r#"50#{"pattern":"{\"a\":1,\"ev\":\"x\"}","data":"a😀b"}"#
        );
    }
}
