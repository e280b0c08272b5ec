use std::rc::Rc;

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("user")]
    fn user(&self, id: u32) -> u32 {
        id
    }
}

impl nestling::Lifecycle for Users {
    // Holds an `Rc` across an `.await`: the hook's future is not `Send`.
    async fn on_start(&self) -> Result<(), nestling::BoxError> {
        let held = Rc::new(1);
        tokio::task::yield_now().await;
        drop(held);
        Ok(())
    }
}

fn main() {}
