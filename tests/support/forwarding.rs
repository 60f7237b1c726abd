//! An application whose first subscription forwards each record to a second
//! topic from inside its handler (so the handler's context flows on), with
//! a 200 ms delay bucket: what the tracing tests publish through.

use std::time::Duration;

use kafkactor::prelude::*;

use super::{unique, until_owned, TestBroker};

/// Starts it: `first` is handled by publishing `after <message>` to
/// `second`; `seen(subscription, delivery)` is called for every delivery
/// of either (`"first"` or `"second"`). Returns once both own partitions.
pub async fn forwarding_app<F>(tb: &TestBroker, first: &str, second: &str, seen: F) -> App
where
    F: Fn(&'static str, &Delivery<String>) + Clone + 'static,
{
    // One short bucket, its topics made up front (the mock cluster cannot
    // create topics through the admin API).
    let prefix = unique("delay");
    tb.topics(&[&format!("{prefix}.0s"), &format!("{prefix}.200ms")])
        .await;
    let delays = kafkactor::Delays::default()
        .buckets([Duration::from_millis(200)])
        .topic_prefix(&prefix);
    let (forward_to, seen1, seen2) = (second.to_string(), seen.clone(), seen);
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .delays(delays)
        .handle(
            Subscription::to(first).group(unique("first").as_str()),
            move |d: Delivery<String>| {
                seen1("first", &d);
                // Published while the handler runs: the context flows on.
                let sent = d.publish(
                    Publish::to(forward_to.as_str())
                        .message(&format!("after {}", d.message()))
                        .unwrap(),
                );
                async move {
                    sent.await.unwrap();
                    Outcome::Ack
                }
            },
        )
        .handle(
            Subscription::to(second).group(unique("second").as_str()),
            move |d: Delivery<String>| {
                seen2("second", &d);
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    until_owned(
        "both subscriptions own partitions",
        tb.patience(Duration::from_secs(5)),
        &app,
        |n| n >= 2,
    )
    .await;
    app
}
