//! Nest's `Transport.NATS`: one packet per NATS message, subjects named by patterns.
pub(crate) mod client;
pub(crate) mod server;
