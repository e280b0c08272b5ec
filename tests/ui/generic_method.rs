#[derive(Default)]
struct EchoController;

#[nestling::controller]
impl EchoController {
    #[message_pattern("echo")]
    fn echo<T: serde::Serialize>(&self, value: T) -> T {
        value
    }
}

fn main() {}
