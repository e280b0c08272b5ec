//! The `<addr>` argument: a Nest TCP `host:port`, a NATS server `nats://host:port`, or a
//! RabbitMQ queue `amqp://host:port/vhost?queue=NAME`.
//!
//! Broker URLs are checked here, before anything connects, so that a malformed one is a
//! usage error (exit 3) that says how to write it, not a connection error.

use crate::input;
use crate::output::Failure;

const FORMS: &str =
    "use host:port (Nest TCP), nats://host:4222 (NATS) or amqp://host:5672/vhost?queue=NAME (RabbitMQ)";

/// Where a subcommand talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port` of a Nest TCP service (a bare port means 127.0.0.1).
    Tcp(String),
    /// `nats://host:port` (several comma-separated), as given.
    Nats(String),
    /// `amqp://…?queue=NAME`.
    Rmq(RmqAddress),
}

/// An `amqp://` (or `amqps://`) address with the queue it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RmqAddress {
    /// The address as given: `nestling::Client` reads the same parameters.
    pub url: String,
    /// The broker URI for lapin: the address without nestling's parameters.
    pub broker: String,
    /// The service's queue (Nest's `queue` option), percent-decoded.
    pub queue: String,
    /// The queue's `durable` flag when declared (Nest's default: true).
    pub durable: bool,
    /// Declare the queue before using it (Nest's default; `no_assert=true` turns it off).
    pub declare: bool,
}

impl Address {
    pub fn parse(text: &str) -> Result<Self, Failure> {
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(Address::Tcp(input::address(text)));
        };
        // The client picks its transport by the lower-case scheme.
        let scheme = scheme.to_ascii_lowercase();
        let url = format!("{scheme}://{rest}");
        match scheme.as_str() {
            "nats" => {
                if rest.is_empty() || rest.starts_with(['/', '?', ',']) {
                    return Err(Failure::usage(format!(
                        "the NATS address {text:?} names no server: write nats://host:4222"
                    )));
                }
                Ok(Address::Nats(url))
            }
            "amqp" | "amqps" => RmqAddress::parse(&url).map(Address::Rmq),
            other => Err(Failure::usage(format!(
                "unsupported address scheme `{other}://` in {:?}; {FORMS}",
                redact(text)
            ))),
        }
    }

    /// What `nestling::Client` dials.
    pub fn client_addr(&self) -> &str {
        match self {
            Address::Tcp(addr) | Address::Nats(addr) => addr,
            Address::Rmq(rmq) => &rmq.url,
        }
    }

    /// The address for messages (no password).
    pub fn shown(&self) -> String {
        redact(self.client_addr())
    }

    /// `--tls` and its companions configure Nest's TCP `tlsOptions` only.
    pub fn reject_tls(&self, tls: bool) -> Result<(), Failure> {
        match self {
            Address::Tcp(_) => Ok(()),
            _ if !tls => Ok(()),
            _ => Err(Failure::usage(format!(
                "--tls applies to host:port (Nest TCP) addresses, not to {}; the broker \
                 connection's own security comes from its URL",
                self.shown()
            ))),
        }
    }
}

impl RmqAddress {
    /// Reads `url` exactly as `nestling::Client` does (`nestling::rmq::RmqAddress`); a
    /// malformed one is a usage error.
    fn parse(url: &str) -> Result<Self, Failure> {
        let address = nestling::rmq::RmqAddress::parse(url).map_err(|e| {
            let why =
                std::error::Error::source(&e).map_or_else(|| e.to_string(), ToString::to_string);
            Failure::usage(format!("the RabbitMQ address {:?}: {why}", redact(url)))
        })?;
        Ok(RmqAddress {
            url: url.to_owned(),
            broker: address.broker,
            queue: address.queue,
            durable: address.durable,
            declare: address.assert_queue,
        })
    }
}

/// `url` without its password (`amqp://user:***@host`).
pub fn redact(url: &str) -> String {
    nestling::rmq::without_password(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_addresses_are_tcp() {
        assert_eq!(
            Address::parse("8888").unwrap(),
            Address::Tcp("127.0.0.1:8888".into())
        );
        assert_eq!(
            Address::parse("svc:8888").unwrap(),
            Address::Tcp("svc:8888".into())
        );
    }

    #[test]
    fn nats_urls_pass_through() {
        let a = Address::parse("nats://127.0.0.1:4222").unwrap();
        assert_eq!(a, Address::Nats("nats://127.0.0.1:4222".into()));
        assert_eq!(a.client_addr(), "nats://127.0.0.1:4222");
        // The client picks the transport by the lower-case scheme.
        assert_eq!(
            Address::parse("NATS://h:4222").unwrap(),
            Address::Nats("nats://h:4222".into())
        );
        let e = Address::parse("nats://").unwrap_err();
        assert_eq!(e.code, crate::output::USAGE);
        assert!(e.message.contains("nats://host:4222"), "{}", e.message);
    }

    #[test]
    fn amqp_urls_name_a_queue() {
        let Address::Rmq(r) =
            Address::parse("amqp://u:p@h:5672/v?heartbeat=10&queue=a%2Fb&durable=false").unwrap()
        else {
            panic!("not rmq")
        };
        assert_eq!(r.broker, "amqp://u:p@h:5672/v?heartbeat=10");
        assert_eq!(r.queue, "a/b");
        assert!(!r.durable && r.declare);
        assert_eq!(
            r.url,
            "amqp://u:p@h:5672/v?heartbeat=10&queue=a%2Fb&durable=false"
        );
        let Address::Rmq(r) = Address::parse("amqp://h?queue=q&no_assert=1").unwrap() else {
            panic!("not rmq")
        };
        assert!(r.durable && !r.declare);
    }

    #[test]
    fn bad_urls_are_usage_errors_that_say_what_to_write() {
        let e = Address::parse("amqp://svc:secret@127.0.0.1:5672").unwrap_err();
        assert_eq!(e.code, crate::output::USAGE);
        assert!(e.message.contains("?queue=NAME"), "{}", e.message);
        assert!(!e.message.contains("secret"), "{}", e.message);
        let e = Address::parse("amqp://h?queue=q&durable=maybe").unwrap_err();
        assert!(e.message.contains("durable=maybe"), "{}", e.message);
        let e = Address::parse("amqp://?queue=q").unwrap_err();
        assert!(e.message.contains("names no broker"), "{}", e.message);
        let e = Address::parse("http://h:80").unwrap_err();
        assert!(e.message.contains("`http://`"), "{}", e.message);
        assert!(e.message.contains("nats://"), "{}", e.message);
    }

    #[test]
    fn tls_flags_are_for_tcp() {
        let nats = Address::parse("nats://h:4222").unwrap();
        assert!(nats.reject_tls(false).is_ok());
        assert!(nats.reject_tls(true).is_err());
        assert!(Address::parse("h:1").unwrap().reject_tls(true).is_ok());
    }
}
