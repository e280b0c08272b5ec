//! A controller without `Default` is added with its instance; `client = false` and a
//! `crate = ".."` path are accepted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

pub struct Counter {
    step: u64,
    count: AtomicU64,
    log: Mutex<Vec<String>>,
}

#[nestling::controller]
impl Counter {
    #[message_pattern("incr")]
    fn incr(&self) -> u64 {
        self.count.fetch_add(self.step, Ordering::SeqCst) + self.step
    }

    #[event_pattern("note")]
    fn note(&self, text: String) {
        self.log.lock().unwrap().push(text);
    }
}

struct Greeter {
    greeting: String,
}

#[nestling::controller(client = false, crate = "::nestling")]
impl Greeter {
    #[message_pattern("greet")]
    fn greet(&self, name: String) -> String {
        format!("{}, {name}", self.greeting)
    }
}

mod reexport {
    pub use nestling as renamed;
}

struct Renamed;

#[nestling::controller(crate = "crate::reexport::renamed")]
impl Renamed {
    #[message_pattern("renamed")]
    fn renamed(&self) -> bool {
        true
    }
}

fn main() {
    let _ = CounterClient::new(nestling::Client::new("127.0.0.1:1"));
    let _ = RenamedClient::new(nestling::Client::new("127.0.0.1:1"));
    nestling::Server::builder()
        .discover(false)
        .controller(Counter {
            step: 2,
            count: AtomicU64::new(0),
            log: Mutex::new(Vec::new()),
        })
        .controller(Greeter {
            greeting: "hello".into(),
        })
        .controller(Renamed)
        .build()
        .expect("no duplicate patterns");
    // Discovery skips (and warns about) the controllers without `Default`.
    nestling::Server::builder().build().expect("discovery");
}
