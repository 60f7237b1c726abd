use kafkactor::prelude::*;

#[kafkactor::handler(topic = "orders", group = "billing", concurrency = "eight")]
async fn on_order(_d: Delivery<u64>) -> Outcome {
    Outcome::Ack
}

fn main() {}
