use nestling::{event_pattern, message_pattern};

#[derive(Default)]
struct UserController;

// Forgot #[nestling::controller].
impl UserController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    #[event_pattern("log")]
    fn log(&self, text: String) {
        println!("{text}");
    }
}

fn main() {
    let c = UserController;
    let _ = c.sum(vec![1]);
    c.log(String::new());
}
