#[derive(serde::Deserialize)]
struct Receipt {
    id: u64,
}

#[derive(Default)]
struct OrderController;

#[nestling::controller]
impl OrderController {
    #[message_pattern("place")]
    fn place(&self, id: u64) -> Receipt {
        Receipt { id }
    }
}

fn main() {}
