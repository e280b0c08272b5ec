//! NATS transport (the `nats` feature): Nest's `Transport.NATS`, wire-compatible.
//!
//! The same controllers serve NATS by configuration alone, and the same
//! [`Client`](crate::Client) calls NATS services when given a `nats://` address:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use nestling::nats::NatsServe;
//!
//! // A service instance in the "user-service" queue group: run several to share the load.
//! let serving = nestling::Server::builder()
//!     .build()?
//!     .listen_nats(NatsServe::new("nats://127.0.0.1:4222").queue("user-service"))
//!     .await?;
//! tokio::spawn(serving.serve());
//!
//! // A caller: `send`, `emit`, streams and generated typed clients work unchanged.
//! let client = nestling::Client::new("nats://127.0.0.1:4222");
//! let sum: i64 = client.send("sum", &[1, 2, 3]).await?;
//! # Ok(()) }
//! ```
//!
//! On the wire, as Nest: a pattern's subject is its normalised form (`sum`,
//! `{"cmd":"sum"}`); requests are `{"pattern":…,"data":…,"id":"…"}` published with a reply
//! subject; replies are Nest's response packets published to it; events carry no `id`
//! and no reply subject. A message that is not a Nest packet is handed to the subject's
//! handler whole, as an event. Headers reach handlers through
//! [`Context::nats_headers`](crate::Context::nats_headers).

pub use crate::transport::nats::server::{NatsListening, NatsServe};

/// The NATS client library, for connection options ([`NatsServe::with_client`]).
pub use async_nats;
