#[derive(Default)]
struct UserController;

#[nestling::controller]
impl UserController {
    #[message_pattern]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[event_pattern()]
    fn log(&self, _text: String) {}
}

fn main() {}
