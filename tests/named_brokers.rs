//! Several named brokers in one application: a subscription reads from the
//! broker it names, dead-letters there, and its handler publishes to
//! another broker (`Delivery::publish_on`); `App::producer_on` publishes to
//! a named broker. Run with the embedded broker as the default one and, as
//! the named one, a second embedded broker or Apache Kafka. Every wrong
//! name is a typed error naming it.

mod support;

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::Error;
use serde::{Deserialize, Serialize};
use support::*;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Click {
    id: u64,
    page: String,
}

const CLICKS: u64 = 300;

async fn a_subscription_on_one_broker_publishes_to_another(tb: TestBroker) {
    let default = Broker::memory();
    let (clicks, views) = (unique("clicks"), unique("page-views"));
    tb.topics(&[&clicks]).await;
    let (group, reader) = (unique("counter"), unique("reader"));
    let out = views.clone();
    let app = Kafkactor::builder()
        .broker(default.clone())
        .named_broker("analytics", tb.broker.clone())
        .handle(
            Subscription::to(clicks.as_str())
                .group(group.as_str())
                .concurrency(4)
                .broker("analytics"),
            move |d: Delivery<Click>| {
                let out = out.clone();
                async move {
                    if d.message().id % 100 == 7 {
                        return Err(Failure::reject("a robot's click"));
                    }
                    d.publish_on(
                        "default",
                        Publish::to(&out)
                            .key(&d.message().page)
                            .message(d.message())?,
                    )
                    .await?;
                    Ok(())
                }
            },
        )
        .handle(
            Subscription::to(views.as_str()).group(reader.as_str()),
            |_: Delivery<Click>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    let analytics = app.producer_on("analytics").unwrap();
    for id in 0..CLICKS {
        let click = Click {
            id,
            page: format!("/p/{}", id % 7),
        };
        analytics
            .send(
                Publish::to(clicks.as_str())
                    .key(&click.page)
                    .message(&click)
                    .unwrap(),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let robots = (0..CLICKS).filter(|id| id % 100 == 7).count() as u64;
    tb.until_committed(&group, &clicks, Duration::from_secs(30))
        .await;
    eventually_async(
        "the views read",
        tb.patience(Duration::from_secs(20)),
        || {
            let (default, views, reader) = (default.clone(), views.clone(), reader.clone());
            async move {
                default.read_topic(&views).await.unwrap().len() as u64 == CLICKS - robots
                    && default.lag(&reader, &views).await.unwrap() == 0
            }
        },
    )
    .await;
    app.shutdown().await.unwrap();

    // The clicks and their dead letters are on the named broker only.
    assert_eq!(tb.records(&clicks).await.len() as u64, CLICKS);
    let dead = tb.records(&format!("{clicks}.dlq")).await;
    assert_eq!(
        dead.len() as u64,
        robots,
        "dead-lettered on the clicks' broker"
    );
    assert_eq!(dead[0].dead_lettered().unwrap().reason, "a robot's click");
    assert!(
        default.read_topic(&clicks).await.unwrap().is_empty(),
        "no click on the default broker"
    );
    assert!(default
        .read_topic(&format!("{clicks}.dlq"))
        .await
        .unwrap()
        .is_empty());
    // The views are on the default broker only, each click once.
    let mut ids: Vec<u64> = default
        .read_topic(&views)
        .await
        .unwrap()
        .iter()
        .map(|r| r.decode::<Click>().unwrap().id)
        .collect();
    ids.sort();
    let expected: Vec<u64> = (0..CLICKS).filter(|id| id % 100 != 7).collect();
    assert_eq!(ids, expected);
    assert!(
        tb.records(&views).await.is_empty(),
        "no view on the named broker"
    );
}
on_memory_and_kafka!(
    a_subscription_on_one_broker_publishes_to_another_broker,
    super::a_subscription_on_one_broker_publishes_to_another,
    3
);

#[actix::test]
async fn wrong_broker_names_are_typed_errors() {
    // A subscription naming a broker the application does not name.
    let started = Kafkactor::builder()
        .broker(Broker::memory())
        .named_broker("analytics", Broker::memory())
        .handle(
            Subscription::to("clicks").group("g").broker("analytcs"),
            |_: Delivery<Click>| async { Outcome::Ack },
        )
        .start()
        .await;
    match started {
        Err(Error::Config(why)) => {
            assert!(
                why.contains("\"analytcs\"") && why.contains("named: analytics"),
                "{why}"
            )
        }
        other => panic!("an undefined broker should be refused: {other:?}"),
    }
    // Two brokers of one name, and a broker named like the default one.
    for name in ["analytics", "default"] {
        let started = Kafkactor::builder()
            .broker(Broker::memory())
            .named_broker("analytics", Broker::memory())
            .named_broker(name, Broker::memory())
            .start()
            .await;
        match started {
            Err(Error::Config(why)) => assert!(why.contains("taken"), "{why}"),
            other => panic!("{name} twice should be refused: {other:?}"),
        }
    }
    // A producer of no such broker.
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .named_broker("analytics", Broker::memory())
        .start()
        .await
        .unwrap();
    assert!(matches!(app.producer_on("nope"), Err(Error::Config(_))));
    assert!(app.producer_on("analytics").is_ok() && app.producer_on("default").is_ok());
    assert!(app.broker_named("analytics").unwrap().as_memory().is_some());
    assert!(matches!(app.broker_named("nope"), Err(Error::Config(_))));
    // The named broker's actors are there to be failed by path.
    app.fail_actor("producer@analytics", "test").await.unwrap();
    app.shutdown().await.unwrap();
}

/// `publish_on` a broker the application does not name fails the attempt
/// with a typed error; from a transactional subscription, any other
/// broker is refused (its outputs are in its own broker's transaction).
#[actix::test]
async fn publish_on_refuses_what_it_cannot_do() {
    let default = Broker::memory();
    let answers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (plain, transactional) = (answers.clone(), answers.clone());
    let app = Kafkactor::builder()
        .broker(default.clone())
        .named_broker("analytics", Broker::memory())
        .handle(
            Subscription::to("plain")
                .group("plain")
                .retry(RetryPolicy::none()),
            move |d: Delivery<Click>| {
                let answers = plain.clone();
                async move {
                    let sent = d
                        .publish_on("nope", Publish::to("out").message(d.message())?)
                        .await;
                    answers.lock().unwrap().push(("plain", format!("{sent:?}")));
                    Ok::<(), Failure>(())
                }
            },
        )
        .handle(
            Subscription::to("tx")
                .group("tx")
                .transactional()
                .retry(RetryPolicy::none()),
            move |d: Delivery<Click>| {
                let answers = transactional.clone();
                async move {
                    let sent = d
                        .publish_on("analytics", Publish::to("out").message(d.message())?)
                        .await;
                    answers.lock().unwrap().push(("tx", format!("{sent:?}")));
                    Ok::<(), Failure>(())
                }
            },
        )
        .start()
        .await
        .unwrap();
    let click = Click {
        id: 1,
        page: "/".into(),
    };
    for topic in ["plain", "tx"] {
        app.producer()
            .send(Publish::to(topic).message(&click).unwrap())
            .await
            .unwrap()
            .unwrap();
    }
    eventually("both handled", Duration::from_secs(10), || {
        answers.lock().unwrap().len() == 2
    })
    .await;
    app.shutdown().await.unwrap();
    let answers = answers.lock().unwrap().clone();
    for (who, answer) in &answers {
        assert!(answer.starts_with("Err(Config("), "{who}: {answer}");
        match *who {
            "plain" => assert!(answer.contains("no broker named \\\"nope\\\""), "{answer}"),
            _ => assert!(answer.contains("transactional"), "{answer}"),
        }
    }
    assert!(default.read_topic("out").await.unwrap().is_empty());
}

/// `kafkactor.toml`'s brokers, by name: the default one and the others
/// named, the environment over the file; a subscription names the one it
/// reads.
#[actix::test]
async fn brokers_come_from_the_configuration_by_name() {
    let dir = std::env::temp_dir().join(unique("config"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("kafkactor.toml");
    std::fs::write(
        &file,
        "[default.brokers.main]\npartitions = 1\n\n[default.brokers.analytics]\npartitions = 2\n",
    )
    .unwrap();
    let config = kafkactor::Config::from_file(&file).unwrap();
    let app = Kafkactor::builder()
        .brokers(&config, "main")
        .handle(
            Subscription::to("clicks").group("g").broker("analytics"),
            |_: Delivery<Click>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    let click = Click {
        id: 1,
        page: "/".into(),
    };
    app.producer_on("analytics")
        .unwrap()
        .send(Publish::to("clicks").message(&click).unwrap())
        .await
        .unwrap()
        .unwrap();
    let analytics = app.broker_named("analytics").unwrap().clone();
    eventually_async("the click committed", Duration::from_secs(10), || {
        let analytics = analytics.clone();
        async move { analytics.lag("g", "clicks").await.unwrap() == 0 }
    })
    .await;
    let memory = analytics.as_memory().unwrap();
    assert_eq!(
        memory.partitions("clicks"),
        Some(2),
        "the analytics broker's settings"
    );
    assert_eq!(
        app.broker().as_memory().unwrap().partitions("clicks"),
        None,
        "nothing on main"
    );
    app.shutdown().await.unwrap();

    // A default broker the file does not define.
    let started = Kafkactor::builder()
        .brokers(&config, "primary")
        .start()
        .await;
    match started {
        Err(Error::Config(why)) => assert!(
            why.contains("\"primary\"")
                && why.contains("analytics, main")
                && why.contains("kafkactor.toml"),
            "{why}"
        ),
        other => panic!("an undefined default broker should be refused: {other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
