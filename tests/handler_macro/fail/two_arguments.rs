use kafkactor::prelude::*;

#[kafkactor::handler(topic = "orders", group = "billing")]
async fn on_order(_d: Delivery<u64>, _extra: u32) -> Outcome {
    Outcome::Ack
}

fn main() {}
