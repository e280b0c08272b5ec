// The generated `RegistryClient` has its own `new` and `client` methods.
#[derive(Default)]
struct Registry;

#[nestling::controller]
impl Registry {
    #[message_pattern("client")]
    fn client(&self, id: u64) -> u64 {
        id
    }

    #[message_pattern("new")]
    fn new(&self) -> u64 {
        0
    }
}

fn main() {}
