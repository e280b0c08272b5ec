//! RabbitMQ transport (the `rmq` feature): Nest's `Transport.RMQ`, wire-compatible.
//!
//! The same controllers serve RabbitMQ by configuration alone, and the same
//! [`Client`](crate::Client) calls RabbitMQ services when given an `amqp://` address that
//! names the service's queue:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use nestling::rmq::RmqServe;
//!
//! // One instance of the service; run several on the same queue to share the load.
//! let serving = nestling::Server::builder()
//!     .build()?
//!     .listen_rmq(RmqServe::new("amqp://127.0.0.1:5672", "user_service"))
//!     .await?;
//! tokio::spawn(serving.serve());
//!
//! // A caller: `send`, `emit`, streams and generated typed clients work unchanged.
//! let client = nestling::Client::new("amqp://127.0.0.1:5672?queue=user_service");
//! let sum: i64 = client.send("sum", &[1, 2, 3]).await?;
//! # Ok(()) }
//! ```
//!
//! On the wire, as Nest: a request is `{"pattern":…,"data":…,"id":"…"}` published to the
//! service's queue with `replyTo` (RabbitMQ's direct reply-to, `amq.rabbitmq.reply-to`)
//! and `correlationId` set to the id; replies are Nest's response packets published to
//! `replyTo` with the same `correlationId`; events carry neither. Every instance consuming
//! the queue competes for its messages: each message reaches one instance.
//!
//! **Delivery.** By default a message is acknowledged once its handlers have finished and
//! its replies have been published: an instance that dies mid-handler loses nothing, the
//! broker hands the message to another instance (Nest defaults to `noAck: true`, and with
//! `noAck: false` leaves acknowledging to each handler). A message nothing can handle —
//! not JSON, no `pattern`, no handler for it — is rejected without requeueing, as Nest
//! nacks it, so it goes to the queue's dead-letter exchange if it has one and is never
//! redelivered in a loop; a request among them is still answered with Nest's no-handler
//! error. A payload its handler cannot decode is answered with an error and acknowledged.
//!
//! **Client addresses**: `amqp://user:pass@host:5672/vhost?queue=user_service`, with
//! Nest's `ClientRMQ` options as query parameters: `persistent=true` (messages survive a
//! broker restart), `durable=false` (the queue's declaration), `no_assert=true` (do not
//! declare the queue), `wildcards=true` / `exchange=name` (publish to the exchange with the
//! pattern as routing key), `reply_queue=name` (replies through a queue declared elsewhere,
//! Nest's `replyQueue`, instead of direct reply-to). Other parameters (`heartbeat`, `frame_max`, …) go to lapin.
//!
//! Handlers see the message's properties and routing through
//! [`Context::rmq`](crate::Context::rmq). The wire, captured from real Nest, is in
//! `docs/rmq-wire.md`.

pub use crate::transport::rmq::address::{redact as without_password, RmqAddress};
pub use crate::transport::rmq::client::RmqConnector;
pub use crate::transport::rmq::server::{RmqListening, RmqServe, DEFAULT_PREFETCH_COUNT};
pub use crate::transport::rmq::RmqMessage;

/// The AMQP client library, for queue arguments and exchange kinds.
pub use lapin;
