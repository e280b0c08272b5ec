#[derive(Default)]
struct MathController;

#[nestling::controller]
impl MathController {
    #[message_pattern({ cmd: "sum", v: 2 })]
    fn sum(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }

    // Same pattern: Nest sorts object keys before matching.
    #[message_pattern({ v: 2, "cmd": "sum" })]
    fn sum_v2(&self, nums: Vec<i64>) -> i64 {
        nums.iter().sum()
    }
}

fn main() {}
