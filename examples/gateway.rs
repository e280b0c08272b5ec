//! The tutorial's HTTP gateway ("main" app), in Rust with axum.
//!
//! NestJS original (microservice-test-main):
//!
//! ```ts
//! @Get('sum')
//! calc(@Query('num') str) {
//!   const numArr = str.split(',').map(item => parseInt(item));
//!   this.userClient.emit('log', '求和1111');
//!   return this.userClient.send('sum', numArr);
//! }
//! ```
//!
//! Run: `cargo run --example gateway`, then `curl 'http://127.0.0.1:3000/sum?num=1,2,3'`.
//! `GET /health` pings the user service (a real round trip, see `nestling::health`) and
//! answers as `@nestjs/terminus` does: `200 {"status":"ok","info":{"user":{"status":"up",
//! "latency_ms":…}},"error":{},"details":{…}}`, or `503` with the service under `error`.
//! Env: `PORT` (3000), `USER_SERVICE_HOST` (127.0.0.1), `USER_SERVICE_PORT` (8888),
//! `REQUEST_TIMEOUT_MS` (10000), `HEALTH_TIMEOUT_MS` (1000). With
//! `NATS_URL=nats://127.0.0.1:4222` the same client calls the user service (Rust or Nest,
//! one instance or a queue group) over NATS; with
//! `USER_SERVICE_URL=amqp://127.0.0.1:5672?queue=user_service`, over RabbitMQ (any address
//! the client takes works there).

use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use nestling::{Client, ClientError};
use serde::Deserialize;

/// The user service's patterns, declared for the client (it may be NestJS or nestling).
#[nestling::client]
pub trait UserService {
    /// Adds up the numbers.
    #[message_pattern("sum")]
    async fn sum(nums: Vec<i64>) -> i64;

    /// Logs a line on the service.
    #[event_pattern("log")]
    async fn log(text: String);

    /// Which instance answered.
    #[message_pattern("whoami")]
    async fn whoami() -> String;
}

#[derive(Deserialize)]
struct SumQuery {
    num: Option<String>,
}

/// Parses `1,2,3`. Unlike the Nest original (`parseInt` → `NaN` → `null`), a bad number is a
/// client error with a message rather than a silent wrong sum.
fn parse_numbers(raw: &str) -> Result<Vec<i64>, String> {
    raw.split(',')
        .map(|item| {
            item.trim().parse::<i64>().map_err(|_| {
                format!("num must be a comma-separated list of integers, e.g. num=1,2,3; {item:?} is not an integer")
            })
        })
        .collect()
}

fn service_error(e: ClientError) -> (StatusCode, String) {
    let status = match &e {
        ClientError::Connect { .. }
        | ClientError::Unavailable { .. }
        | ClientError::ConnectTimeout { .. }
        | ClientError::ConnectionClosed { .. }
        | ClientError::NoResponders { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ClientError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, format!("user service error: {e}"))
}

async fn sum(
    State(users): State<UserServiceClient>,
    Query(q): Query<SumQuery>,
) -> Result<String, (StatusCode, String)> {
    let raw = q.num.ok_or((
        StatusCode::BAD_REQUEST,
        "missing query parameter num, e.g. /sum?num=1,2,3".to_string(),
    ))?;
    let nums = parse_numbers(&raw).map_err(|m| (StatusCode::BAD_REQUEST, m))?;
    users
        .log("求和1111".to_string())
        .await
        .map_err(service_error)?;
    let total = users.sum(nums).await.map_err(service_error)?;
    Ok(total.to_string())
}

async fn whoami(State(users): State<UserServiceClient>) -> Result<String, (StatusCode, String)> {
    users.whoami().await.map_err(service_error)
}

/// `GET /health`: terminus' shape and status codes.
async fn health(
    client: Client,
    timeout: Duration,
) -> (StatusCode, Json<nestling::health::HealthReport>) {
    let report = nestling::health::check([("user", &client)], timeout).await;
    let status = StatusCode::from_u16(report.http_status()).unwrap_or(StatusCode::OK);
    (status, Json(report))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
    // A `nats://` or `amqp://…?queue=…` address selects that transport; nothing else changes.
    let service = std::env::var("USER_SERVICE_URL")
        .or_else(|_| std::env::var("NATS_URL"))
        .unwrap_or_else(|_| {
            format!(
                "{}:{}",
                env("USER_SERVICE_HOST", "127.0.0.1"),
                env("USER_SERVICE_PORT", "8888")
            )
        });
    let timeout_ms: u64 = env("REQUEST_TIMEOUT_MS", "10000").parse()?;
    let health_timeout = Duration::from_millis(env("HEALTH_TIMEOUT_MS", "1000").parse()?);
    // Like Nest's ClientsModule the connection opens on first use; unlike Nest, a dead
    // service fails fast instead of hanging the HTTP request.
    let client = Client::builder(service)
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_millis(timeout_ms)))
        .build();
    let pinged = client.clone();
    let app = Router::new()
        .route("/sum", get(sum))
        .route("/whoami", get(whoami))
        .route(
            "/health",
            get(move || health(pinged.clone(), health_timeout)),
        )
        .with_state(UserServiceClient::new(client));
    let listener = tokio::net::TcpListener::bind(format!(
        "{}:{}",
        env("HOST", "127.0.0.1"),
        env("PORT", "3000")
    ))
    .await?;
    println!("READY {}", listener.local_addr()?.port());
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
