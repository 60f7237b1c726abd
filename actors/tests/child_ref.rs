//! `ChildRef` across restarts (incarnations, `ready_after`, `last_exit`,
//! `fail`) and `SupervisorHandle::fail_child` through nested supervisors.

mod support;

use std::time::Duration;

use kafkactor_actors::prelude::*;
use support::*;

#[actix::test]
async fn a_child_ref_follows_restarts() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    assert!(w.get().is_none());
    assert_eq!(w.last_exit(), None);
    let backoff = Duration::from_millis(100);
    let root = Supervisor::new("root")
        .events(events.clone())
        .backoff(Backoff::exponential(backoff, backoff).jitter(0.0))
        .child(worker_with("w", &log, &w))
        .start_root();
    rx.expect(&["started root/w"]).await;

    let (first, n) = current(&w).await;
    assert_eq!(n, 1);
    assert_eq!(within("ping", first.send(Ping)).await.unwrap(), "w");

    assert!(w.fail(1, "injected"));
    rx.expect(&["failed root/w failed: injected", "restarting root/w 100ms"])
        .await;
    // During the backoff no incarnation runs.
    assert!(w.get().is_none());
    assert_eq!(w.last_exit(), Some((1, Exit::Failed("injected".into()))));
    assert!(!w.fail(1, "stale"), "a stale incarnation cannot be failed");

    // `ready_after` waits out the backoff for the next incarnation.
    let (second, n) = newer_than(&w, 1).await;
    assert_eq!(n, 2);
    rx.expect(&["restarted root/w 1"]).await;
    assert!(!first.connected());
    assert_eq!(within("ping", second.send(Ping)).await.unwrap(), "w");
    assert_eq!(w.get_numbered().map(|(_, n)| n), Some(2));

    // An incarnation that does not exist yet is not found either.
    assert!(!w.fail(3, "future"));
    assert!(w.ready_after(2, Duration::from_millis(20)).await.is_none());

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&["stopped root/w normal exit"]).await;
    rx.assert_drained();
    assert_eq!(w.last_exit(), Some((2, Exit::Normal)));
    assert!(w.get().is_none());
}

fn tree(events: &Events, log: &Log, w: &ChildRef<Worker>) -> SupervisorHandle {
    let (ev, l, w) = (events.clone(), log.clone(), w.clone());
    Supervisor::new("root")
        .events(events.clone())
        .backoff(Backoff::none())
        .child(worker("top", log).0)
        .child(ChildSpec::graceful("inner", move || {
            Supervisor::new("inner")
                .events(ev.clone())
                .backoff(Backoff::none())
                .child(worker_with("w", &l, &w))
        }))
        .start_root()
}

#[actix::test]
async fn fail_child_reaches_a_child_of_a_nested_supervisor() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    let root = tree(&events, &log, &w);
    rx.expect(&["started root/top", "started root/inner", "started inner/w"])
        .await;
    current(&w).await;

    within("fail_child", root.fail_child("inner/w", "injected"))
        .await
        .expect("the path exists");
    rx.expect(&[
        "failed inner/w failed: injected",
        "restarting inner/w 0ns",
        "restarted inner/w 1",
    ])
    .await;
    assert_eq!(newer_than(&w, 1).await.1, 2);
    assert_eq!(w.last_exit(), Some((1, Exit::Failed("injected".into()))));

    within("fail_child", root.fail_child("top", "injected"))
        .await
        .expect("a direct child");
    rx.expect(&[
        "failed root/top failed: injected",
        "restarting root/top 0ns",
        "restarted root/top 1",
    ])
    .await;

    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn fail_child_describes_a_path_it_cannot_reach() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    let root = tree(&events, &log, &w);
    rx.expect(&["started root/top", "started root/inner", "started inner/w"])
        .await;
    current(&w).await;

    let err = within("fail_child", root.fail_child("nope", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("root") && err.contains("`nope`") && err.contains("inner"),
        "{err}"
    );
    let err = within("fail_child", root.fail_child("inner/nope", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("inner") && err.contains("`nope`"), "{err}");
    let err = within("fail_child", root.fail_child("top/deeper", "x"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`top`") && err.contains("not a supervisor"),
        "{err}"
    );

    // Nothing was failed by the bad paths.
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    rx.expect(&[
        "stopped inner/w normal exit",
        "stopped root/inner normal exit",
        "stopped root/top normal exit",
    ])
    .await;
    rx.assert_drained();
}
