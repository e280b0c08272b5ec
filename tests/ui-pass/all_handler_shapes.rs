//! Every handler shape the docs promise compiles, and the generated client has the
//! expected typed signatures.

use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use nestling::{ClientError, Context, ReplyStream, RpcException};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct User {
    id: u64,
    name: String,
}

#[derive(Default)]
pub struct Shapes;

#[nestling::controller]
impl Shapes {
    /// Sync, payload, value.
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    /// Async, no payload.
    #[message_pattern("now")]
    async fn now(&self) -> u64 {
        42
    }

    /// `&Context` only.
    #[message_pattern("whoami")]
    fn whoami(&self, ctx: &Context) -> String {
        ctx.peer_addr().to_string()
    }

    /// `&Context` before the payload.
    #[message_pattern({ cmd: "echo" })]
    async fn echo(&self, ctx: &Context, text: String) -> String {
        format!("{} {text}", ctx.pattern())
    }

    /// Payload before `&Context`, context by value.
    #[message_pattern({ cmd: "echo", v: 2 })]
    async fn echo_v2(&self, text: String, ctx: Context) -> String {
        format!("{} {text}", ctx.pattern())
    }

    /// Fully qualified context type.
    #[message_pattern("qualified")]
    fn qualified(&self, _ctx: &nestling::Context) {}

    /// `()` return, written out.
    #[message_pattern("unit")]
    fn unit(&self, _n: u8) -> () {}

    /// No return type.
    #[event_pattern("log")]
    fn log(&self, text: String) {
        let _ = text;
    }

    /// Async event with context.
    #[event_pattern("log")]
    async fn log_async(&self, _text: String, _ctx: &Context) {}

    /// `Result<(), E>`.
    #[message_pattern("check")]
    fn check(&self, n: i64) -> Result<(), RpcException> {
        if n < 0 {
            Err(RpcException::new("negative"))
        } else {
            Ok(())
        }
    }

    /// `Result<T, RpcException>`.
    #[message_pattern("user")]
    async fn user(&self, id: u64) -> Result<User, RpcException> {
        if id == 0 {
            Err(RpcException::new(serde_json::json!({ "code": 404 })))
        } else {
            Ok(User {
                id,
                name: "ada".into(),
            })
        }
    }

    /// `Result<T, std::io::Error>` (any std error: "Internal server error").
    #[message_pattern("read")]
    fn read(&self, path: String) -> Result<String, std::io::Error> {
        Err(std::io::Error::other(path))
    }

    /// `Result<T, Box<dyn Error + Send + Sync>>` and `String` errors.
    #[message_pattern("boxed")]
    fn boxed(&self) -> Result<u8, Box<dyn std::error::Error + Send + Sync>> {
        Ok(1)
    }
    #[message_pattern("stringly")]
    fn stringly(&self) -> Result<u8, String> {
        Err("no".into())
    }

    /// `Result<(), std::io::Error>` event.
    #[event_pattern("flush")]
    async fn flush(&self) -> Result<(), std::io::Error> {
        Ok(())
    }

    /// `impl Serialize` return.
    #[message_pattern("opaque")]
    fn opaque(&self) -> impl Serialize {
        serde_json::json!({ "ok": true })
    }

    /// `Option<T>` payload (a missing `data` decodes as `None`).
    #[message_pattern("maybe")]
    fn maybe(&self, n: Option<i64>) -> Option<i64> {
        n.map(|n| n * 2)
    }

    /// Tuple payload destructured in the parameter.
    #[message_pattern(42)]
    fn pair(&self, (a, b): (i64, String)) -> (String, i64) {
        (b, a)
    }

    /// `&str` reply: the client gets a `String`.
    #[message_pattern("name")]
    fn name(&self) -> &'static str {
        "shapes"
    }

    /// Streamed reply (`impl Stream<Item = T>`).
    #[message_pattern("count")]
    fn count(&self, n: u32) -> impl Stream<Item = u32> + Send {
        stream::iter(1..=n)
    }

    /// Async handler returning a `BoxStream`.
    #[message_pattern("users")]
    async fn users(&self) -> BoxStream<'static, User> {
        stream::once(async {
            User {
                id: 1,
                name: "ada".into(),
            }
        })
        .boxed()
    }

    /// A stream of `Result`s: an `Err` ends it with Nest's error packet.
    #[message_pattern("fallible")]
    fn fallible(&self) -> impl Stream<Item = Result<u32, RpcException>> {
        stream::iter([Ok(1), Err(RpcException::new("stop"))])
    }

    /// Not a handler: left alone.
    fn helper(&self) -> u8 {
        7
    }
}

/// Never called: checks the generated client's signatures.
#[allow(dead_code)]
async fn typed(c: &ShapesClient) {
    let _: Result<i64, ClientError> = c.sum(vec![1, 2]).await;
    let _: Result<u64, ClientError> = c.now().await;
    let _: Result<String, ClientError> = c.whoami().await;
    let _: Result<String, ClientError> = c.echo("hi".to_string()).await;
    let _: Result<String, ClientError> = c.echo_v2("hi".to_string()).await;
    let _: Result<(), ClientError> = c.qualified().await;
    let _: Result<(), ClientError> = c.unit(1).await;
    let _: Result<(), ClientError> = c.log("x".to_string()).await;
    let _: Result<(), ClientError> = c.log_async("x".to_string()).await;
    let _: Result<(), ClientError> = c.check(1).await;
    let _: Result<User, ClientError> = c.user(1).await;
    let _: Result<String, ClientError> = c.read("/".to_string()).await;
    let _: Result<u8, ClientError> = c.boxed().await;
    let _: Result<u8, ClientError> = c.stringly().await;
    let _: Result<(), ClientError> = c.flush().await;
    let _: Result<serde_json::Value, ClientError> = c.opaque().await;
    let _: Result<Option<i64>, ClientError> = c.maybe(None).await;
    let _: Result<(String, i64), ClientError> = c.pair((1, "a".to_string())).await;
    let _: Result<String, ClientError> = c.name().await;
    let _: Result<ReplyStream<u32>, ClientError> = c.count(3).await;
    let _: Result<ReplyStream<User>, ClientError> = c.users().await;
    let _: Result<ReplyStream<u32>, ClientError> = c.fallible().await;
    let _: &nestling::Client = c.client();
}

fn main() {
    assert_eq!(Shapes.helper(), 7);
    let _client: ShapesClient = nestling::Client::new("127.0.0.1:1").into();
    nestling::Server::builder()
        .discover(false)
        .controller(Shapes)
        .build()
        .expect("no duplicate patterns");
}
