//! Health checks, in the spirit of `@nestjs/terminus`' `MicroserviceHealthIndicator`, but
//! doing a real round trip rather than only a connect.
//!
//! * A service opts into answering [`HEALTH_PATTERN`] (`{"cmd":"nestling.health"}`, a
//!   nestling convention: Nest has none) with [`ServerBuilder::health`](crate::ServerBuilder::health).
//! * A caller measures a round trip with [`Client::ping`](crate::Client::ping), and [`check`]
//!   pings several upstreams at once into a [`HealthReport`] in terminus' JSON shape, ready
//!   for a gateway's `GET /health` (HTTP 200, or 503 when one is down).
//!
//! A ping works against **any** Nest service, with or without the pattern: over TCP and
//! RabbitMQ a service without it answers Nest's "There is no matching message handler
//! defined in the remote service." — which still proves a full round trip through the
//! service, so it counts as up (the indicator then shows `"health_pattern": false`). Any
//! other error the service answers with (a guard's rejection, say) counts as up too. Over
//! NATS nobody answers a subject nobody subscribes, so a service without the pattern is
//! reported down ([`ClientError::NoResponders`]): serve the pattern, or ping one of the
//! service's own patterns with [`Client::ping_pattern`](crate::Client::ping_pattern).
//!
//! ```
//! use std::time::Duration;
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let listening = nestling::Server::builder().discover(false).health().build().unwrap()
//!     .listen("127.0.0.1:0").await.unwrap();
//! let users = nestling::Client::new(listening.local_addr().to_string());
//! tokio::spawn(listening.serve());
//!
//! let report = nestling::health::check([("users", &users)], Duration::from_secs(1)).await;
//! assert!(report.is_ok());
//! assert_eq!(report.http_status(), 200);
//! let json = serde_json::to_value(&report).unwrap();
//! assert_eq!(json["status"], "ok");
//! assert_eq!(json["info"]["users"]["status"], "up");
//! assert_eq!(json["error"], serde_json::json!({}));
//! # });
//! ```

use std::any::TypeId;
use std::time::{Duration, Instant};

use serde::ser::SerializeMap;
use serde::Serialize;

use crate::error::ClientError;
use crate::handler::{HandlerEntry, HandlerKind, HandlerOutcome, Instance, Reply, Request};
use crate::registry::{Controller, ControllerMeta, HandlerMeta};
use crate::Client;

/// The pattern a service answers with `{"status":"up"}` once it opted in with
/// [`ServerBuilder::health`](crate::ServerBuilder::health), as JSON. A Nest service can
/// answer it too: `@MessagePattern({ cmd: 'nestling.health' }) health() { return { status: 'up' }; }`.
///
/// ```
/// let pattern: serde_json::Value = serde_json::from_str(nestling::health::HEALTH_PATTERN).unwrap();
/// assert_eq!(pattern, serde_json::json!({"cmd": "nestling.health"}));
/// ```
pub const HEALTH_PATTERN: &str = r#"{"cmd":"nestling.health"}"#;

/// What a service serving [`HEALTH_PATTERN`] answers.
const UP: &[u8] = br#"{"status":"up"}"#;

/// The controller behind [`ServerBuilder::health`](crate::ServerBuilder::health): one
/// message handler for [`HEALTH_PATTERN`], answering `{"status":"up"}`. Global layers
/// (guards) apply to it like to any handler.
///
/// ```
/// let server = nestling::Server::builder()
///     .controller(nestling::health::HealthController)
///     .build()
///     .unwrap();
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthController;

fn answer_up(_: &Instance, _: &Request) -> HandlerOutcome {
    Ok(Reply::Value(Some(UP.to_vec())))
}

static HANDLERS: [HandlerMeta; 1] = [HandlerMeta {
    kind: HandlerKind::Message,
    pattern: HEALTH_PATTERN,
    method: "health",
    line: line!(),
    entry: HandlerEntry::Now {
        call: answer_up,
        decodes_data: false,
    },
    layers: &[],
    validated: None,
    filters: &[],
}];

static META: ControllerMeta = ControllerMeta {
    name: "HealthController",
    file: file!(),
    type_id: TypeId::of::<HealthController>,
    // Never discovered (not submitted): served only when asked for.
    auto: || None,
    handlers: &HANDLERS,
    layers: &[],
    filters: &[],
    lifecycle: || None,
};

impl Controller for HealthController {
    fn meta() -> &'static ControllerMeta {
        &META
    }
}

impl crate::ServerBuilder {
    /// Answers health pings: serves [`HEALTH_PATTERN`] (`{"cmd":"nestling.health"}`) with
    /// `{"status":"up"}` (the [`HealthController`]), for [`Client::ping`] and
    /// [`check`]. Off unless called.
    ///
    /// ```
    /// let server = nestling::Server::builder().health().build().unwrap();
    /// ```
    pub fn health(self) -> Self {
        self.controller(HealthController)
    }
}

/// A round trip measured by [`Client::ping`].
///
/// ```
/// let ping = nestling::health::Ping { latency: std::time::Duration::from_micros(250), health_pattern: true };
/// assert_eq!(ping.latency_ms(), 0.25);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// From sending the request to its reply.
    pub latency: Duration,
    /// Whether the service answered the health pattern itself (`false`: it answered with
    /// an error, such as Nest's no-handler reply, which proves the round trip all the same).
    pub health_pattern: bool,
}

impl Ping {
    /// [`latency`](Self::latency) in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        self.latency.as_secs_f64() * 1e3
    }
}

impl Client {
    /// Sends [`HEALTH_PATTERN`] and measures the round trip (at most `timeout`; `None`:
    /// the client's request timeout). Any answer proves the service up, an error answer
    /// included (Nest's "no matching message handler" from a service without the pattern);
    /// `Err` when nothing answered: not connected, timed out, no responders (NATS).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ClientError> {
    /// let users = nestling::Client::new("127.0.0.1:8888"); // NestJS or nestling
    /// let ping = users.ping(Some(std::time::Duration::from_secs(1))).await?;
    /// println!("user service: up, {:.2} ms", ping.latency_ms());
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self, timeout: Option<Duration>) -> Result<Ping, ClientError> {
        let pattern: serde_json::Value =
            serde_json::from_str(HEALTH_PATTERN).expect("the health pattern is JSON");
        self.ping_pattern(pattern, timeout).await
    }

    /// [`ping`](Self::ping) on a pattern of your choice (sent with `null` data): for Nest
    /// services over NATS that do not serve [`HEALTH_PATTERN`], ping a cheap pattern they do
    /// serve.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), nestling::ClientError> {
    /// let users = nestling::Client::new("nats://127.0.0.1:4222");
    /// let ping = users.ping_pattern("whoami", Some(std::time::Duration::from_secs(1))).await?;
    /// # Ok(()) }
    /// ```
    pub async fn ping_pattern(
        &self,
        pattern: impl crate::IntoPattern,
        timeout: Option<Duration>,
    ) -> Result<Ping, ClientError> {
        let started = Instant::now();
        let answer = self
            .send_with_timeout::<_, _, serde_json::Value>(pattern, &(), timeout)
            .await;
        let latency = started.elapsed();
        match answer {
            Ok(value) => Ok(Ping {
                latency,
                health_pattern: value == serde_json::json!({"status": "up"}),
            }),
            Err(ClientError::Remote { .. }) => Ok(Ping {
                latency,
                health_pattern: false,
            }),
            Err(e) => Err(e),
        }
    }
}

/// One upstream's state in a [`HealthReport`] (terminus' `HealthIndicatorResult` entry):
/// `{"status":"up","latency_ms":0.42,"health_pattern":true}` or
/// `{"status":"down","message":"…"}`.
///
/// ```
/// let down = nestling::health::Indicator::down("connection refused");
/// assert_eq!(
///     serde_json::to_value(&down).unwrap(),
///     serde_json::json!({"status": "down", "message": "connection refused"})
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Indicator {
    /// `"up"` or `"down"`.
    pub status: IndicatorStatus,
    /// The round trip, in milliseconds, when up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// Whether the upstream answered [`HEALTH_PATTERN`] itself, when up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_pattern: Option<bool>,
    /// Why it is down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Indicator {
    /// An upstream that answered `ping`.
    ///
    /// ```
    /// use nestling::health::{Indicator, IndicatorStatus, Ping};
    /// let up = Indicator::up(Ping { latency: std::time::Duration::from_millis(2), health_pattern: false });
    /// assert_eq!(up.status, IndicatorStatus::Up);
    /// ```
    pub fn up(ping: Ping) -> Self {
        Indicator {
            status: IndicatorStatus::Up,
            latency_ms: Some(ping.latency_ms()),
            health_pattern: Some(ping.health_pattern),
            message: None,
        }
    }

    /// An upstream that did not answer, for `reason`.
    ///
    /// ```
    /// assert_eq!(nestling::health::Indicator::down("timeout").message.as_deref(), Some("timeout"));
    /// ```
    pub fn down(reason: impl Into<String>) -> Self {
        Indicator {
            status: IndicatorStatus::Down,
            latency_ms: None,
            health_pattern: None,
            message: Some(reason.into()),
        }
    }

    /// Whether the upstream is up.
    ///
    /// ```
    /// assert!(!nestling::health::Indicator::down("timeout").is_up());
    /// ```
    pub fn is_up(&self) -> bool {
        self.status == IndicatorStatus::Up
    }
}

/// `"up"` or `"down"`, as terminus writes them.
///
/// ```
/// assert_eq!(serde_json::to_value(nestling::health::IndicatorStatus::Up).unwrap(), "up");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IndicatorStatus {
    /// Answered.
    Up,
    /// Did not answer.
    Down,
}

/// The result of [`check`], serialised as terminus' `HealthCheckResult`:
/// `{"status":"ok"|"error","info":{…up…},"error":{…down…},"details":{…all…}}`, each
/// upstream under its name, in the order given.
///
/// ```
/// use nestling::health::{HealthReport, Indicator};
/// let report = HealthReport::from_indicators([("users", Indicator::down("connection refused"))]);
/// assert_eq!(report.http_status(), 503);
/// assert_eq!(
///     serde_json::to_value(&report).unwrap(),
///     serde_json::json!({
///         "status": "error",
///         "info": {},
///         "error": {"users": {"status": "down", "message": "connection refused"}},
///         "details": {"users": {"status": "down", "message": "connection refused"}},
///     })
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// Each upstream's name and state, in the order checked.
    pub details: Vec<(String, Indicator)>,
}

impl HealthReport {
    /// A report of these indicators (for checks of your own besides [`check`]'s pings).
    pub fn from_indicators<N: Into<String>>(
        indicators: impl IntoIterator<Item = (N, Indicator)>,
    ) -> Self {
        HealthReport {
            details: indicators
                .into_iter()
                .map(|(name, indicator)| (name.into(), indicator))
                .collect(),
        }
    }

    /// Whether every upstream is up (terminus' `"status":"ok"`).
    ///
    /// ```
    /// assert!(nestling::health::HealthReport::from_indicators::<&str>([]).is_ok());
    /// ```
    pub fn is_ok(&self) -> bool {
        self.details.iter().all(|(_, i)| i.is_up())
    }

    /// The HTTP status terminus answers with: 200 when all are up, 503 otherwise.
    ///
    /// ```
    /// assert_eq!(nestling::health::HealthReport::from_indicators::<&str>([]).http_status(), 200);
    /// ```
    pub fn http_status(&self) -> u16 {
        if self.is_ok() {
            200
        } else {
            503
        }
    }
}

impl Serialize for HealthReport {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Only<'a>(&'a [(String, Indicator)], Option<bool>);
        impl Serialize for Only<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let chosen = self
                    .0
                    .iter()
                    .filter(|(_, i)| self.1.is_none_or(|up| i.is_up() == up));
                serializer.collect_map(chosen.map(|(name, i)| (name, i)))
            }
        }
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("status", if self.is_ok() { "ok" } else { "error" })?;
        map.serialize_entry("info", &Only(&self.details, Some(true)))?;
        map.serialize_entry("error", &Only(&self.details, Some(false)))?;
        map.serialize_entry("details", &Only(&self.details, None))?;
        map.end()
    }
}

/// Pings every upstream at once (each within `timeout`) and reports them as terminus
/// does; see the [module](self) for what counts as up.
///
/// ```no_run
/// # async fn run() {
/// use std::time::Duration;
/// let users = nestling::Client::new("127.0.0.1:8888");
/// let orders = nestling::Client::new("amqp://127.0.0.1:5672?queue=orders");
/// let report = nestling::health::check([("users", &users), ("orders", &orders)], Duration::from_secs(1)).await;
/// println!("{} {}", report.http_status(), serde_json::to_string(&report).unwrap());
/// # }
/// ```
pub async fn check<'a, N>(
    upstreams: impl IntoIterator<Item = (N, &'a Client)>,
    timeout: Duration,
) -> HealthReport
where
    N: Into<String>,
{
    let pings = upstreams.into_iter().map(|(name, client)| async move {
        let indicator = match client.ping(Some(timeout)).await {
            Ok(ping) => Indicator::up(ping),
            Err(e) => Indicator::down(e.to_string()),
        };
        (name, indicator)
    });
    HealthReport::from_indicators(futures_util::future::join_all(pings).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_have_terminus_shape_in_the_order_given() {
        let up = Indicator::up(Ping {
            latency: Duration::from_micros(1500),
            health_pattern: true,
        });
        let report = HealthReport::from_indicators([
            ("zeta", up.clone()),
            ("alpha", Indicator::down("timed out")),
        ]);
        assert!(!report.is_ok());
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"status":"error","info":{"zeta":{"status":"up","latency_ms":1.5,"health_pattern":true}},"error":{"alpha":{"status":"down","message":"timed out"}},"details":{"zeta":{"status":"up","latency_ms":1.5,"health_pattern":true},"alpha":{"status":"down","message":"timed out"}}}"#
        );
        let ok = HealthReport::from_indicators([("zeta", up)]);
        assert_eq!(ok.http_status(), 200);
        assert!(serde_json::to_string(&ok)
            .unwrap()
            .starts_with(r#"{"status":"ok","#));
    }
}
