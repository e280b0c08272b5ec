//! `listen host:port`: accepts Nest TCP connections, decodes frames with [`NestCodec`],
//! and prints every packet. A framing error or invalid JSON is logged and closes that one
//! connection (FIN), as Nest does; the listener keeps going. With `--echo`, a request is
//! answered with its own data, framed like Nest's reply.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use nestling::codec::{encode_frame, NestCodec};
use nestling::packet::{parse_inbound, Inbound};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::FramedRead;

use super::format::echo_json;
use super::{log, Origin, Sink, Stopping};
use crate::output::Failure;

pub async fn run(
    addr: &str,
    sink: Arc<Sink>,
    stopping: impl Stopping,
) -> Result<&'static str, Failure> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Failure::connection(format!(
            "could not listen on {addr}: {e}; is another process using the port?"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::connection(format!("could not read the bound address: {e}")))?;
    sink.announce(&local.to_string());
    tokio::pin!(stopping);
    let mut connections = JoinSet::new();
    let why = loop {
        tokio::select! {
            why = &mut stopping => break why,
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
    Ok(why)
}

async fn serve(stream: TcpStream, peer: SocketAddr, sink: Arc<Sink>) {
    let _ = stream.set_nodelay(true);
    log(&format!("{peer} connected"));
    let peer_text = peer.to_string();
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
        if !sink.print(&Origin::new("peer", &peer_text), &packet, &frame) {
            return;
        }
        if let (true, Inbound::Request { data, id, .. }) = (sink.echo(), &packet) {
            let mut reply = BytesMut::new();
            encode_frame(&echo_json(data.as_ref(), Some(id)), &mut reply);
            if let Err(e) = wr.write_all(&reply).await {
                break format!("could not send the echo: {e}; closing this connection");
            }
        }
    };
    log(&format!("{peer} {ending}"));
    // FIN, as Nest does after a framing error; dropping the halves closes the socket.
    let _ = wr.shutdown().await;
}
