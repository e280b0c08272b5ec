//! Shared helpers for the integration tests: real processes (NestJS peers from `tests/nest`,
//! the crate's example binaries, `nats-server`), an in-process nestling server, HTTP GET and
//! `tracing` capture.
//!
//! Everything started here is killed when its handle is dropped, also when a test panics; a
//! panicking test additionally gets the process's captured stdout/stderr printed.
//!
//! One file per concern; each imports what it needs from its siblings directly (never
//! through this file), and everything public is re-exported here as `support::<name>`:
//!
//! - `wait`: the tests' timeouts and [`eventually`];
//! - `output`: a process's output stream, line by line ([`Lines`]);
//! - `process`: child processes killed on drop ([`Proc`]);
//! - `node`: Node and the NestJS project in `tests/nest` ([`require_node`], [`spawn_node`],
//!   [`run_nest_client`]);
//! - `examples`: the crate's example binaries ([`example_binary`], [`spawn_example`]);
//! - `server`: an in-process nestling server ([`RunningServer`]);
//! - `http`: HTTP GET against a gateway ([`http_get`]);
//! - `logs`: `tracing` to the test output or into a buffer ([`init_tracing`],
//!   [`capture_tracing`]);
//! - `memory`: a process's resident memory ([`rss_kib`], [`RssPeak`]);
//! - [`nats`]: `nats-server` and the NestJS peers in NATS mode (used as `support::nats::…`);
//! - [`rmq`]: a `rabbitmq-server` node and the NestJS peers in RMQ mode (`support::rmq::…`).

#![allow(dead_code)]

mod examples;
mod http;
mod logs;
mod memory;
mod node;
mod output;
mod process;
mod server;
mod wait;

pub mod nats;
pub mod rmq;

// Each test binary uses only some of these re-exports, hence the `allow`s.
#[allow(unused_imports)]
pub use examples::{example_binary, spawn_example, start_example};
#[allow(unused_imports)]
pub use http::{http_get, http_get_within, HttpResponse};
#[allow(unused_imports)]
pub use logs::{capture_tracing, init_tracing, LogCapture, LogCaptureWriter};
#[allow(unused_imports)]
pub use memory::{rss_kib, RssPeak};
#[allow(unused_imports)]
pub use node::{nest_dir, require_node, run_nest_client, run_nest_client_env, spawn_node};
#[allow(unused_imports)]
pub use output::Lines;
#[allow(unused_imports)]
pub use process::Proc;
#[allow(unused_imports)]
pub use server::RunningServer;
#[allow(unused_imports)]
pub use wait::{eventually, READY_TIMEOUT, WAIT_TIMEOUT};
