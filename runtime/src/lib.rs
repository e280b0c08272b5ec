//! Runtime of [nestling](https://docs.rs/nestling): NestJS's TCP microservice wire in Rust.
//!
//! Most users depend on the `nestling` facade crate, which re-exports everything here
//! together with the attribute macros. The modules mirror the protocol's layers:
//!
//! * [`codec`]: `<len>#<json>` framing, where `len` counts UTF-16 units;
//! * [`packet`]: request, event and response JSON objects;
//! * [`Pattern`]: message patterns and Nest's pattern normalisation;
//! * [`Server`] and [`Client`]: the two ends of a connection.
//!
//! The crate denies unsafe code, except for two fenced exceptions: reading a frame the codec
//! has already validated as UTF-8 as `&str` without checking it again, which the codec's
//! proptests and fuzz target cover; and, on glibc, calling `malloc_trim` once a connection
//! closed with a large reply queue (`transport/tcp/release.rs`).

#![deny(missing_docs)]
#![deny(unsafe_code)]
// docs.rs (`--cfg docsrs`, nightly): each feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
pub mod codec;
mod context;
#[cfg(feature = "contracts")]
pub mod contracts;
mod error;
pub mod filter;
mod handler;
pub mod health;
pub mod hybrid;
mod lifecycle;
mod lone_surrogates;
pub mod middleware;
#[cfg(feature = "nats")]
pub mod nats;
mod observe;
mod outbox;
pub mod packet;
mod params;
mod pattern;
mod pipeline;
mod registry;
#[cfg(feature = "rmq")]
pub mod rmq;
mod router;
mod server;
pub mod status;
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;
pub mod trace;
pub mod transport;
pub mod utf16;
pub mod validation;

#[doc(hidden)]
pub mod __private;

pub use client::{
    Client, ClientBuilder, ReplyStream, DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BUFFERED_STREAM_BYTES, DEFAULT_MAX_IN_FLIGHT_CALLS,
    DEFAULT_MAX_QUEUED_FRAMES,
};
pub use context::Context;
pub use error::{ClientError, RemoteError, RpcException, ServerError, NO_HANDLER_MESSAGE};
pub use handler::{
    HandlerEntry, HandlerFailure, HandlerFn, HandlerFuture, HandlerKind, HandlerNowFn,
    HandlerOutcome, Instance, IntoRpcError, Reply, ReplyStream as HandlerReplyStream, Request,
};
pub use lifecycle::{HookFuture, Lifecycle, LifecycleHooks};
pub use middleware::BoxError;
pub use params::{FromField, Parse};
pub use pattern::{IntoPattern, Pattern};
pub use registry::{all_controllers, Controller, ControllerEntry, ControllerMeta, HandlerMeta};
pub use server::{
    Server, ServerBuilder, ServerConfig, DEFAULT_INCOMPLETE_FRAME_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MEMORY_BUDGET, DEFAULT_MEMORY_BUDGET_GRACE,
    DEFAULT_REPLY_HIGH_WATER, DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_STALL_TIMEOUT,
};
pub use transport::tcp::Listening;
