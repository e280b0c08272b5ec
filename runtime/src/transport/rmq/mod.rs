//! RabbitMQ (the `rmq` feature): Nest's `ServerRMQ` and `ClientRMQ`, on lapin. The wire
//! is documented in `docs/rmq-wire.md`.

pub(crate) mod address;
pub(crate) mod client;
mod connect;
mod consume;
mod events;
mod message;
pub(crate) mod server;
mod settle;
mod topic;

pub use message::RmqMessage;
