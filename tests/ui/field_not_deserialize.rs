struct Secret;

#[derive(Default)]
struct Vault;

#[nestling::controller(client = false)]
impl Vault {
    #[message_pattern("open")]
    fn open(&self, #[payload("key")] key: Secret) -> bool {
        let Secret = key;
        true
    }
}

fn main() {}
