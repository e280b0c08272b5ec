fn not_found() -> nestling::filter::Filter {
    nestling::filter::Filter::new(|_| None)
}

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("user", filters = not_found)]
    fn user(&self, id: u32) -> u32 {
        id
    }
}

fn main() {}
