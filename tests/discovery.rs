//! Controllers implementing `Default` are served without being listed; others are not.

use nestling::{Client, Server};

#[derive(Default)]
struct Greeter;

#[nestling::controller]
impl Greeter {
    #[message_pattern("hello")]
    fn hello(&self, name: String) -> String {
        format!("hello {name}")
    }
}

/// No `Default`: discovery cannot build it, so it must be added with its instance.
struct Counter {
    start: i64,
}

#[nestling::controller]
impl Counter {
    #[message_pattern("count")]
    fn count(&self) -> i64 {
        self.start
    }
}

/// The server's handlers, called in-process: routing and discovery are what is tested
/// here, not a socket.
fn serve(builder: nestling::ServerBuilder) -> Client {
    nestling::testing::client(&builder.build().unwrap())
}

#[tokio::test]
async fn default_controllers_are_found_without_listing() {
    let client = serve(Server::builder());
    let s: String = client.send("hello", "nest").await.unwrap();
    assert_eq!(s, "hello nest");
    // Counter has no Default and was not added: not served.
    let e = client.send::<_, _, i64>("count", &()).await.unwrap_err();
    assert!(e.remote().unwrap().is_no_handler(), "{e}");
}

#[tokio::test]
async fn stateful_controllers_are_added_with_their_instance() {
    let client = serve(Server::builder().controller(Counter { start: 41 }));
    let n: i64 = client.send("count", &()).await.unwrap();
    assert_eq!(n, 41);
    let s: String = client.send("hello", "again").await.unwrap();
    assert_eq!(s, "hello again");
}
