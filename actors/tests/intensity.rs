//! Restart intensity: more than `max` restarts within `window` makes the
//! supervisor stop its children and fail, which a root reports through
//! `SupervisorHandle::wait`.

mod support;

use std::time::{Duration, Instant};

use kafkactor_actors::prelude::*;
use support::*;

#[actix::test]
async fn too_many_restarts_escalate_to_the_root_handle() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (w, w_ref) = worker("w", &log);
    let (other, _) = worker("other", &log);
    let mut root = Supervisor::new("root")
        .backoff(Backoff::none())
        .restart_limit(2, Duration::from_secs(10))
        .events(events.clone())
        .child(other)
        .child(w)
        .start_root();
    rx.expect(&["started root/other", "started root/w"]).await;

    for n in 1..=2 {
        newer_than(&w_ref, n - 1).await.0.do_send(Crash("boom"));
        rx.expect(&[
            "failed root/w panicked: boom",
            "restarting root/w 0ns",
            &format!("restarted root/w {n}"),
        ])
        .await;
    }
    newer_than(&w_ref, 2).await.0.do_send(Crash("boom"));
    let reason = "child `w` panicked: boom; more than 2 restarts within 10s";
    rx.expect(&[
        "failed root/w panicked: boom",
        &format!("escalated root: {reason}"),
        "stopped root/other normal exit",
    ])
    .await;

    assert_eq!(
        within("root exit", root.wait()).await,
        Exit::Failed(reason.to_string())
    );
    assert!(root.is_finished());
    rx.assert_drained();
    assert_eq!(log.alive("w"), 0);
    assert_eq!(log.alive("other"), 0);
    assert_eq!(log.count("w started"), 3, "no restart after the limit");
}

#[actix::test]
async fn restarts_of_different_children_count_together() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (a, a_ref) = worker("a", &log);
    let (b, b_ref) = worker("b", &log);
    let mut root = Supervisor::new("root")
        .backoff(Backoff::none())
        .restart_limit(1, Duration::from_secs(10))
        .events(events.clone())
        .child(a)
        .child(b)
        .start_root();
    rx.expect(&["started root/a", "started root/b"]).await;

    current(&a_ref).await.0.do_send(FailWith("a broke"));
    rx.expect(&[
        "failed root/a failed: a broke",
        "restarting root/a 0ns",
        "restarted root/a 1",
    ])
    .await;
    current(&b_ref).await.0.do_send(FailWith("b broke"));
    let reason = "child `b` failed: b broke; more than 1 restarts within 10s";
    rx.expect(&[
        "failed root/b failed: b broke",
        &format!("escalated root: {reason}"),
        "stopped root/a normal exit",
    ])
    .await;
    assert_eq!(
        within("root exit", root.wait()).await,
        Exit::Failed(reason.into())
    );
}

#[actix::test]
async fn restarts_spread_over_more_than_the_window_do_not_escalate() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let (w, w_ref) = worker("w", &log);
    let window = Duration::from_millis(80);
    let root = Supervisor::new("root")
        .backoff(Backoff::none())
        .restart_limit(1, window)
        .events(events.clone())
        .child(w)
        .start_root();
    rx.expect(&["started root/w"]).await;

    let mut last_restart: Option<Instant> = None;
    for n in 1..=3u64 {
        if let Some(at) = last_restart {
            // The stimulus is time itself: let the previous restart leave the window.
            let left =
                (at + window + Duration::from_millis(20)).saturating_duration_since(Instant::now());
            tokio::time::sleep(left).await;
        }
        newer_than(&w_ref, n - 1).await.0.do_send(Crash("boom"));
        rx.expect(&[
            "failed root/w panicked: boom",
            "restarting root/w 0ns",
            &format!("restarted root/w {n}"),
        ])
        .await;
        last_restart = Some(Instant::now());
    }
    assert!(!root.is_finished());
    assert_eq!(newer_than(&w_ref, 3).await.1, 4);
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}
