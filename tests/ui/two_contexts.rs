use nestling::Context;

#[derive(Default)]
struct UserController;

#[nestling::controller]
impl UserController {
    #[message_pattern("who")]
    fn who(&self, a: &Context, b: &Context) -> String {
        format!("{} {}", a.pattern(), b.pattern())
    }
}

fn main() {}
