#[derive(Default)]
struct Store<T> {
    items: Vec<T>,
}

#[nestling::controller]
impl<T: Send + Sync + 'static> Store<T> {
    #[message_pattern("count")]
    fn count(&self) -> usize {
        self.items.len()
    }
}

fn main() {}
