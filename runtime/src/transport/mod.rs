//! Transports: how packets reach the dispatch core and how replies leave it.
//!
//! A transport is a plug-in, as Nest's `CustomTransportStrategy` (server) and `ClientProxy`
//! (client) are: the server side hands every inbound packet to the core, the
//! [`Dispatcher`], with a [`ReplySink`] for replies that come
//! later; the client side sends requests and events and resolves replies by id. TCP, NATS and
//! RabbitMQ are implementations of this interface; they import the core, never the other
//! way round.

#[cfg(feature = "nats")]
pub(crate) mod nats;
#[cfg(feature = "rmq")]
pub(crate) mod rmq;
pub(crate) mod tcp;

mod client;
mod server;

pub use crate::codec::FrameText;
pub use crate::pipeline::{Completion, Dispatcher, Inbox, Origin, ReplySink, Subscription};
pub use client::{ClientConnector, ClientTransport, ReplyRouter, TransportFuture};
pub use server::{Shutdown, Transport};
