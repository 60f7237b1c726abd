//! Consumer groups: different groups each see every record; members of one
//! group split the partitions between them, and a member joining or leaving
//! mid-stream loses nothing. On the embedded broker, Apache Kafka and the mock cluster.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use kafkactor::prelude::*;
use support::*;

async fn member(tb: &TestBroker, topic: &str, group: &str, log: &Log, app: &'static str) -> App {
    Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic).group(group).concurrency(2),
            probe(log, app, ack()),
        )
        .start()
        .await
        .unwrap()
}

async fn two_groups(tb: TestBroker) {
    let topic = unique("events");
    tb.topics(&[&topic]).await;
    let (billing, shipping) = (unique("billing"), unique("shipping"));
    let (log_b, log_s) = (Log::default(), Log::default());
    let a = member(&tb, &topic, &billing, &log_b, "billing").await;
    let b = member(&tb, &topic, &shipping, &log_s, "shipping").await;
    publish_all(&a, &topic, &orders(3_000, 50)).await;
    eventually(
        "both groups handled everything",
        tb.patience(Duration::from_secs(30)),
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

on_every_broker!(two_groups_each_see_everything, super::two_groups, 3);

async fn group_split(tb: TestBroker) {
    let topic = unique("events");
    let group = unique("workers");
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let a = member(&tb, &topic, &group, &log, "a").await;
    let b = member(&tb, &topic, &group, &log, "b").await;
    let (ra, rb) = (&a, &b);
    eventually_async(
        "both members own two partitions",
        tb.patience(Duration::from_secs(10)),
        || async move {
            ra.assigned_partitions().await.len() == 2 && rb.assigned_partitions().await.len() == 2
        },
    )
    .await;

    publish_all(&a, &topic, &orders(4_000, 40)).await;
    eventually(
        "everything handled",
        tb.patience(Duration::from_secs(30)),
        || log.len() >= 4_000,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
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
    until_owned(
        "a owns every partition",
        tb.patience(Duration::from_secs(10)),
        &a,
        |n| n == 4,
    )
    .await;
    let more: Vec<Order> = orders(4_400, 40).split_off(4_000);
    publish_all(&a, &topic, &more).await;
    eventually(
        "the rest handled",
        tb.patience(Duration::from_secs(30)),
        || log.len() >= 4_400,
    )
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

on_every_broker!(
    two_members_of_one_group_split_the_partitions,
    super::group_split,
    4
);

/// Fan-out in one application: subscriptions on one topic in different
/// groups each get every record (multicast); two subscriptions of one
/// group are two members that split the partitions, each record handled
/// by one of them once (unicast).
async fn fan_out_in_one_application(tb: TestBroker) {
    const AT_LEAST: usize = 1_000;
    let topic = unique("events");
    tb.topics(&[&topic]).await;
    let (billing, audit, workers) = (unique("billing"), unique("audit"), unique("workers"));
    let (log_b, log_a, log_w) = (Log::default(), Log::default(), Log::default());
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .subscribe(
            Subscription::to(topic.as_str()).group(billing.as_str()),
            probe(&log_b, "billing", ack()),
        )
        .subscribe(
            Subscription::to(topic.as_str()).group(audit.as_str()),
            probe(&log_a, "audit", ack()),
        )
        .subscribe(
            Subscription::to(topic.as_str()).group(workers.as_str()),
            probe(&log_w, "w1", ack()),
        )
        .subscribe(
            Subscription::to(topic.as_str()).group(workers.as_str()),
            probe(&log_w, "w2", ack()),
        )
        .start()
        .await
        .unwrap();
    // Small rounds, each waited for, until both members of one group took
    // records (a Kafka member joining second gets its partitions a
    // rebalance later), then the rest.
    let all = orders(100_000, 40);
    let mut published = 0;
    let members = || log_w.seen().iter().map(|s| s.app).collect::<HashSet<_>>();
    while members().len() < 2 {
        assert!(
            published + 20 <= all.len(),
            "the group's members never split"
        );
        publish_all(&app, &topic, &all[published..published + 20]).await;
        published += 20;
        let n = published;
        eventually(
            "the round handled",
            tb.patience(Duration::from_secs(10)),
            || log_w.counts().len() == n,
        )
        .await;
    }
    let n = published.max(AT_LEAST);
    publish_all(&app, &topic, &all[published..n]).await;
    eventually(
        "every record handled in each group",
        tb.patience(Duration::from_secs(30)),
        || {
            [&log_b, &log_a, &log_w]
                .iter()
                .all(|log| log.counts().len() == n)
        },
    )
    .await;
    for group in [&billing, &audit, &workers] {
        tb.until_committed(group, &topic, Duration::from_secs(30))
            .await;
    }
    app.shutdown().await.unwrap();

    for (log, group) in [(&log_b, "billing"), (&log_a, "audit")] {
        assert_eq!(log.len(), n, "{group}: each record once");
    }
    // The workers' group rebalanced while records flowed: on the mock
    // cluster, which refuses commits once a rebalance has begun, what was
    // handled and not yet committed is handled again by the new owner.
    if tb.commits_while_rebalancing() {
        assert_eq!(log_w.len(), n, "workers: each record once");
    }
    let by: HashSet<&str> = log_w.seen().iter().map(|s| s.app).collect::<HashSet<_>>();
    assert_eq!(
        by.len(),
        2,
        "both members of one group took records: {by:?}"
    );
}

on_every_broker!(
    subscriptions_in_one_application_fan_out_by_group,
    super::fan_out_in_one_application,
    4
);

async fn join_and_leave_mid_stream(tb: TestBroker) {
    let topic = unique("events");
    let group = unique("workers");
    tb.topics(&[&topic]).await;
    let log = Log::default();
    let a = member(&tb, &topic, &group, &log, "a").await;
    let all = orders(6_000, 60);
    publish_all(&a, &topic, &all[..3_000]).await;
    eventually("a is busy", tb.patience(Duration::from_secs(10)), || {
        log.len() >= 500
    })
    .await;

    // b joins while a has records in flight: partitions move only after a
    // drained and committed them. More records come once b owns some (a
    // may have finished the first ones by then: Kafka forms the group fast).
    let b = member(&tb, &topic, &group, &log, "b").await;
    until_owned(
        "b owns partitions",
        tb.patience(Duration::from_secs(10)),
        &b,
        |n| n > 0,
    )
    .await;
    publish_all(&a, &topic, &all[3_000..4_500]).await;
    eventually(
        "b handled some",
        tb.patience(Duration::from_secs(30)),
        || log.seen().iter().any(|s| s.app == "b"),
    )
    .await;

    // b leaves mid-stream.
    b.shutdown().await.unwrap();
    publish_all(&a, &topic, &all[4_500..]).await;
    eventually(
        "everything handled",
        tb.patience(Duration::from_secs(60)),
        || log.counts().len() >= 6_000,
    )
    .await;
    tb.until_committed(&group, &topic, Duration::from_secs(10))
        .await;
    a.shutdown().await.unwrap();

    let counts = log.counts();
    assert_eq!(counts.len(), 6_000, "nothing lost");
    if tb.commits_while_rebalancing() {
        assert!(
            counts.values().all(|&c| c == 1),
            "partitions moved only after their records were committed"
        );
        assert_key_order(&log.seen());
    } else {
        // The mock cluster refuses every commit once a rebalance has begun
        // (Kafka accepts them until the group completes its rebalance), so
        // what was finished since the last commit is handled again.
        assert_key_order(&first_handlings(&log.seen()));
    }
}

on_every_broker!(
    a_member_joining_and_leaving_mid_stream_loses_nothing,
    super::join_and_leave_mid_stream,
    6
);
