//! The client's NATS link (Nest's `ClientNats`): requests are published on the pattern's
//! subject with a reply subject of their own, `<inbox>.<id>`; one wildcard subscription
//! `<inbox>.*` receives every reply and routes it by the id in its subject.
//!
//! Nest's client opens a subscription per request; one shared subscription is equivalent
//! on the wire (a reply subject is just a subject) and costs nothing per call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::error::ClientError;
use crate::packet::{parse_reply, Wire};
use crate::pattern::Pattern;
use crate::status::{Hub, Status, TransportError};
use crate::transport::{ClientTransport, ReplyRouter, TransportFuture};

pub(crate) struct NatsLink {
    pub replies: ReplyRouter,
    client: async_nats::Client,
    /// The server address(es) dialled, for errors reported through [`ClientTransport`].
    url: String,
    /// This link's reply subject prefix, `_INBOX.<unique>`.
    inbox: String,
    replies_task: tokio::task::JoinHandle<()>,
    /// Set once the link is closed: the NATS client's events no longer speak for the
    /// [`Client`](crate::Client), which may have a new link by then.
    retired: Arc<AtomicBool>,
}

impl Drop for NatsLink {
    fn drop(&mut self) {
        self.replies_task.abort();
    }
}

impl NatsLink {
    /// Connects to the NATS server(s) at `url` (`nats://host:port`, several separated by
    /// commas) and subscribes to this link's reply subjects. The NATS client's own
    /// reconnects and errors go to `hub` until the link is closed.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        hub: Arc<Hub>,
    ) -> Result<Arc<Self>, ClientError> {
        let failed = |e: &dyn std::fmt::Display| ClientError::Connect {
            addr: url.to_owned(),
            source: std::io::Error::other(e.to_string()),
        };
        let retired = Arc::new(AtomicBool::new(false));
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .name("nestling client")
            .event_callback(report_events(hub, url.to_owned(), retired.clone()))
            .connect(url)
            .await
            .map_err(|e| failed(&e))?;
        let inbox = client.new_inbox();
        let subscription = client
            .subscribe(format!("{inbox}.*"))
            .await
            .map_err(|e| failed(&e))?;
        let router = ReplyRouter::new();
        let replies = tokio::spawn(route_replies(subscription, router.clone(), inbox.len() + 1));
        Ok(Arc::new(NatsLink {
            replies: router,
            client,
            url: url.to_owned(),
            inbox,
            replies_task: replies,
            retired,
        }))
    }

    /// The NATS connection (Nest's `unwrap()` of a `ClientNats`).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Whether the link was closed (the NATS client itself reconnects on its own).
    pub fn is_closed(&self) -> bool {
        // The call table is marked closed before any failed call is woken, so a caller
        // retrying at once sees it (the aborted task may not have finished yet).
        self.replies.is_closed() || self.replies_task.is_finished()
    }

    /// Ends the link, failing every pending call with `reason`.
    pub fn close(&self, reason: &str) {
        self.retired.store(true, Ordering::Relaxed);
        self.replies.close_all(reason);
        self.replies_task.abort();
    }

    /// Publishes request `id` on its pattern's subject, replies to `<inbox>.<id>`.
    pub async fn request(&self, pattern: &Pattern, id: u64, packet: Bytes) -> Result<(), String> {
        let reply = format!("{}.{id}", self.inbox);
        self.client
            .publish_with_reply(pattern.channel(), reply, packet)
            .await
            .map_err(|e| format!("NATS publish failed: {e}"))
    }

    /// Publishes an event and waits until the NATS client has written it (as `emit` over
    /// TCP resolves once the frame is handed to the socket).
    pub async fn event(&self, pattern: &Pattern, packet: Bytes) -> Result<(), String> {
        self.client
            .publish(pattern.channel(), packet)
            .await
            .map_err(|e| format!("NATS publish failed: {e}"))?;
        self.client
            .flush()
            .await
            .map_err(|e| format!("NATS flush failed: {e}"))
    }
}

/// The NATS link through the public interface (the client itself calls it directly).
impl ClientTransport for NatsLink {
    fn wire(&self) -> Wire {
        Wire::Bare
    }

    fn replies(&self) -> &ReplyRouter {
        &self.replies
    }

    fn request<'a>(
        &'a self,
        pattern: &'a Pattern,
        id: u64,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            NatsLink::request(self, pattern, id, packet)
                .await
                .map_err(|reason| self.closed_error(reason))
        })
    }

    fn event<'a>(
        &'a self,
        pattern: &'a Pattern,
        packet: Bytes,
    ) -> TransportFuture<'a, Result<(), ClientError>> {
        Box::pin(async move {
            NatsLink::event(self, pattern, packet)
                .await
                .map_err(|reason| self.closed_error(reason))
        })
    }

    fn is_closed(&self) -> bool {
        NatsLink::is_closed(self)
    }

    fn close(&self, reason: &str) {
        NatsLink::close(self, reason);
    }
}

impl NatsLink {
    /// The error of a call this link could not send: it is over, for `reason`.
    #[cold]
    pub fn closed_error(&self, reason: String) -> ClientError {
        ClientError::ConnectionClosed {
            addr: self.url.clone(),
            reason,
        }
    }
}

/// Reports the NATS client's connection events to `hub` as Nest's `ClientNats` does:
/// `disconnected`, then `reconnecting` (the NATS client retries by itself), `connected`.
pub(crate) fn report_events(
    hub: Arc<Hub>,
    url: String,
    retired: Arc<AtomicBool>,
) -> impl Fn(async_nats::Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let url = redact_nats(&url);
    move |event| {
        if !retired.load(Ordering::Relaxed) {
            nats_event(&hub, &url, event);
        }
        std::future::ready(())
    }
}

/// One NATS client event, as status and events.
pub(crate) fn nats_event(hub: &Hub, url: &str, event: async_nats::Event) {
    let broker = |reason: String| TransportError::Broker {
        addr: url.to_owned(),
        reason,
    };
    match event {
        async_nats::Event::Connected => hub.set(Status::Connected),
        async_nats::Event::Disconnected => {
            hub.set(Status::Disconnected);
            hub.error(TransportError::Lost {
                addr: url.to_owned(),
                reason: "the NATS server connection dropped".into(),
            });
            hub.set(Status::Reconnecting);
        }
        async_nats::Event::Closed => hub.set(Status::Disconnected),
        async_nats::Event::ServerError(e) => hub.error(broker(format!("server error: {e}"))),
        async_nats::Event::ClientError(e) => hub.error(broker(format!("client error: {e}"))),
        async_nats::Event::SlowConsumer(sid) => hub.error(broker(format!(
            "slow consumer: subscription {sid} dropped messages"
        ))),
        async_nats::Event::LameDuckMode | async_nats::Event::Draining => {
            tracing::debug!(%url, "NATS: {event}");
        }
    }
}

/// `url` without secrets (`nats://user:pass@host` → `nats://user:***@host`, a token
/// `nats://tok@host` → `nats://***@host`), for events.
fn redact_nats(url: &str) -> String {
    url.split(',')
        .map(|one| match (one.find("://"), one.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let userinfo = &one[scheme + 3..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{}{user}:***{}", &one[..scheme + 3], &one[at..]),
                    // A token alone: all of it is the secret.
                    None => format!("{}***{}", &one[..scheme + 3], &one[at..]),
                }
            }
            _ => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Routes every message on `<inbox>.*` to the call named by the subject's last token.
async fn route_replies(
    mut subscription: async_nats::Subscriber,
    replies: ReplyRouter,
    prefix_len: usize,
) {
    while let Some(message) = subscription.next().await {
        let Some(id) = message
            .subject
            .get(prefix_len..)
            .and_then(|token| token.parse::<u64>().ok())
        else {
            continue;
        };
        // An empty message is the server's "no responders" status (or an empty reply,
        // which Nest's client also reports as "no subscribers").
        if message.payload.is_empty()
            || message.status == Some(async_nats::StatusCode::NO_RESPONDERS)
        {
            replies.no_responders(id);
            continue;
        }
        match parse_reply(&message.payload) {
            Ok(reply) => replies.deliver_to(id, reply),
            Err(e) => {
                tracing::warn!(subject = %message.subject, "unusable NATS reply: {e}");
                replies.fail(id, &format!("the reply was unusable: {e}"));
            }
        }
    }
    replies.close_all("the NATS connection was closed");
}

#[cfg(test)]
mod tests {
    use crate::pattern::Pattern;
    use serde_json::json;

    #[test]
    fn passwords_are_left_out_of_events() {
        assert_eq!(
            super::redact_nats("nats://svc:pw@a:4222,nats://b:4222,nats://tok@c"),
            "nats://svc:***@a:4222,nats://b:4222,nats://***@c"
        );
    }

    #[test]
    fn subjects_are_nests_normalised_patterns() {
        let cases = [
            (json!("sum"), "sum"),
            (json!("user.created"), "user.created"),
            (json!({"cmd": "sum"}), r#"{"cmd":"sum"}"#),
            (
                json!({"op": "add", "cmd": "calc"}),
                r#"{"cmd":"calc","op":"add"}"#,
            ),
            (json!(["arr", 1]), r#"{"0":"arr","1":1}"#),
            (json!(42), "42"),
            (json!("求和"), "求和"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(
                Pattern::new(&pattern).unwrap().channel(),
                expected,
                "{pattern}"
            );
        }
    }
}
