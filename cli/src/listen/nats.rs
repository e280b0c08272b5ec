//! `listen nats://host:port`: subscribes to `--subject` (default `>`) and prints every
//! message as a Nest packet, its subject in place of the TCP peer.
//!
//! Nest's NATS client publishes a request on the pattern's subject with a reply subject
//! under `_INBOX.`, and the service answers there. Those replies are not packets a server
//! receives, so they are skipped unless `--subject` itself starts with `_INBOX` (to watch
//! them on purpose). With `--echo`, a request with a reply subject is answered there with
//! its own data, `{"response":data,"isDisposed":true,"id":id}`, as Nest's ServerNats replies.

use std::time::Duration;

use futures_util::StreamExt;
use nestling::nats::async_nats;
use nestling::packet::{parse_inbound, Inbound};

use super::format::{echo_json, json_string};
use super::{log, preview, Origin, Sink, Stopping};
use crate::output::Failure;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const INBOX: &str = "_INBOX";

pub async fn run(
    url: &str,
    subject: &str,
    sink: &Sink,
    stopping: impl Stopping,
) -> Result<&'static str, Failure> {
    let client = async_nats::ConnectOptions::new()
        .name("nestling listen")
        .connection_timeout(CONNECT_TIMEOUT)
        .connect(url)
        .await
        .map_err(|e| {
            Failure::connection(format!(
                "could not connect to NATS at {url}: {e}; check that nats-server is running and \
                 the address is right"
            ))
        })?;
    let mut messages = client
        .subscribe(subject.to_owned())
        .await
        .map_err(|e| Failure::usage(format!("could not subscribe to {subject:?}: {e}")))?;
    // The server has the subscription once it answered the flush: nothing published from
    // the `listening on` line on is missed.
    client.flush().await.map_err(|e| {
        Failure::connection(format!(
            "NATS at {url} did not confirm the subscription: {e}"
        ))
    })?;
    sink.announce(&format!("{url} subject {}", json_string(subject)));
    let show_replies = subject.starts_with(INBOX);
    tokio::pin!(stopping);
    let why = loop {
        let message = tokio::select! {
            why = &mut stopping => break why,
            message = messages.next() => message,
        };
        let Some(message) = message else {
            return Err(Failure::connection(format!(
                "the subscription to {subject:?} at {url} ended (connection closed)"
            )));
        };
        if !show_replies && message.subject.starts_with(INBOX) {
            continue;
        }
        if !handle(&client, sink, message).await {
            break "standard output closed";
        }
    };
    // Whatever echo is still queued in the client goes out before the process ends.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    Ok(why)
}

/// Prints (and with `--echo` answers) one message; `false` when standard output is gone.
async fn handle(client: &async_nats::Client, sink: &Sink, message: async_nats::Message) -> bool {
    let subject = message.subject.as_str();
    let packet = match parse_inbound(&message.payload) {
        Ok(packet) => packet,
        Err(e) => {
            log(&format!(
                "{subject}: not a Nest packet ({e}): {}",
                preview(&message.payload)
            ));
            return true;
        }
    };
    let origin = Origin::new("subject", subject)
        .with_str("reply", message.reply.as_ref().map(|r| r.as_str()))
        .with_json("headers", message.headers.as_ref().map(headers_json));
    if !sink.print(&origin, &packet, &message.payload) {
        return false;
    }
    if let (true, Inbound::Request { data, id, .. }) = (sink.echo(), &packet) {
        match &message.reply {
            Some(reply) => {
                let body = echo_json(data.as_ref(), Some(id));
                if let Err(e) = client.publish(reply.clone(), body.into()).await {
                    log(&format!(
                        "{subject}: could not send the echo to {reply}: {e}"
                    ));
                }
            }
            None => log(&format!(
                "{subject}: a request without a reply subject; not answered"
            )),
        }
    }
    true
}

/// NATS headers as a JSON object of arrays (a header may repeat), names sorted.
fn headers_json(headers: &async_nats::HeaderMap) -> String {
    let mut pairs: Vec<(String, Vec<String>)> = headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            let values = values
                .iter()
                .map(|v| AsRef::<str>::as_ref(v).to_owned())
                .collect();
            (name.to_owned(), values)
        })
        .collect();
    pairs.sort();
    let object: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(name, values)| (name, values.into()))
        .collect();
    serde_json::Value::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_print_as_json() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("b", "2");
        headers.append("a", "x\"y");
        headers.append("a", "z");
        assert_eq!(headers_json(&headers), r#"{"a":["x\"y","z"],"b":["2"]}"#);
    }
}
