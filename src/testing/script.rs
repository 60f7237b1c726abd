//! Handlers that fail on purpose, for tests of what follows a failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::delivery::{Delivery, Outcome};

/// What a scripted handler returns.
pub type Scripted = Pin<Box<dyn Future<Output = Outcome>>>;

/// `handler`, except that its first `n` calls (over all records) answer
/// `Outcome::Retry("scripted failure i of n")` without calling it.
pub fn fail_first<T, F, Fut, O>(n: u32, handler: F) -> impl Fn(Delivery<T>) -> Scripted + 'static
where
    T: 'static,
    F: Fn(Delivery<T>) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: Into<Outcome> + 'static,
{
    let calls = Arc::new(AtomicU32::new(0));
    move |d| {
        let call = calls.fetch_add(1, Ordering::Relaxed) + 1;
        if call <= n {
            let failure = Outcome::retry(format!("scripted failure {call} of {n}"));
            return Box::pin(async move { failure });
        }
        let answer = handler(d);
        Box::pin(async move { answer.await.into() })
    }
}

/// `handler`, except that every record's first `n` attempts answer
/// `Outcome::Retry("scripted failure of attempt i")` without calling it.
pub fn fail_attempts<T, F, Fut, O>(n: u32, handler: F) -> impl Fn(Delivery<T>) -> Scripted + 'static
where
    T: 'static,
    F: Fn(Delivery<T>) -> Fut + 'static,
    Fut: Future<Output = O> + 'static,
    O: Into<Outcome> + 'static,
{
    move |d| {
        let attempt = d.attempt();
        if attempt <= n {
            let failure = Outcome::retry(format!("scripted failure of attempt {attempt}"));
            return Box::pin(async move { failure });
        }
        let answer = handler(d);
        Box::pin(async move { answer.await.into() })
    }
}
