// The payload type has neither derive: the server needs `Deserialize` and the
// generated client needs `Serialize`.
struct Order {
    id: u64,
}

#[derive(Default)]
struct OrderController;

#[nestling::controller]
impl OrderController {
    #[message_pattern("place")]
    fn place(&self, order: Order) -> u64 {
        order.id
    }
}

fn main() {}
