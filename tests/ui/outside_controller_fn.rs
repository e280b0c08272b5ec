use nestling::message_pattern;

#[message_pattern("sum")]
fn sum(nums: Vec<i64>) -> i64 {
    nums.iter().sum()
}

fn main() {
    let _ = sum(vec![1, 2, 3]);
}
