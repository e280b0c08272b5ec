#[derive(Default)]
struct Users;

#[nestling::controller(lifecycle)]
impl Users {
    #[message_pattern("user")]
    fn user(&self, id: u32) -> u32 {
        id
    }
}

impl nestling::Lifecycle for Users {}

fn main() {}
