// The reply type has neither derive: the server needs `Serialize` and the generated
// client needs `Deserialize`.
struct Receipt {
    id: u64,
}

#[derive(Default)]
struct OrderController;

#[nestling::controller]
impl OrderController {
    #[message_pattern("place")]
    async fn place(&self, id: u64) -> Result<Receipt, nestling::RpcException> {
        Ok(Receipt { id })
    }
}

fn main() {}
