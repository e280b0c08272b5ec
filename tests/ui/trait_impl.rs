#[derive(Default)]
struct UserController;

trait Service {
    fn sum(&self, nums: Vec<i64>) -> i64;
}

#[nestling::controller]
impl Service for UserController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn main() {}
