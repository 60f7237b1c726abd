//! `#[kafkactor::handler]`: what it expands to compiles and runs (the pass
//! cases, and a subscription built by the macro handling records as the
//! same one built by hand does), and every wrong option or signature is a
//! compile error at the attribute's offending part (the fail cases, each
//! with its expected message in a `.stderr` file beside it; regenerate
//! with `TRYBUILD=overwrite` after reading the difference).

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::testing::TestApp;
use kafkactor::{DeclaredHandler, Failure};
use serde::{Deserialize, Serialize};

#[test]
fn expansions() {
    let t = trybuild::TestCases::new();
    t.pass("tests/handler_macro/pass/*.rs");
    t.compile_fail("tests/handler_macro/fail/*.rs");
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
}

/// Every third order fails its first attempt.
#[kafkactor::handler(
    topic = "orders",
    group = "billing",
    concurrency = 4,
    retry = RetryPolicy::exponential(3, Duration::from_millis(1)),
    handler_timeout = Some(Duration::from_secs(5)),
    dead_letter = "orders.failed",
)]
async fn on_order(d: Delivery<Order>) -> Result<(), Failure> {
    if d.message().id % 3 == 0 && d.attempt() == 1 {
        return Err(Failure::retry("every third order fails once"));
    }
    if d.message().id == 7 {
        return Err(Failure::reject("order 7 is refused"));
    }
    Ok(())
}

#[test]
fn the_declared_subscription_is_the_builder_calls() {
    let declared = format!("{:?}", on_order.subscription());
    let by_hand = format!(
        "{:?}",
        Subscription::to("orders")
            .group("billing")
            .concurrency(4)
            .retry(RetryPolicy::exponential(3, Duration::from_millis(1)))
            .handler_timeout(Some(Duration::from_secs(5)))
            .dead_letter("orders.failed")
    );
    assert_eq!(declared, by_hand);
}

#[actix::test]
async fn the_function_is_still_callable() {
    let d = Delivery::builder(Order { id: 7 }).key("k").build();
    let answer = on_order::call(d).await;
    assert!(matches!(answer, Err(f) if f.is_reject()));
}

#[actix::test]
async fn a_declared_handler_runs_under_the_harness() {
    // The declared topic is used as written: a run of its own on the
    // embedded broker.
    let t = TestApp::memory().handler(on_order).start().await.unwrap();
    t.publish_all((0..10).map(|id| {
        Publish::to("orders")
            .key(format!("k-{}", id % 2))
            .message(&Order { id })
            .unwrap()
    }))
    .await
    .unwrap();
    t.quiet().await.unwrap();
    let calls = t.calls("orders");
    // 10 first attempts, 4 retries (ids 0, 3, 6, 9), and order 7 refused.
    assert_eq!(calls.len(), 14, "{calls:?}");
    let dead = t.dead_letters("orders").await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message::<Order>().unwrap(), Order { id: 7 });
    assert_eq!(dead[0].record.topic.as_ref(), "orders.failed");
    assert_eq!(t.lag("billing", "orders").await.unwrap(), 0);
    t.shutdown().await.unwrap();
}
