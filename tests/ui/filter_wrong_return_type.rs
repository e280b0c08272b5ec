use nestling::RpcException;

/// Returns the exception itself, not a `Filter` that produces it.
fn not_found() -> RpcException {
    RpcException::new("not found")
}

#[derive(Default)]
struct Users;

#[nestling::controller(filter = not_found)]
impl Users {
    #[message_pattern("user")]
    fn user(&self, id: u32) -> u32 {
        id
    }
}

fn main() {}
