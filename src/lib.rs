//! # nestling — NestJS-style microservices for Rust, on NestJS's real TCP wire
//!
//! A NestJS app talks to its microservices with `@nestjs/microservices` over TCP:
//! `@MessagePattern('sum')` answers `client.send('sum', [1, 2, 3])` and `@EventPattern('log')`
//! receives `client.emit('log', '求和1111')`. nestling speaks that exact wire, so a Nest
//! gateway can call a Rust service and a Rust gateway can call a Nest service without either
//! side knowing.
//!
//! | NestJS | nestling |
//! |---|---|
//! | `@Controller()` class | `#[nestling::controller] impl UserController { .. }` |
//! | `@MessagePattern('sum')` | `#[message_pattern("sum")]` on a method |
//! | `@MessagePattern({ cmd: 'sum' })` | `#[message_pattern({ cmd: "sum" })]` |
//! | `@EventPattern('log')` | `#[event_pattern("log")]` |
//! | `@Payload() data` | the method's one payload parameter (any `Deserialize` type) |
//! | `@Ctx() context: TcpContext` | a `&Context` parameter |
//! | `@Payload('id') id`, `@Payload('id', ParseIntPipe) id` | `#[payload("id")] id: T`, `#[payload("id")] Parse(id): Parse<u64>` ([`Parse`]) |
//! | `ValidationPipe` + class-validator DTO (`@UsePipes`, `useGlobalPipes`) | `#[message_pattern("p", validate)]`, `ServerBuilder::validate_payloads(true)` ([`validation`]) |
//! | `throw new RpcException('x')` | return `Err(RpcException::new("x"))` |
//! | `NestFactory.createMicroservice(AppModule, { transport: Transport.TCP, options: { port } })` | `Server::builder().build()?.listen(addr).await?.serve().await` |
//! | `ClientProxy` (`ClientsModule.register`) | [`Client`], or the generated `UserControllerClient` |
//! | `client.send(p, d)` / `client.emit(p, d)` | `client.send(p, &d).await` / `client.emit(p, &d).await` |
//!
//! ## A service
//!
//! ```no_run
//! use nestling::Server;
//!
//! #[derive(Default)]
//! struct UserController;
//!
//! #[nestling::controller]
//! impl UserController {
//!     #[message_pattern("sum")]
//!     fn sum(&self, nums: Vec<i64>) -> i64 {
//!         nums.iter().sum()
//!     }
//!
//!     #[event_pattern("log")]
//!     async fn log(&self, text: String) {
//!         println!("{text}");
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Every controller implementing `Default` is found automatically.
//!     Server::builder().build()?.listen("127.0.0.1:8888").await?.serve().await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Handlers
//!
//! A handler is a method taking `&self`, at most one payload parameter (any
//! `serde::de::DeserializeOwned` type; a missing `data` decodes as `null`), and optionally a
//! `&Context` (pattern, peer address, metadata). It may be `async` or not. It returns any
//! `Serialize` value, `()` (Nest's `undefined`), or `Result<T, E>`: an [`RpcException`] error
//! reaches the caller exactly as Nest sends it; any other error (anything that converts into
//! `Box<dyn Error + Send + Sync>`, `anyhow::Error` included) is sent as Nest's
//! `{"status":"error","message":"Internal server error"}` and logged. A panic is handled the
//! same way and only affects its own request.
//!
//! Because the macro also generates a typed client, payload and reply types need both
//! `Serialize` and `Deserialize` (or write `#[nestling::controller(client = false)]`).
//!
//! ## Clients
//!
//! `#[nestling::controller]` generates `{Name}Client` with one async method per pattern.
//! For a remote service that has no Rust implementation (a NestJS app), declare its patterns
//! in a trait:
//!
//! ```no_run
//! #[nestling::client]
//! pub trait UserService {
//!     #[message_pattern("sum")]
//!     async fn sum(nums: Vec<i64>) -> i64;
//!     #[event_pattern("log")]
//!     async fn log(text: String);
//! }
//!
//! # async fn run() -> Result<(), nestling::ClientError> {
//! let users = UserServiceClient::new(nestling::Client::new("127.0.0.1:8888"));
//! users.log("求和1111".to_string()).await?;
//! assert_eq!(users.sum(vec![1, 2, 3]).await?, 6);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]
#![deny(unsafe_code)]
// docs.rs (`--cfg docsrs`, nightly): each feature-gated item says which feature it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// ```
/// #[derive(Default)]
/// struct UserController;
///
/// #[nestling::controller]
/// impl UserController {
///     #[message_pattern("sum")]
///     fn sum(&self, nums: Vec<i64>) -> i64 {
///         nums.iter().sum()
///     }
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// // Registered automatically (it implements `Default`); `UserControllerClient` is generated.
/// let server = nestling::Server::builder().build()?;
/// let users = UserControllerClient::new(nestling::testing::client(&server));
/// assert_eq!(users.sum(vec![1, 2, 3]).await?, 6);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub use nestling_macros::controller;

/// ```
/// # #[derive(Default)] struct Calc;
/// # #[nestling::controller] impl Calc { #[message_pattern({ cmd: "sum" })] fn sum(&self, n: Vec<i64>) -> i64 { n.iter().sum() } }
/// // A NestJS service's patterns, as its gateway sees them.
/// #[nestling::client]
/// pub trait MathService {
///     #[message_pattern({ cmd: "sum" })]
///     async fn sum(nums: Vec<i64>) -> i64;
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let server = nestling::Server::builder().build()?;
/// # let client = nestling::testing::client(&server);
/// // `client`: a `nestling::Client` of the service (`Client::new("127.0.0.1:8888")`).
/// let math = MathServiceClient::new(client);
/// assert_eq!(math.sum(vec![4, 5]).await?, 9);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub use nestling_macros::client;

/// ```
/// # #[derive(Default)] struct Math;
/// #[nestling::controller]
/// impl Math {
///     #[message_pattern("sum")]                 // @MessagePattern('sum')
///     fn sum(&self, nums: Vec<i64>) -> i64 { nums.iter().sum() }
///
///     #[message_pattern({ cmd: "max" })]        // @MessagePattern({ cmd: 'max' })
///     async fn max(&self, nums: Vec<i64>) -> Option<i64> { nums.into_iter().max() }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let client = nestling::testing::client(&nestling::Server::builder().build()?);
/// let max: Option<i64> = client.send(serde_json::json!({ "cmd": "max" }), &[3, 9, 4]).await?;
/// assert_eq!(max, Some(9));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub use nestling_macros::message_pattern;

/// ```
/// # #[derive(Default)] struct Audit;
/// #[nestling::controller]
/// impl Audit {
///     #[event_pattern("user_created")]          // @EventPattern('user_created')
///     async fn user_created(&self, id: u64) {
///         println!("user {id} created");
///     }
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let client = nestling::testing::client(&nestling::Server::builder().build()?);
/// client.emit("user_created", &42).await?;       // client.emit('user_created', 42)
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub use nestling_macros::event_pattern;
pub use nestling_runtime::{
    codec, middleware, packet, Client, ClientBuilder, ClientError, Context, Controller,
    HandlerFailure, IntoPattern, IntoRpcError, Listening, Pattern, RemoteError, Reply, ReplyStream,
    Request, RpcException, Server, ServerBuilder, ServerConfig, ServerError, NO_HANDLER_MESSAGE,
};

/// TLS settings for servers and clients (the `tls` feature, on by default): Nest's
/// `tlsOptions`.
#[cfg(feature = "tls")]
pub use nestling_runtime::tls;

pub use nestling_runtime::trace;

/// Payload validation (Nest's `ValidationPipe` with class-validator DTOs): rules derived
/// with `validator` or `garde` (features `validator`, `garde`), answered with Nest's 400.
pub use nestling_runtime::validation;

/// Parameters taking one property of the payload (Nest's `@Payload('id')`), and parsing it
/// from a string (`ParseIntPipe`).
pub use nestling_runtime::{FromField, Parse};

/// Exception filters (Nest's `@Catch` + `@UseFilters` / `useGlobalFilters`): map your
/// error types to the replies callers get, once.
pub use nestling_runtime::filter;

/// Lifecycle hooks (Nest's `onModuleInit` / `onApplicationShutdown`) of controllers.
pub use nestling_runtime::{BoxError, Lifecycle};

/// Hybrid apps (Nest's `connectMicroservice` + `startAllMicroservices` + `listen`): HTTP and
/// several transports in one process, one graceful shutdown.
pub use nestling_runtime::hybrid;

/// In-process clients of a server for unit tests (Nest's `Test.createTestingModule`): the
/// whole pipeline, no socket.
pub use nestling_runtime::testing;

/// Connection status and error events of clients and servers (Nest 11's `status` and
/// `on('error', …)`).
pub use nestling_runtime::status;

/// Health checks (`@nestjs/terminus`' microservice indicator, with a real round trip): the
/// opt-in ping pattern, `Client::ping` and terminus-shaped reports.
pub use nestling_runtime::health;

/// The transport interface (Nest's `CustomTransportStrategy` and `ClientProxy`): serve and
/// call over a transport of your own.
pub use nestling_runtime::transport;

/// NATS transport (the `nats` feature): the same controllers and clients over NATS, wire
/// compatible with Nest's `Transport.NATS`, with queue groups for scale-out.
#[cfg(feature = "nats")]
pub use nestling_runtime::nats;

/// RabbitMQ transport (the `rmq` feature): the same controllers and clients over Nest's
/// `Transport.RMQ`, competing consumers on one queue, acknowledged after the handler.
#[cfg(feature = "rmq")]
pub use nestling_runtime::rmq;

/// TypeScript contracts for the Nest side (the `contracts` feature): what
/// `#[nestling::controller(contracts)]` registers, rendered as one TypeScript module.
#[cfg(feature = "contracts")]
pub use nestling_runtime::contracts;

/// Lower-level pieces: the handler interface and registry the macros generate code for.
pub mod runtime {
    pub use nestling_runtime::*;
}

#[doc(hidden)]
pub use nestling_runtime::__private;
