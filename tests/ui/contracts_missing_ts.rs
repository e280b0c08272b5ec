// `contracts` asks every payload and reply type for its TypeScript form (`ts_rs::TS`); a type
// without it is reported on that type, in the handler's signature.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
}

#[derive(Default)]
struct Geometry;

#[nestling::controller(contracts)]
impl Geometry {
    #[message_pattern("norm")]
    fn norm(&self, p: Point) -> f64 {
        p.x.hypot(p.y)
    }

    #[message_pattern("origin")]
    fn origin(&self) -> Point {
        Point { x: 0.0, y: 0.0 }
    }
}

fn main() {}
