// `Order` is only `Serialize`; it is used inside the payload and the reply types.
#[derive(serde::Serialize)]
struct Order {
    id: u64,
}

#[derive(Default)]
struct OrderController;

#[nestling::controller]
impl OrderController {
    #[message_pattern("place")]
    fn place(&self, orders: Vec<Order>) -> Vec<Order> {
        orders
    }
}

fn main() {}
