//! Children on a thread of their own (`ChildSpec::graceful_on_own_thread`):
//! the subtree runs there, restarts there, escalates to the supervisor on
//! the first thread, and stops gracefully with it.

mod support;

use std::time::Duration;

use kafkactor_actors::prelude::*;
use support::*;

fn inner(events: &Events, log: &Log, w: &ChildRef<Worker>) -> impl FnMut() -> Supervisor + Send {
    let (events, log, w) = (events.clone(), log.clone(), w.clone());
    move || {
        Supervisor::new("inner")
            .backoff(Backoff::none())
            .restart_limit(1, Duration::from_secs(10))
            .events(events.clone())
            .child(worker_with("w", &log, &w))
    }
}

async fn thread_of(w: &ChildRef<Worker>, after: u64) -> (std::thread::ThreadId, u64) {
    let (addr, n) = newer_than(w, after).await;
    (within("thread", addr.send(WhichThread)).await.unwrap(), n)
}

#[actix::test]
async fn a_subtree_runs_restarts_and_stops_on_its_own_thread() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let w = ChildRef::new();
    let root = Supervisor::new("root")
        .backoff(Backoff::none())
        .events(events.clone())
        .child(ChildSpec::graceful_on_own_thread(
            "inner",
            inner(&events, &log, &w),
        ))
        .start_root();
    // Published from two threads: in either order.
    let mut started = rx.take(2).await;
    started.sort();
    assert_eq!(started, ["started inner/w", "started root/inner"]);
    let (first, n) = thread_of(&w, 0).await;
    assert_ne!(
        first,
        std::thread::current().id(),
        "the subtree runs on another thread"
    );

    // A restart inside the subtree stays on its thread.
    current(&w).await.0.do_send(Crash("boom"));
    rx.expect(&[
        "failed inner/w panicked: boom",
        "restarting inner/w 0ns",
        "restarted inner/w 1",
    ])
    .await;
    let (again, n) = thread_of(&w, n).await;
    assert_eq!(again, first);

    // An escalation reaches the supervisor on this thread, which starts the
    // subtree again on the same thread.
    current(&w).await.0.do_send(Crash("boom"));
    let reason = "child `w` panicked: boom; more than 1 restarts within 10s";
    rx.expect(&[
        "failed inner/w panicked: boom",
        &format!("escalated inner: {reason}"),
        &format!("failed root/inner failed: {reason}"),
        "restarting root/inner 0ns",
    ])
    .await;
    // Published from two threads: in either order.
    let mut restarted = rx.take(2).await;
    restarted.sort();
    assert_eq!(restarted, ["restarted root/inner 1", "started inner/w"]);
    let (after_escalation, _) = thread_of(&w, n).await;
    assert_eq!(after_escalation, first);

    // Shutdown is graceful across the threads.
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
    assert_eq!(log.alive("w"), 0);
    assert_eq!(log.count("w shutdown"), 1, "{:?}", log.lines());
}

#[actix::test]
async fn a_panicking_factory_is_the_incarnations_failure() {
    let events = Events::new();
    let mut rx = EventReader::new(&events);
    let _root = Supervisor::new("root")
        .backoff(Backoff::none())
        .events(events.clone())
        .child(
            ChildSpec::graceful_on_own_thread("bad", || -> Worker { panic!("cannot build") })
                .restart(Restart::Temporary),
        )
        .start_root();
    rx.expect(&["started root/bad", "failed root/bad panicked: cannot build"])
        .await;
}
