#[derive(Default)]
struct Math;

#[nestling::controller]
impl Math {
    // `validate` asks for rules the payload type does not have.
    #[message_pattern("sum", validate)]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn main() {}
