#[nestling::client]
pub trait UserService {
    #[message_pattern("sum")]
    async fn sum(a: Vec<i64>, b: Vec<i64>) -> i64;

    async fn forgot_pattern(text: String);

    #[message_pattern("ctx")]
    async fn with_context(ctx: &nestling::Context);

    #[event_pattern("generic")]
    async fn generic<T>(value: T);

    #[message_pattern(sum)]
    async fn bad_pattern();
}

fn main() {}
