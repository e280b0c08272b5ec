//! `nestling listen`: a Nest TCP debugging sink.
//!
//! Accepts connections, decodes frames with [`NestCodec`], classifies each packet with
//! [`parse_inbound`] as Nest's server does, and prints it. Values are printed exactly as
//! received (only the whitespace between tokens is removed). A framing error or invalid JSON
//! is logged and closes that one connection, as Nest does; the listener keeps going.
//! With `--echo`, a request is answered with its own data. Stops on Ctrl-C (or SIGTERM).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use nestling::codec::{encode_frame, NestCodec};
use nestling::packet::{parse_inbound, Inbound};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;

use crate::output::{self, Failure};
use crate::{input, ListenArgs};

/// Shared by every connection task.
struct Sink {
    json: bool,
    echo: bool,
    packets: AtomicU64,
    /// Set to `true` to stop everything (stdout went away).
    stop: watch::Sender<bool>,
}

pub async fn run(args: ListenArgs) -> Result<(), Failure> {
    let addr = input::address(&args.addr);
    let listener = TcpListener::bind(&addr).await.map_err(|e| {
        Failure::connection(format!(
            "could not listen on {addr}: {e}; is another process using the port?"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::connection(format!("could not read the bound address: {e}")))?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    log(&format!(
        "listening on {local} ({}; Ctrl-C stops)",
        if args.echo {
            "echoing requests"
        } else {
            "answering nothing"
        }
    ));
    let (stop, mut stopped) = watch::channel(false);
    let sink = Arc::new(Sink {
        json: args.json,
        echo: args.echo,
        packets: AtomicU64::new(0),
        stop,
    });
    let mut connections = JoinSet::new();
    let why = loop {
        tokio::select! {
            why = &mut shutdown => break why,
            _ = stopped.wait_for(|s| *s) => break "standard output closed",
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(serve(stream, peer, sink.clone()));
                }
                // Per-connection accept errors (e.g. out of file descriptors) are transient.
                Err(e) => {
                    log(&format!("accept failed: {e}"));
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            // Reap finished connection tasks so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    };
    connections.shutdown().await;
    log(&format!(
        "stopped ({why}); {} packet(s) received",
        sink.packets.load(Ordering::Relaxed)
    ));
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM.
///
/// On Unix the handlers are installed when this is called, not when first polled, so a
/// signal arriving right after the `listening on` line is already handled.
fn shutdown_signal() -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => tokio::select! {
                    _ = int.recv() => "interrupted",
                    _ = term.recv() => "terminated",
                },
                _ => ctrl_c().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        ctrl_c()
    }
}

async fn ctrl_c() -> &'static str {
    match tokio::signal::ctrl_c().await {
        Ok(()) => "interrupted",
        // No signal handling available: run until killed.
        Err(_) => std::future::pending().await,
    }
}

fn log(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "nestling: {line}");
}

async fn serve(stream: TcpStream, peer: SocketAddr, sink: Arc<Sink>) {
    let _ = stream.set_nodelay(true);
    log(&format!("{peer} connected"));
    let (rd, mut wr) = stream.into_split();
    let mut frames = FramedRead::new(rd, NestCodec::new());
    let ending = loop {
        let frame = match frames.next().await {
            None => break "disconnected".to_string(),
            Some(Err(e)) => break format!("bad frame: {e}; closing this connection"),
            Some(Ok(frame)) => frame,
        };
        let packet = match parse_inbound(&frame) {
            Ok(packet) => packet,
            Err(e) => break format!("{e}; closing this connection"),
        };
        sink.packets.fetch_add(1, Ordering::Relaxed);
        let line = if sink.json {
            json_line(peer, &packet, &frame)
        } else {
            text_line(peer, &packet, &frame)
        };
        if output::print_line(&line).is_err() {
            let _ = sink.stop.send(true);
            return;
        }
        if let (true, Inbound::Request { data, id, .. }) = (sink.echo, &packet) {
            let mut reply = BytesMut::new();
            encode_frame(&echo_json(data.as_ref(), id), &mut reply);
            if let Err(e) = wr.write_all(&reply).await {
                break format!("could not send the echo: {e}; closing this connection");
            }
        }
    };
    log(&format!("{peer} {ending}"));
    // FIN, as Nest does after a framing error; dropping the halves closes the socket.
    let _ = wr.shutdown().await;
}

fn text(raw: &Bytes) -> String {
    output::compact_json(&String::from_utf8_lossy(raw))
}

/// `{"response":data,"isDisposed":true,"id":id}`; without `data` (Nest's `undefined`) the
/// `response` key is left out, as Nest does for a handler returning nothing.
fn echo_json(data: Option<&Bytes>, id: &Bytes) -> String {
    let id = String::from_utf8_lossy(id);
    match data {
        Some(data) => format!(
            r#"{{"response":{},"isDisposed":true,"id":{id}}}"#,
            String::from_utf8_lossy(data)
        ),
        None => format!(r#"{{"isDisposed":true,"id":{id}}}"#),
    }
}

/// One compact JSON object: `peer`, `kind`, then `pattern`, `data`, `id`, `metadata` when
/// present (absent keys are absent on the wire too); `frame` for undefined packets.
fn json_line(peer: SocketAddr, packet: &Inbound, frame: &Bytes) -> String {
    let mut out = format!(r#"{{"peer":"{peer}","kind":"{}""#, kind(packet));
    let mut field = |name: &str, raw: Option<&Bytes>| {
        if let Some(raw) = raw {
            out.push_str(&format!(r#","{name}":{}"#, text(raw)));
        }
    };
    match packet {
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => {
            field("pattern", pattern.as_ref());
            field("data", data.as_ref());
            field("id", Some(id));
            field("metadata", metadata.as_ref());
        }
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => {
            field("pattern", pattern.as_ref());
            field("data", data.as_ref());
            field("metadata", metadata.as_ref());
        }
        Inbound::Undefined => field("frame", Some(frame)),
    }
    out.push('}');
    out
}

/// `<peer> <kind> pattern=… data=… id=…`, values as compact JSON, `<absent>` when missing.
fn text_line(peer: SocketAddr, packet: &Inbound, frame: &Bytes) -> String {
    let shown = |raw: Option<&Bytes>| raw.map_or_else(|| "<absent>".to_string(), text);
    let mut out = format!("{peer} {:<9}", kind(packet));
    match packet {
        Inbound::Request {
            pattern,
            data,
            id,
            metadata,
        } => {
            out.push_str(&format!(
                " pattern={} data={} id={}",
                shown(pattern.as_ref()),
                shown(data.as_ref()),
                text(id)
            ));
            if let Some(m) = metadata {
                out.push_str(&format!(" metadata={}", text(m)));
            }
        }
        Inbound::Event {
            pattern,
            data,
            metadata,
        } => {
            out.push_str(&format!(
                " pattern={} data={}",
                shown(pattern.as_ref()),
                shown(data.as_ref())
            ));
            if let Some(m) = metadata {
                out.push_str(&format!(" metadata={}", text(m)));
            }
        }
        Inbound::Undefined => out.push_str(&format!(" frame={}", text(frame))),
    }
    out.truncate(out.trim_end().len());
    out
}

fn kind(packet: &Inbound) -> &'static str {
    match packet {
        Inbound::Request { .. } => "request",
        Inbound::Event { .. } => "event",
        Inbound::Undefined => "undefined",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(json: &str) -> (Inbound, Bytes) {
        let frame = Bytes::from(json.to_owned());
        (parse_inbound(&frame).unwrap(), frame)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    #[test]
    fn json_lines() {
        let (p, f) = packet(r#"{"pattern":"sum","data":[1, 2],"id":"7"}"#);
        assert_eq!(
            json_line(peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"request","pattern":"sum","data":[1,2],"id":"7"}"#
        );
        let (p, f) = packet(r#"{"pattern":"log","data":"求和1111","metadata":{"t":"1"}}"#);
        assert_eq!(
            json_line(peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"event","pattern":"log","data":"求和1111","metadata":{"t":"1"}}"#
        );
        let (p, f) = packet(r#"{"pattern":"x","id":null}"#);
        assert_eq!(
            json_line(peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"request","pattern":"x","id":null}"#
        );
        let (p, f) = packet("[ 1 ]");
        assert_eq!(
            json_line(peer(), &p, &f),
            r#"{"peer":"127.0.0.1:4000","kind":"undefined","frame":[1]}"#
        );
    }

    #[test]
    fn text_lines() {
        let (p, f) = packet(r#"{"pattern":{"cmd":"sum"},"data":[1,2],"id":"7"}"#);
        assert_eq!(
            text_line(peer(), &p, &f),
            r#"127.0.0.1:4000 request   pattern={"cmd":"sum"} data=[1,2] id="7""#
        );
        let (p, f) = packet(r#"{"pattern":"log"}"#);
        assert_eq!(
            text_line(peer(), &p, &f),
            r#"127.0.0.1:4000 event     pattern="log" data=<absent>"#
        );
        let (p, f) = packet("5");
        assert_eq!(
            text_line(peer(), &p, &f),
            "127.0.0.1:4000 undefined frame=5"
        );
    }

    #[test]
    fn echo_replies() {
        let data = Bytes::from(r#"{"a":"😀"}"#);
        let id = Bytes::from_static(br#""12""#);
        assert_eq!(
            echo_json(Some(&data), &id),
            r#"{"response":{"a":"😀"},"isDisposed":true,"id":"12"}"#
        );
        assert_eq!(echo_json(None, &id), r#"{"isDisposed":true,"id":"12"}"#);
        let mut framed = BytesMut::new();
        encode_frame(&echo_json(Some(&data), &id), &mut framed);
        // 51 UTF-16 units (the emoji counts 2), 53 bytes.
        assert!(framed.starts_with(b"51#"), "{framed:?}");
    }
}
