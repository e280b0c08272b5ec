use nestling::Context;

#[derive(Default)]
struct Users;

#[nestling::controller]
impl Users {
    #[message_pattern("a")]
    fn a(&self, #[payload("id")] ctx: &Context) -> String {
        ctx.pattern()
    }

    #[message_pattern("b")]
    fn b(&self, #[payload(id)] id: u64) -> u64 {
        id
    }

    #[message_pattern("c")]
    fn c(&self, #[ctx] id: u64) -> u64 {
        id
    }

    #[message_pattern("d")]
    fn d(&self, #[payload] a: u64, b: u64) -> u64 {
        a + b
    }

    #[message_pattern("e", validate)]
    fn e(&self, ctx: &Context) -> String {
        ctx.pattern()
    }

    #[message_pattern("f")]
    fn f(
        &self,
        #[payload("id")]
        #[ctx]
        id: u64,
    ) -> u64 {
        id
    }

    fn helper(&self, #[payload("x")] x: u8) -> u8 {
        x
    }
}

fn main() {}
