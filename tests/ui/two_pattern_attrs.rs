#[derive(Default)]
struct UserController;

#[nestling::controller]
impl UserController {
    #[message_pattern("sum")]
    #[message_pattern("add")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn main() {}
