#[derive(Debug)]
struct MyError;

#[derive(Default)]
struct UserController;

#[nestling::controller]
impl UserController {
    #[message_pattern("sum")]
    fn sum(&self, nums: Vec<i64>) -> Result<i64, MyError> {
        nums.iter()
            .copied()
            .try_fold(0i64, i64::checked_add)
            .ok_or(MyError)
    }

    #[message_pattern("check")]
    async fn check(&self, nums: Vec<i64>) -> Result<(), MyError> {
        if nums.is_empty() {
            Err(MyError)
        } else {
            Ok(())
        }
    }
}

fn main() {}
