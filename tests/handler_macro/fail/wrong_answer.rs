use kafkactor::prelude::*;

#[kafkactor::handler(topic = "orders", group = "billing")]
async fn on_order(_d: Delivery<u64>) -> u32 {
    7
}

fn main() {}
