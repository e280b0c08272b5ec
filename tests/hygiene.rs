//! The macros' output must compile where nothing is in scope: every path they generate
//! is absolute (`::nestling::__private::…`, `::core::…`). The controller and the client
//! trait below live in a `#![no_implicit_prelude]` module (no std prelude, no extern
//! prelude), and are then exercised over a real socket.

mod hygiene {
    #![no_implicit_prelude]

    /// A controller touching every generated code path: sync/async, payload or not,
    /// `&Context` and `Context`, `()` / value / `impl Serialize` / `Result` returns,
    /// object patterns, events.
    #[derive(::core::default::Default)]
    pub struct Hygienic {
        events: ::std::sync::Mutex<::std::vec::Vec<::std::string::String>>,
    }

    #[::nestling::controller]
    impl Hygienic {
        #[message_pattern("sum")]
        fn sum(&self, nums: ::std::vec::Vec<i64>) -> i64 {
            ::core::iter::Iterator::sum(nums.iter())
        }

        #[message_pattern({ cmd: "sum", v: 2 })]
        async fn sum_v2(&self, nums: ::std::vec::Vec<i64>) -> i64 {
            ::core::iter::Iterator::sum::<i64>(nums.iter()) * 100
        }

        #[message_pattern("whoami")]
        fn whoami(&self, ctx: &::nestling::Context) -> ::std::string::String {
            ctx.pattern()
        }

        #[message_pattern("owned_ctx")]
        async fn owned_ctx(&self, n: ::core::option::Option<u8>, ctx: ::nestling::Context) -> u8 {
            let _ = ctx.peer_addr();
            ::core::option::Option::unwrap_or(n, 0)
        }

        #[message_pattern("nothing")]
        fn nothing(&self) {}

        #[message_pattern("fail")]
        fn fail(&self, bad: bool) -> ::core::result::Result<i64, ::nestling::RpcException> {
            if bad {
                ::core::result::Result::Err(::nestling::RpcException::new("bad thing"))
            } else {
                ::core::result::Result::Ok(1)
            }
        }

        #[message_pattern("check")]
        async fn check(&self, n: i64) -> ::core::result::Result<(), ::std::io::Error> {
            if n < 0 {
                ::core::result::Result::Err(::std::io::Error::other("negative"))
            } else {
                ::core::result::Result::Ok(())
            }
        }

        #[message_pattern("opaque")]
        fn opaque(&self) -> impl ::serde::Serialize {
            (1u8, "two")
        }

        #[message_pattern("events")]
        fn events(&self) -> ::std::vec::Vec<::std::string::String> {
            match self.events.lock() {
                ::core::result::Result::Ok(events) => ::core::clone::Clone::clone(&*events),
                ::core::result::Result::Err(_) => ::std::vec::Vec::new(),
            }
        }

        #[event_pattern("log")]
        async fn log(&self, text: ::std::string::String) {
            if let ::core::result::Result::Ok(mut events) = self.events.lock() {
                events.push(text);
            }
        }

        #[message_pattern("count")]
        fn count(&self, n: u32) -> impl ::futures_util::Stream<Item = u32> {
            ::futures_util::stream::iter(1..=n)
        }

        #[message_pattern("count_or_fail")]
        async fn count_or_fail(
            &self,
            n: u32,
        ) -> ::futures_util::stream::BoxStream<
            'static,
            ::core::result::Result<u32, ::nestling::RpcException>,
        > {
            let items = ::core::iter::Iterator::chain(
                ::core::iter::Iterator::map(1..=n, ::core::result::Result::Ok),
                [::core::result::Result::Err(::nestling::RpcException::new(
                    "stream broke",
                ))],
            );
            ::futures_util::StreamExt::boxed(::futures_util::stream::iter(items))
        }

        /// Not a handler.
        pub fn helper(&self) -> u8 {
            7
        }
    }

    /// The same service seen as a remote one.
    #[::nestling::client]
    pub trait Remote {
        #[message_pattern({ v: 2, cmd: "sum" })]
        async fn sum_v2(nums: ::std::vec::Vec<i64>) -> i64;

        #[message_pattern("whoami")]
        async fn whoami(&self) -> &str;

        #[message_pattern("fail")]
        async fn fail(bad: bool) -> ::core::result::Result<i64, ::nestling::RpcException>;

        #[event_pattern("log")]
        async fn log(text: ::std::string::String);

        #[message_pattern("count")]
        async fn count(n: u32) -> impl ::futures_util::Stream<Item = u32>;
    }
}

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hygiene::{Hygienic, HygienicClient, RemoteClient};
use nestling::{Client, ClientError, Server};

#[tokio::test]
async fn macros_expand_under_no_implicit_prelude() -> Result<(), Box<dyn std::error::Error>> {
    assert_eq!(Hygienic::default().helper(), 7);

    let listening = Server::builder()
        .discover(false)
        .controller(Hygienic::default())
        .build()?
        .listen("127.0.0.1:0")
        .await?;
    let addr = listening.local_addr().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(listening.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    let client = Client::new(addr);
    let typed = HygienicClient::new(client.clone());
    let remote = RemoteClient::from(client.clone());

    assert_eq!(typed.sum(vec![1, 2, 3]).await?, 6);
    assert_eq!(typed.sum_v2(vec![1, 2]).await?, 300);
    // Object keys in another order reach the same handler (Nest sorts them).
    assert_eq!(remote.sum_v2(vec![1, 2]).await?, 300);
    assert_eq!(typed.whoami().await?, "whoami");
    assert_eq!(remote.whoami().await?, "whoami");
    assert_eq!(typed.owned_ctx(Some(5)).await?, 5);
    assert_eq!(typed.owned_ctx(None).await?, 0);
    typed.nothing().await?;
    assert_eq!(typed.fail(false).await?, 1);
    match remote.fail(true).await {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(error.message(), Some("bad thing"))
        }
        other => panic!("expected the RpcException, got {other:?}"),
    }
    typed.check(1).await?;
    match typed.check(-1).await {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(error.message(), Some("Internal server error"))
        }
        other => panic!("expected Internal server error, got {other:?}"),
    }
    assert_eq!(typed.opaque().await?, serde_json::json!([1, "two"]));

    let counted: Vec<u32> = typed
        .count(3)
        .await?
        .map(|item| item.expect("stream item"))
        .collect()
        .await;
    assert_eq!(counted, [1, 2, 3]);
    let counted: Vec<u32> = remote
        .count(2)
        .await?
        .map(|item| item.expect("stream item"))
        .collect()
        .await;
    assert_eq!(counted, [1, 2]);
    let items: Vec<Result<u32, ClientError>> = typed.count_or_fail(2).await?.collect().await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().ok(), Some(&1));
    assert_eq!(items[1].as_ref().ok(), Some(&2));
    match &items[2] {
        Err(ClientError::Remote { error, .. }) => {
            assert_eq!(error.message(), Some("stream broke"))
        }
        other => panic!("expected the stream's RpcException, got {other:?}"),
    }

    typed.log("from typed".to_string()).await?;
    remote.log("from remote".to_string()).await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut events = typed.events().await?;
        events.sort();
        if events == ["from remote", "from typed"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events not delivered: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    client.close();
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server).await???;
    Ok(())
}
