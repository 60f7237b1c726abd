#[kafkactor::handler(topic = "orders", group = "billing")]
async fn on_order(order: u64) -> Result<(), kafkactor::Failure> {
    let _ = order;
    Ok(())
}

fn main() {}
