#[derive(Default)]
struct MathController;

#[nestling::controller]
impl MathController {
    #[message_pattern("add")]
    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

fn main() {}
