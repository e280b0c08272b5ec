#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("user", filter = "not_found")]
    fn user(&self, id: u32) -> u32 {
        id
    }
}

fn main() {}
