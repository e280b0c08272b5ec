//! `amqp://` client addresses: the broker's URI plus the service's queue and the
//! `ClientRMQ` options nestling reads from the query string (the rest of it goes to lapin).
//! Public, so that tools (the CLI) read an address exactly as the client does.

use crate::error::ClientError;

/// Where and how a client publishes, read off its address:
/// `amqp://user:pass@host:5672/vhost?queue=user_service&persistent=true`, exactly as
/// [`Client`](crate::Client) reads it.
///
/// ```
/// use nestling::rmq::RmqAddress;
/// let address = RmqAddress::parse("amqp://svc:pw@rabbit:5672/prod?queue=user_service&heartbeat=10").unwrap();
/// assert_eq!(address.queue, "user_service");
/// assert_eq!(address.broker, "amqp://svc:pw@rabbit:5672/prod?heartbeat=10"); // lapin's part
/// assert!(address.durable && address.assert_queue && !address.persistent);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RmqAddress {
    /// The broker URI lapin connects to (nestling's own parameters removed).
    pub broker: String,
    /// The service's queue (Nest's `queue`): requests and events go there.
    pub queue: String,
    /// Declare the queue before publishing (Nest's default; `no_assert=true` turns it off).
    pub assert_queue: bool,
    /// The queue's `durable` flag when declared (Nest's `queueOptions.durable`, default true).
    pub durable: bool,
    /// Messages survive a broker restart (Nest's `persistent`, default false).
    pub persistent: bool,
    /// Publish to this exchange with the pattern as routing key instead of to the queue
    /// (Nest's `wildcards` / `exchangeType: 'fanout'`; `exchange` defaults to the queue).
    pub exchange: Option<String>,
    /// Where replies come back (Nest's `replyQueue`): a queue declared elsewhere, or
    /// RabbitMQ's direct reply-to (the default).
    pub reply_queue: Option<String>,
}

/// The query parameters nestling reads; every other one is lapin's.
const OURS: [&str; 7] = [
    "queue",
    "reply_queue",
    "no_assert",
    "durable",
    "persistent",
    "exchange",
    "wildcards",
];

impl RmqAddress {
    /// Reads `addr`. Fails with [`ClientError::Connect`] (kind `InvalidInput`) for an
    /// address without a broker or a `queue` (Nest's client has nowhere to publish then)
    /// or a flag that is neither true nor false; the message says what to write.
    pub fn parse(addr: &str) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::Connect {
            addr: redact(addr),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason),
        };
        let (base, query) = addr.split_once('?').unwrap_or((addr, ""));
        let authority = base.split_once("://").map_or("", |(_, rest)| rest);
        if authority.is_empty() || authority.starts_with('/') {
            return Err(invalid(
                "the address names no broker: write amqp://host:5672?queue=NAME".into(),
            ));
        }
        let mut theirs = Vec::new();
        let mut get = std::collections::HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if OURS.contains(&key) {
                get.insert(key, percent_decode(value));
            } else {
                theirs.push(pair);
            }
        }
        let flag = |key: &str, default: bool| match get.get(key).map(String::as_str) {
            None => Ok(default),
            Some("true" | "1" | "") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(invalid(format!("`{key}={other}`: use true or false"))),
        };
        let queue = get.get("queue").cloned().unwrap_or_default();
        if queue.is_empty() {
            return Err(invalid(
                "the address names no queue: add ?queue=NAME, the queue the service consumes \
                 (Nest's `queue` option), e.g. amqp://127.0.0.1:5672?queue=user_service"
                    .into(),
            ));
        }
        let exchange = match (get.get("exchange"), flag("wildcards", false)?) {
            (Some(exchange), _) => Some(exchange.clone()),
            (None, true) => Some(queue.clone()),
            (None, false) => None,
        };
        let broker = if theirs.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", theirs.join("&"))
        };
        Ok(RmqAddress {
            broker,
            assert_queue: !flag("no_assert", false)?,
            durable: flag("durable", true)?,
            persistent: flag("persistent", false)?,
            queue,
            exchange,
            reply_queue: get.get("reply_queue").filter(|q| !q.is_empty()).cloned(),
        })
    }
}

/// `addr` without its password (`amqp://user:***@host`), for messages and logs.
///
/// ```
/// assert_eq!(
///     nestling::rmq::without_password("amqp://svc:s3cret@rabbit:5672/prod?queue=q"),
///     "amqp://svc:***@rabbit:5672/prod?queue=q",
/// );
/// ```
pub fn redact(addr: &str) -> String {
    let Some((scheme, rest)) = addr.split_once("://") else {
        return addr.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{}", &rest[at + 1..])
        }
        None => addr.to_owned(),
    }
}

/// `%xx` escapes decoded (queue names may hold any character).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b'+', ..) => {
                out.push(b' ');
                i += 1;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{redact, RmqAddress};

    #[test]
    fn addresses_split_into_broker_and_queue() {
        let t = RmqAddress::parse("amqp://127.0.0.1:5672?queue=user_service").unwrap();
        assert_eq!(t.broker, "amqp://127.0.0.1:5672");
        assert_eq!(t.queue, "user_service");
        assert!(t.assert_queue && t.durable && !t.persistent && t.exchange.is_none());

        let t = RmqAddress::parse(
            "amqp://u:p@h:1/vh?heartbeat=10&queue=a%2Fb&durable=false&persistent=true&wildcards=true",
        )
        .unwrap();
        assert_eq!(t.broker, "amqp://u:p@h:1/vh?heartbeat=10");
        assert_eq!(t.queue, "a/b");
        assert!(!t.durable && t.persistent);
        assert_eq!(t.exchange.as_deref(), Some("a/b"));

        let t = RmqAddress::parse("amqp://h?queue=q&exchange=events&no_assert=1&reply_queue=mine")
            .unwrap();
        assert_eq!(t.exchange.as_deref(), Some("events"));
        assert_eq!(t.reply_queue.as_deref(), Some("mine"));
        assert!(!t.assert_queue);
    }

    #[test]
    fn a_missing_queue_or_a_bad_flag_is_a_clear_error() {
        let e = RmqAddress::parse("amqp://127.0.0.1:5672")
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue=user_service"), "{e}");
        let e = RmqAddress::parse("amqp://h?queue=q&durable=maybe")
            .unwrap_err()
            .to_string();
        assert!(e.contains("durable=maybe"), "{e}");
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("amqp://svc:pw@h:5672/v?queue=q"),
            "amqp://svc:***@h:5672/v?queue=q"
        );
        assert_eq!(redact("amqp://h:5672?queue=q"), "amqp://h:5672?queue=q");
    }
}
