//! The README's quickstart test, as a user writes it: a handler, and its
//! test with the harness. It runs on the embedded broker in the suite, and
//! `scripts/test.sh` runs it again unchanged on Apache Kafka by the switch
//! (`KAFKACTOR_TEST_KAFKA`). A second test checks that the README shows
//! this file's code as it is.

use kafkactor::prelude::*;
use kafkactor::testing::TestApp;
use serde::{Deserialize, Serialize};

// README: handler
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub id: u64,
    pub total_cents: u64,
}

/// Bills an order. An empty one can never be billed: rejected, it goes to
/// `orders.dlq` with the reason. An error from `?` is retried with backoff.
pub async fn bill(d: Delivery<OrderPlaced>) -> Result<(), Failure> {
    if d.message().total_cents == 0 {
        return Err(Failure::reject("empty order"));
    }
    // Charge the customer here.
    Ok(())
}
// README: end

// README: test
#[actix::test]
async fn bills_orders_and_dead_letters_empty_ones() -> kafkactor::Result<()> {
    let t = TestApp::builder(); // embedded broker; Kafka when KAFKACTOR_TEST_KAFKA is set
    let orders = t.topic("orders"); // unique to the run on Kafka
    let t = t
        .handle(Subscription::to(&orders).group("billing"), bill)
        .start()
        .await?;
    for (id, total_cents) in [(1, 990), (2, 0)] {
        let order = OrderPlaced { id, total_cents };
        t.publish(Publish::to(&orders).key("c-1").message(&order)?)
            .await?;
    }
    t.quiet().await?; // every record's fate final, offsets committed

    assert_eq!(t.messages::<OrderPlaced>(&orders)?.len(), 2);
    let dead = t.dead_letters(&orders).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message::<OrderPlaced>()?.id, 2);
    assert_eq!(dead[0].why.reason, "empty order");
    assert_eq!(t.lag("billing", &orders).await?, 0);
    t.shutdown().await
}
// README: end

/// The README's Quickstart shows the code between the `README:` markers
/// above, line for line.
#[test]
fn the_readme_shows_this_code() {
    let readme = include_str!("../README.md");
    let this = include_str!("quickstart.rs");
    for part in ["handler", "test"] {
        let start = format!("// README: {part}\n");
        let from = this.find(&start).expect("a start marker") + start.len();
        let to = from + this[from..].find("// README: end").expect("an end marker");
        let code = &this[from..to];
        assert!(
            readme.contains(code),
            "README.md does not show the quickstart's {part} as tests/quickstart.rs has it:\n{code}"
        );
    }
}
