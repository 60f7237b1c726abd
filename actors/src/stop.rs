//! A child's stop line: how its supervisor (or a [`ChildRef`](crate::ChildRef)
//! holder) asks it to stop or fail without the actor's cooperation.
//!
//! The listening end is a future inside the child's own context. An actix
//! context polls every future it holds on every wake-up, that is for every
//! message the actor handles, so the listener's poll must cost next to
//! nothing: one atomic load, and the task's waker registered once (a
//! channel's receiver would lock, pop and re-register on every poll).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// What the listener inside a child's context is asked to do.
pub(crate) enum StopRequest {
    /// Stop normally (`ctx.stop()`), or by sending `Shutdown` for graceful children.
    Stop,
    /// Stop and report a failure with this reason.
    Fail(String),
}

#[derive(Default)]
struct Line {
    /// Whether `state.request` holds a request: the listener's fast path.
    requested: AtomicBool,
    /// Whether the listener is gone (the child's context ended).
    closed: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The first request made; later ones are dropped.
    request: Option<StopRequest>,
    waker: Option<Waker>,
}

fn lock(line: &Line) -> std::sync::MutexGuard<'_, State> {
    line.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The requesting end; clones share one line.
#[derive(Clone)]
pub(crate) struct StopSender(Arc<Line>);

/// The listening end, spawned in the child's context; resolves with the
/// first request.
pub(crate) struct StopListener {
    line: Arc<Line>,
    /// The waker registered last: registering again is needed only when
    /// the task polling changes, which in a context it never does.
    registered: Option<Waker>,
}

/// A new stop line.
pub(crate) fn stop_line() -> (StopSender, StopListener) {
    let line = Arc::new(Line::default());
    (
        StopSender(line.clone()),
        StopListener {
            line,
            registered: None,
        },
    )
}

impl StopSender {
    /// Asks the child to act on `request` (unless an earlier request is
    /// pending); false when its context has ended.
    pub(crate) fn send(&self, request: StopRequest) -> bool {
        if self.0.closed.load(Ordering::Acquire) {
            return false;
        }
        let waker = {
            let mut state = lock(&self.0);
            state.request.get_or_insert(request);
            self.0.requested.store(true, Ordering::Release);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

impl Future for StopListener {
    type Output = StopRequest;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StopRequest> {
        let this = &mut *self;
        if !this.line.requested.load(Ordering::Acquire) {
            if this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                return Poll::Pending;
            }
            let mut state = lock(&this.line);
            // Checked again under the lock: a request made meanwhile took
            // no waker, so it must be seen now.
            if state.request.is_none() {
                state.waker = Some(cx.waker().clone());
                this.registered = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        match lock(&this.line).request.take() {
            Some(request) => Poll::Ready(request),
            // Taken by an earlier poll that returned it: nothing more comes.
            None => Poll::Pending,
        }
    }
}

impl Drop for StopListener {
    fn drop(&mut self) {
        self.line.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_request_wakes_the_listener_once_and_the_first_request_wins() {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = stop_line();
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut rx).poll(&mut cx).is_pending());
        assert!(tx.send(StopRequest::Fail("first".into())));
        assert!(tx.clone().send(StopRequest::Stop));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        match Pin::new(&mut rx).poll(&mut cx) {
            Poll::Ready(StopRequest::Fail(reason)) => assert_eq!(reason, "first"),
            _ => panic!("the first request is answered"),
        }
        drop(rx);
        assert!(!tx.send(StopRequest::Stop), "the listener is gone");
    }

    #[test]
    fn a_request_made_before_the_first_poll_is_seen() {
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let (tx, mut rx) = stop_line();
        assert!(tx.send(StopRequest::Stop));
        assert!(matches!(
            Pin::new(&mut rx).poll(&mut cx),
            Poll::Ready(StopRequest::Stop)
        ));
    }
}
