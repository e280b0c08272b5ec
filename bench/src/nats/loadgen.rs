//! The NATS load generator: raw async-nats, one NATS connection per worker, publishing
//! Nest's request `{"pattern":"sum","data":[1,2,3],"id":"<n>"}` on subject `sum` with the
//! worker's own reply subject (one subscription per worker, as nestling's client; Nest's
//! client subscribes a fresh inbox per request). Closed loop: each worker keeps exactly
//! `inflight` requests outstanding and publishes a new one as soon as a reply arrives.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::{timeout_at, Instant};

use crate::loadgen::{Stats, Times};

/// The answer every `sum [1,2,3]` request must get.
const EXPECTED: i64 = 6;

/// One worker's connection and its reply subscription.
pub struct Link {
    client: async_nats::Client,
    inbox: String,
    replies: async_nats::Subscriber,
}

pub async fn connect(url: &str) -> Result<Link, String> {
    let client = tokio::time::timeout(Duration::from_secs(10), async_nats::connect(url))
        .await
        .map_err(|_| format!("no connection to {url} within 10 s"))?
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let inbox = client.new_inbox();
    let replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| format!("subscribe {inbox}: {e}"))?;
    client.flush().await.map_err(|e| format!("flush: {e}"))?;
    Ok(Link {
        client,
        inbox,
        replies,
    })
}

#[derive(Deserialize)]
struct Reply<'a> {
    response: Option<i64>,
    #[serde(borrow)]
    err: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a str>,
}

async fn publish(link: &Link, id: u64) -> Result<(), String> {
    let body = format!("{{\"pattern\":\"sum\",\"data\":[1,2,3],\"id\":\"{id}\"}}");
    link.client
        .publish_with_reply("sum", link.inbox.clone(), body.into())
        .await
        .map_err(|e| format!("publish: {e}"))
}

/// Closed loop on one link with `inflight` requests outstanding: every reply is checked
/// (known id, no `err`, `response` 6) and replaced by a new request until `t.end`; then the
/// outstanding ones are awaited until `t.drain_deadline`.
pub async fn request_worker(mut link: Link, inflight: usize, t: Times) -> Stats {
    let mut st = Stats::new();
    let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(inflight * 2);
    let mut next_id = 1u64;
    for _ in 0..inflight {
        if let Err(e) = publish(&link, next_id).await {
            st.error(1, || e);
            return st;
        }
        sent.insert(next_id, Instant::now());
        next_id += 1;
    }
    while !sent.is_empty() {
        let msg = match timeout_at(t.drain_deadline, link.replies.next()).await {
            Err(_) => {
                st.error(sent.len() as u64, || "no reply before the deadline".into());
                break;
            }
            Ok(None) => {
                st.error(sent.len() as u64, || "reply subscription ended".into());
                break;
            }
            Ok(Some(msg)) => msg,
        };
        let now = Instant::now();
        let reply = serde_json::from_slice::<Reply>(&msg.payload).ok();
        let id = reply
            .as_ref()
            .and_then(|r| r.id)
            .and_then(crate::wire::parse_id);
        let Some(t0) = id.and_then(|id| sent.remove(&id)) else {
            st.error(1, || {
                format!(
                    "reply with an unknown id: {}",
                    String::from_utf8_lossy(&msg.payload)
                )
            });
            continue;
        };
        match reply {
            Some(r) if r.err.is_none() && r.response == Some(EXPECTED) => {
                if t.in_window(now) {
                    st.completed += 1;
                    st.hist
                        .saturating_record(now.duration_since(t0).as_nanos() as u64);
                }
            }
            _ => st.error(1, || {
                format!("wrong reply: {}", String::from_utf8_lossy(&msg.payload))
            }),
        }
        if now < t.end {
            if let Err(e) = publish(&link, next_id).await {
                st.error(sent.len() as u64 + 1, || e);
                break;
            }
            sent.insert(next_id, now);
            next_id += 1;
        }
    }
    let _ = link.client.flush().await;
    st
}
