//! `#[nestling::client]` traits, with and without `&self`.

// `#[nestling::client]` does not re-emit the trait, so imports used only in its
// declarations (the stream types, the error type) look unused to rustc.
#[allow(unused_imports)]
use futures_util::stream::{BoxStream, Stream};
#[allow(unused_imports)]
use nestling::RpcException;
use nestling::{ClientError, ReplyStream};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct User {
    id: u64,
}

/// The NestJS user service.
#[nestling::client]
pub trait UserService {
    /// Adds up the numbers.
    #[message_pattern("sum")]
    async fn sum(nums: Vec<i64>) -> i64;

    #[event_pattern("log")]
    async fn log(text: String);

    #[message_pattern({ cmd: "user", v: 1 })]
    async fn user(&self, id: u64) -> Result<User, RpcException>;

    #[message_pattern("ping")]
    async fn ping(&self);

    #[event_pattern("flush")]
    async fn flush(&self);

    #[message_pattern("name")]
    async fn name(&self) -> &str;

    #[message_pattern("count")]
    async fn count(n: u32) -> impl Stream<Item = u32>;

    #[message_pattern("users")]
    async fn users(&self) -> BoxStream<'static, Result<User, RpcException>>;
}

#[nestling::client]
trait Private {
    #[message_pattern(7)]
    fn seven() -> u8;
}

async fn typed(users: &UserServiceClient, p: &PrivateClient) {
    let _: Result<i64, ClientError> = users.sum(vec![1, 2, 3]).await;
    let _: Result<(), ClientError> = users.log("求和1111".to_string()).await;
    let _: Result<User, ClientError> = users.user(1).await;
    let _: Result<(), ClientError> = users.ping().await;
    let _: Result<(), ClientError> = users.flush().await;
    let _: Result<String, ClientError> = users.name().await;
    let _: Result<ReplyStream<u32>, ClientError> = users.count(3).await;
    let _: Result<ReplyStream<User>, ClientError> = users.users().await;
    let _: Result<u8, ClientError> = p.seven().await;
}

fn main() {
    let users = UserServiceClient::new(nestling::Client::new("127.0.0.1:1"));
    let p: PrivateClient = nestling::Client::new("127.0.0.1:1").into();
    let users2 = users.clone();
    let _ = format!("{users2:?}");
    let _ = typed(&users, &p);
}
