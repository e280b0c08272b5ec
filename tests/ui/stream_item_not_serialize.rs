use futures_util::stream::{self, Stream};

#[derive(serde::Deserialize)]
struct Tick {
    n: u32,
}

#[derive(Default)]
struct Ticker;

#[nestling::controller]
impl Ticker {
    #[message_pattern("ticks")]
    fn ticks(&self, n: u32) -> impl Stream<Item = Tick> {
        stream::iter((0..n).map(|n| Tick { n }))
    }
}

fn main() {}
