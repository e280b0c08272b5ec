#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    // An empty list registers nothing, as Nest's `@MessagePattern([])` would.
    #[message_pattern([])]
    fn nothing(&self) -> u8 {
        0
    }
}

fn main() {}
