//! Backoff between a failure and the restart: exponential growth, the cap,
//! the reset after a stable run, and jitter bounds.

mod support;

use std::time::{Duration, Instant};

use kafkactor_actors::prelude::*;
use support::*;

/// Crashes the current incarnation of `w` and returns the announced delay,
/// after checking the restart really waited for it.
async fn crash_and_read_delay(rx: &mut EventReader, w: &ChildRef<Worker>) -> Duration {
    let (addr, n) = current(w).await;
    // Taken before the crash, so it is never later than the failure, however
    // late this (possibly busy) test thread reads the events.
    let crashed_by = Instant::now();
    addr.do_send(Crash("boom"));
    loop {
        if let SupervisionEvent::Failed { .. } = rx.next().await {
            break;
        }
    }
    let delay = match rx.next().await {
        SupervisionEvent::Restarting { delay, .. } => delay,
        other => panic!("expected Restarting, got {}", short(&other)),
    };
    match rx.next().await {
        SupervisionEvent::Restarted { restarts, .. } => assert_eq!(restarts, n),
        other => panic!("expected Restarted, got {}", short(&other)),
    }
    assert!(
        crashed_by.elapsed() >= delay,
        "restarted before its {delay:?} backoff"
    );
    newer_than(w, n).await;
    delay
}

fn supervise(backoff: Backoff, events: &Events, log: &Log) -> (SupervisorHandle, ChildRef<Worker>) {
    let (w, w_ref) = worker("w", log);
    let root = Supervisor::new("root")
        .backoff(backoff)
        .restart_limit(100, Duration::from_secs(10))
        .events(events.clone())
        .child(w)
        .start_root();
    (root, w_ref)
}

#[actix::test]
async fn delays_double_up_to_the_cap() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let ms = Duration::from_millis;
    let backoff = Backoff::exponential(ms(5), ms(30))
        .jitter(0.0)
        .reset_after(Duration::from_secs(60));
    let (root, w) = supervise(backoff, &events, &log);
    rx.expect(&["started root/w"]).await;

    let mut delays = Vec::new();
    for _ in 0..6 {
        delays.push(crash_and_read_delay(&mut rx, &w).await);
    }
    assert_eq!(delays, [ms(5), ms(10), ms(20), ms(30), ms(30), ms(30)]);
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn delay_resets_after_a_stable_run() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let ms = Duration::from_millis;
    let stable = ms(150);
    let backoff = Backoff::exponential(ms(5), ms(100))
        .jitter(0.0)
        .reset_after(stable);
    let (root, w) = supervise(backoff, &events, &log);
    rx.expect(&["started root/w"]).await;

    let mut delays = Vec::new();
    for _ in 0..3 {
        delays.push(crash_and_read_delay(&mut rx, &w).await);
    }
    assert_eq!(delays, [ms(5), ms(10), ms(20)]);

    // The stimulus is time itself: the current incarnation runs for longer
    // than `reset_after` without failing.
    tokio::time::sleep(stable + ms(20)).await;
    assert_eq!(crash_and_read_delay(&mut rx, &w).await, ms(5));
    // A quick failure after that keeps growing from the start again.
    assert_eq!(crash_and_read_delay(&mut rx, &w).await, ms(10));
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[actix::test]
async fn jittered_delays_stay_within_bounds() {
    let (events, log) = (Events::new(), Log::new());
    let mut rx = EventReader::new(&events);
    let ms = Duration::from_millis;
    let (initial, max) = (ms(4), ms(20));
    let backoff = Backoff::exponential(initial, max)
        .jitter(0.5)
        .reset_after(Duration::from_secs(60));
    let (root, w) = supervise(backoff, &events, &log);
    rx.expect(&["started root/w"]).await;

    for n in 0..6u32 {
        let delay = crash_and_read_delay(&mut rx, &w).await;
        let base = (initial * 2u32.pow(n)).min(max);
        let upper = base.mul_f64(1.5).min(max);
        assert!(
            delay >= base && delay <= upper,
            "restart {n}: {delay:?} outside {base:?}..={upper:?}"
        );
    }
    assert_eq!(within("shutdown", root.shutdown()).await, Exit::Normal);
}

#[test]
fn jitter_never_exceeds_the_cap() {
    let ms = Duration::from_millis;
    let backoff = Backoff::exponential(ms(10), ms(50)).jitter(1.0);
    for n in 0..10 {
        for _ in 0..200 {
            assert!(backoff.delay(n) <= ms(50), "delay({n}) above max");
        }
    }
}
