#[derive(Default)]
struct Counter {
    count: u64,
}

#[nestling::controller]
impl Counter {
    #[message_pattern("incr")]
    fn incr(&mut self) -> u64 {
        self.count += 1;
        self.count
    }
}

fn main() {}
