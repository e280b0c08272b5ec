#[derive(Default)]
struct Greeter;

#[nestling::controller]
impl Greeter {
    #[message_pattern("greet")]
    fn greet(&self, name: &str) -> String {
        format!("hello, {name}")
    }
}

fn main() {}
