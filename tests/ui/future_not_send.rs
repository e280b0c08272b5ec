use std::rc::Rc;

#[derive(Default)]
struct SlowController;

async fn tick() {}

#[nestling::controller]
impl SlowController {
    #[message_pattern("slow")]
    async fn slow(&self) -> u64 {
        let shared = Rc::new(1);
        tick().await;
        *shared
    }
}

fn main() {}
