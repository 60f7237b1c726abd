//! Where a group without committed offsets starts: `earliest` reads what is
//! already in the log, `latest` only what is produced after it joined.

mod support;

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::OffsetReset;
use support::*;

#[actix::test]
async fn earliest_reads_the_backlog_and_latest_skips_it() {
    let broker = Broker::memory();
    let topic = unique("orders");
    let (early, late) = (Log::default(), Log::default());
    let (early_group, late_group) = (unique("early"), unique("late"));
    let backlog = Kafkactor::builder()
        .broker(broker.clone())
        .start()
        .await
        .unwrap();
    publish_all(&backlog, &topic, &orders(100, 10)).await;

    let app = Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic.as_str())
                .group(early_group.as_str())
                .offset_reset(OffsetReset::Earliest),
            probe(&early, "early", ack()),
        )
        .subscribe(
            Subscription::to(topic.as_str())
                .group(late_group.as_str())
                .offset_reset(OffsetReset::Latest),
            probe(&late, "late", ack()),
        )
        .start()
        .await
        .unwrap();
    let memory = broker.as_memory().unwrap();
    eventually(
        "the backlog is read by the earliest group",
        Duration::from_secs(10),
        || early.len() == 100,
    )
    .await;
    // The latest group has joined when it owns all 3 partitions.
    eventually("late group assigned", Duration::from_secs(10), || {
        memory
            .assignment(&late_group)
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 3
    })
    .await;
    let new: Vec<Order> = orders(150, 10).split_off(100);
    publish_all(&app, &topic, &new).await;
    eventually("new records read by both", Duration::from_secs(10), || {
        early.len() == 150 && late.len() == 50
    })
    .await;
    app.shutdown().await.unwrap();
    backlog.shutdown().await.unwrap();
    assert!(
        late.seen().iter().all(|s| s.id >= 100),
        "latest never reads the backlog"
    );
}
