//! Consumer groups on the embedded broker: different groups each see every
//! record; members of one group split the partitions between them.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;

async fn member(broker: &Broker, topic: &str, group: &str, log: &Log, app: &'static str) -> App {
    Kafkactor::builder()
        .broker(broker.clone())
        .subscribe(
            Subscription::to(topic).group(group).concurrency(2),
            probe(log, app, ack()),
        )
        .start()
        .await
        .unwrap()
}

#[actix::test]
async fn two_groups_each_see_everything() {
    let broker = Broker::memory();
    let topic = unique("events");
    let (billing, shipping) = (unique("billing"), unique("shipping"));
    let (log_b, log_s) = (Log::default(), Log::default());
    let a = member(&broker, &topic, &billing, &log_b, "billing").await;
    let b = member(&broker, &topic, &shipping, &log_s, "shipping").await;
    publish_all(&a, &topic, &orders(3_000, 50)).await;
    eventually(
        "both groups handled everything",
        Duration::from_secs(30),
        || log_b.len() >= 3_000 && log_s.len() >= 3_000,
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    for log in [&log_b, &log_s] {
        let counts = log.counts();
        assert_eq!(counts.len(), 3_000);
        assert!(counts.values().all(|&c| c == 1));
        assert_key_order(&log.seen());
    }
}

#[actix::test]
async fn two_members_of_one_group_split_the_partitions() {
    let broker = Broker::memory_with_partitions(4).unwrap();
    let topic = unique("events");
    let group = unique("workers");
    let log = Log::default();
    let a = member(&broker, &topic, &group, &log, "a").await;
    let b = member(&broker, &topic, &group, &log, "b").await;
    let memory = broker.as_memory().unwrap();
    eventually(
        "both members own partitions",
        Duration::from_secs(10),
        || {
            let assignment = memory.assignment(&group);
            assignment.len() == 2 && assignment.values().all(|tps| tps.len() == 2)
        },
    )
    .await;

    publish_all(&a, &topic, &orders(4_000, 40)).await;
    eventually("everything handled", Duration::from_secs(30), || {
        log.len() >= 4_000
    })
    .await;
    eventually("all committed", Duration::from_secs(10), || {
        memory.lag(&group, &topic) == 0
    })
    .await;

    let seen = log.seen();
    assert_eq!(seen.len(), 4_000, "each record handled once by one member");
    let parts = |app: &str| {
        seen.iter()
            .filter(|s| s.app == app)
            .map(|s| s.partition)
            .collect::<HashSet<_>>()
    };
    let (pa, pb) = (parts("a"), parts("b"));
    assert_eq!(pa.len(), 2, "member a handled two partitions: {pa:?}");
    assert_eq!(pb.len(), 2, "member b handled two partitions: {pb:?}");
    assert!(pa.is_disjoint(&pb));

    // When one member leaves, the other takes over its partitions.
    b.shutdown().await.unwrap();
    eventually("a owns every partition", Duration::from_secs(10), || {
        let assignment = memory.assignment(&group);
        assignment.len() == 1 && assignment.values().all(|tps| tps.len() == 4)
    })
    .await;
    let more: Vec<Order> = orders(4_400, 40).split_off(4_000);
    publish_all(&a, &topic, &more).await;
    eventually("the rest handled", Duration::from_secs(30), || {
        log.len() >= 4_400
    })
    .await;
    a.shutdown().await.unwrap();
    let counts = log.counts();
    assert_eq!(counts.len(), 4_400);
    assert!(
        counts.values().all(|&c| c == 1),
        "no duplicates across the rebalance"
    );
    assert_key_order(&log.seen());
}

#[actix::test]
async fn a_member_joining_and_leaving_mid_stream_loses_nothing() {
    let broker = Broker::memory_with_partitions(6).unwrap();
    let topic = unique("events");
    let group = unique("workers");
    let log = Log::default();
    let a = member(&broker, &topic, &group, &log, "a").await;
    let all = orders(6_000, 60);
    publish_all(&a, &topic, &all[..3_000]).await;
    eventually("a is busy", Duration::from_secs(10), || log.len() >= 500).await;

    // b joins while a has records in flight: partitions move only after a
    // drained and committed them.
    let b = member(&broker, &topic, &group, &log, "b").await;
    publish_all(&a, &topic, &all[3_000..4_500]).await;
    let memory = broker.as_memory().unwrap();
    eventually("b owns partitions", Duration::from_secs(10), || {
        memory.assignment(&group).len() == 2
    })
    .await;
    eventually("b handled some", Duration::from_secs(30), || {
        log.seen().iter().any(|s| s.app == "b")
    })
    .await;

    // b leaves mid-stream.
    b.shutdown().await.unwrap();
    publish_all(&a, &topic, &all[4_500..]).await;
    eventually("everything handled", Duration::from_secs(60), || {
        log.counts().len() >= 6_000
    })
    .await;
    eventually("all committed", Duration::from_secs(10), || {
        memory.lag(&group, &topic) == 0
    })
    .await;
    a.shutdown().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), 6_000, "nothing lost");
    assert!(
        counts.values().all(|&c| c == 1),
        "partitions moved only after their records were committed"
    );
    assert_key_order(&log.seen());
}
