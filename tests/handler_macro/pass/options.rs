//! Every kind of option: `name = value`, a bare flag, a list of arguments.
use std::time::Duration;

use kafkactor::prelude::*;

#[derive(serde::Deserialize)]
struct Payment {
    cents: u64,
}

#[kafkactor::handler(
    topics = ["payments", "refunds"],
    group = String::from("ledger"),
    max_in_flight = 1_000,
    transactional,
    lanes_by_partition,
    restart_limit(5, Duration::from_secs(1)),
)]
pub async fn on_payment(d: Delivery<Payment>) -> Outcome {
    if d.message().cents == 0 {
        Outcome::reject("empty payment")
    } else {
        Outcome::Ack
    }
}

/// An `Outcome` answer and a doc comment on a private handler.
#[kafkactor::handler(topic = "audit", group = "audit")]
async fn on_audit(_d: Delivery<kafkactor::Raw>) -> Outcome {
    Outcome::Ack
}

fn main() {
    let _builder = Kafkactor::builder()
        .broker(Broker::memory())
        .handler(on_payment)
        .handler(on_audit);
}
