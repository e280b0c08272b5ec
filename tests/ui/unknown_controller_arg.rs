#[derive(Default)]
struct UserController;

#[nestling::controller(clients = false)]
impl UserController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn main() {}
