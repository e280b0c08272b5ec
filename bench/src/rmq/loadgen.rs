//! The RabbitMQ load generator: raw lapin, one connection and channel per worker,
//! publishing `sum` requests to the service's queue with Nest's request properties
//! (`replyTo` = direct reply-to, `correlationId` = the packet id) and taking the replies
//! from `amq.rabbitmq.reply-to`. Closed loop: each worker keeps exactly `inflight`
//! requests outstanding and publishes a new one as soon as a reply arrives; publishes are
//! not awaited one by one (lapin's I/O thread writes them while the loop reads replies).

use std::collections::HashMap;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::{timeout_at, Instant};

use crate::loadgen::{Stats, Times};

/// RabbitMQ's pseudo-queue for replies straight to the consuming channel.
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The answer every `sum [1,2,3]` request must get.
const EXPECTED: i64 = 6;

/// One worker's connection, its channel and its consumer of direct replies.
pub struct Link {
    connection: Connection,
    channel: Channel,
    replies: Consumer,
    queue: ShortString,
}

/// Connects and starts consuming direct replies (which must happen before the first
/// publish that names `amq.rabbitmq.reply-to`).
pub async fn connect(url: &str, queue: &str) -> Result<Link, String> {
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .map_err(|_| format!("no connection to {url} within 10 s"))?
    .map_err(|e| format!("connect to {url}: {e}"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| format!("open a channel: {e}"))?;
    let options = BasicConsumeOptions {
        no_ack: true, // required by direct reply-to
        ..BasicConsumeOptions::default()
    };
    let replies = channel
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "".into(),
            options,
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consume {DIRECT_REPLY_TO}: {e}"))?;
    Ok(Link {
        connection,
        channel,
        replies,
        queue: queue.into(),
    })
}

/// A reply, decoded just enough to check it.
#[derive(Deserialize)]
struct Reply<'a> {
    response: Option<i64>,
    #[serde(borrow)]
    err: Option<&'a RawValue>,
}

/// Publishes request `id`: `{"pattern":"sum","data":[1,2,3],"id":"<id>"}`.
async fn publish(
    channel: &Channel,
    queue: &ShortString,
    id: u64,
) -> (u64, Result<(), lapin::Error>) {
    let body = format!("{{\"pattern\":\"sum\",\"data\":[1,2,3],\"id\":\"{id}\"}}");
    let properties = BasicProperties::default()
        .with_reply_to(DIRECT_REPLY_TO.into())
        .with_correlation_id(id.to_string().into());
    let published = channel
        .basic_publish(
            "".into(),
            queue.clone(),
            BasicPublishOptions::default(),
            body.as_bytes(),
            properties,
        )
        .await;
    (id, published.map(|_| ()))
}

/// Closed loop on one link with `inflight` requests outstanding: every reply is checked
/// (known `correlationId`, no `err`, `response` 6) and replaced by a new request until
/// `t.end`; then the outstanding ones are awaited until `t.drain_deadline`.
pub async fn request_worker(link: Link, inflight: usize, t: Times) -> Stats {
    let Link {
        connection,
        channel,
        mut replies,
        queue,
    } = link;
    let mut st = Stats::new();
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(inflight * 2);
    let mut publishing = FuturesUnordered::new();
    let mut next_id = 1u64;
    let now = Instant::now();
    for _ in 0..inflight {
        publishing.push(publish(&channel, &queue, next_id));
        sent.insert(next_id, now);
        next_id += 1;
    }
    while !sent.is_empty() {
        tokio::select! {
            biased;
            Some((id, done)) = publishing.next(), if !publishing.is_empty() => {
                if let Err(e) = done {
                    sent.remove(&id);
                    st.error(1, || format!("publish: {e}"));
                }
            }
            next = timeout_at(t.drain_deadline, replies.next()) => {
                let delivery = match next {
                    Err(_) => {
                        st.error(sent.len() as u64, || "no reply before the drain deadline".into());
                        break;
                    }
                    Ok(None) => {
                        st.error(sent.len() as u64, || "the reply consumer ended".into());
                        break;
                    }
                    Ok(Some(Err(e))) => {
                        st.error(sent.len() as u64, || format!("reply consumer: {e}"));
                        break;
                    }
                    Ok(Some(Ok(delivery))) => delivery,
                };
                let now = Instant::now();
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|c| c.as_str().parse::<u64>().ok());
                let Some(t0) = id.and_then(|id| sent.remove(&id)) else {
                    st.error(1, || format!(
                        "reply with an unknown correlationId {:?}: {}",
                        delivery.properties.correlation_id(),
                        String::from_utf8_lossy(&delivery.data)
                    ));
                    continue;
                };
                match serde_json::from_slice::<Reply>(&delivery.data) {
                    Ok(r) if r.err.is_none() && r.response == Some(EXPECTED) => {
                        if t.in_window(now) {
                            st.completed += 1;
                            st.hist.saturating_record(now.duration_since(t0).as_nanos() as u64);
                        }
                    }
                    _ => st.error(1, || format!(
                        "wrong reply: {}",
                        String::from_utf8_lossy(&delivery.data)
                    )),
                }
                if now < t.end {
                    publishing.push(publish(&channel, &queue, next_id));
                    sent.insert(next_id, now);
                    next_id += 1;
                }
            }
        }
    }
    drop(publishing);
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        connection.close(200, "bench run over".into()),
    )
    .await;
    st
}
