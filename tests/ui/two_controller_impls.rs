// One controller type split over two #[nestling::controller] impl blocks.
#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("a")]
    fn a(&self) -> u64 {
        1
    }
}

#[nestling::controller]
impl Users {
    #[message_pattern("b")]
    fn b(&self) -> u64 {
        2
    }
}

fn main() {}
