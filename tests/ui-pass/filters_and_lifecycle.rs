//! Every place a filter goes, and a controller with lifecycle hooks, compile and run.

use nestling::filter::{catch, Filter};
use nestling::{BoxError, Lifecycle, RpcException};

#[derive(Debug)]
struct Missing;

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("missing")
    }
}

impl std::error::Error for Missing {}

fn missing() -> Filter {
    catch(|_: &Missing| RpcException::new("missing"))
}

mod filters {
    pub fn everything() -> nestling::filter::Filter {
        nestling::filter::Filter::new(|e| Some(nestling::RpcException::new(e.to_string())))
    }
}

#[derive(Default)]
struct Users;

#[nestling::controller(filter = missing, layer = nestling::middleware::timing, filter = filters::everything)]
impl Users {
    #[message_pattern("user", filter = missing, filter = filters::everything)]
    fn user(&self, id: u32) -> Result<u32, Missing> {
        if id == 0 {
            Err(Missing)
        } else {
            Ok(id)
        }
    }

    #[event_pattern("seen", filter = missing)]
    async fn seen(&self, _id: u32) -> Result<(), Missing> {
        Err(Missing)
    }
}

impl Lifecycle for Users {
    async fn on_start(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let server = nestling::Server::builder()
        .filter(missing())
        .build()
        .unwrap();
    let client = nestling::testing::client(&server);
    let err = client.send::<_, _, u32>("user", &0).await.unwrap_err();
    assert_eq!(err.remote().unwrap().message(), Some("missing"));
    assert_eq!(client.send::<_, _, u32>("user", &3).await.unwrap(), 3);
}
