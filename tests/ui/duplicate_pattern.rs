#[derive(Default)]
struct UserController;

#[nestling::controller]
impl UserController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[message_pattern("sum")]
    fn sum_again(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    // Several event handlers may share a pattern: not an error.
    #[event_pattern("log")]
    fn log(&self, _text: String) {}

    #[event_pattern("log")]
    fn log_again(&self, _text: String) {}
}

fn main() {}
