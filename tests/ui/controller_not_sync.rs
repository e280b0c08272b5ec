use std::cell::Cell;

#[derive(Default)]
struct Counter {
    count: Cell<u64>,
}

#[nestling::controller]
impl Counter {
    #[message_pattern("incr")]
    fn incr(&self) -> u64 {
        self.count.set(self.count.get() + 1);
        self.count.get()
    }
}

fn main() {}
