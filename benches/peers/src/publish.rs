//! The publishing scenarios: `publish` and `publish_inflight`.

use std::future::{Future, poll_fn};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::task::Poll;

use ruststream::memory::prelude::*;
use ruststream::memory::{MemoryPublisher, PARTITION_KEY_HEADER};
use ruststream::{Bytes, Seekable as _};

use crate::{ORDER, ORDERS, measured, order_json, queued, runtime};

/// How many publishes `publish_inflight` has pending at once.
const IN_FLIGHT: usize = 256;

/// How the records are published.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each publish awaited before the next is made.
    OneAtATime,
    /// [`IN_FLIGHT`] publishes at once.
    InFlight,
}

/// One order as a user publishes it: a key, a header, a JSON payload.
async fn publish_one(publisher: &MemoryPublisher, id: usize) {
    let mut headers = HeaderMap::new();
    headers.insert(
        Str::from_static(PARTITION_KEY_HEADER),
        Bytes::copy_from_slice(&[(id % 64) as u8]),
    );
    headers.insert(Str::from_static("x-source"), Bytes::from_static(b"bench"));
    publisher
        .message(&ORDER)
        .to(ORDERS)
        .with_headers(headers)
        .publish()
        .await
        .expect("published");
}

/// Starts a service on a retaining broker, takes its publisher, and
/// publishes `n` records in the measured phase; then reads them back.
pub fn publish(n: usize, mode: Mode) -> u64 {
    let runtime = runtime();
    let broker = MemoryBroker::retaining(Retention::Messages(NonZeroUsize::MAX));
    let bindable = broker.clone().bindable();
    let token = bindable.bind(Publish);
    let app = RustStream::new(AppInfo::new("peers", "0.0.0")).with_broker(bindable, |_| {});
    let running = runtime.block_on(app.start()).expect("the service starts");
    let publisher = runtime
        .block_on(running.publisher(token))
        .expect("the publisher pairs");
    // The name is in the broker's log, and every step of the path has run
    // once, before the measured phase.
    runtime.block_on(publish_one(&publisher, 0));

    let allocations = match mode {
        Mode::OneAtATime => measured(|| {
            runtime.block_on(async {
                for id in 0..n {
                    publish_one(&publisher, id).await;
                }
            });
        }),
        Mode::InFlight => measured(|| {
            runtime.block_on(joined_in_chunks(n, |id| publish_one(&publisher, id)));
        }),
    };

    let body = order_json();
    let mut reader = broker.subscribe(ORDERS);
    let kept = runtime.block_on(async {
        reader
            .seeker()
            .seek(MemoryPosition::start())
            .await
            .expect("the reader seeks");
        queued(&mut reader, |message| {
            assert_eq!(message.payload(), body, "the order's JSON");
            assert_eq!(message.partition_key().map(<[u8]>::len), Some(1), "a key");
            assert_eq!(message.headers().get_str("x-source"), Some("bench"));
        })
        .await
    });
    assert_eq!(kept, n + 1, "every record kept");
    runtime
        .block_on(running.shutdown())
        .expect("the service stops");
    allocations
}

/// Runs the futures `make` builds for `0..n`, [`IN_FLIGHT`] pending at
/// once: each chunk's futures are all made, then polled together until every
/// one is done (a join).
///
/// The slots are allocated once per run, so the harness allocates nothing
/// per record (`join_all` of more than 30 futures, `FuturesOrdered` and
/// `buffered` allocate a task per future).
async fn joined_in_chunks<Fut>(n: usize, mut make: impl FnMut(usize) -> Fut)
where
    Fut: Future<Output = ()>,
{
    let mut slots: Pin<Box<[Option<Fut>]>> = Box::into_pin((0..IN_FLIGHT).map(|_| None).collect());
    let mut start = 0;
    while start < n {
        let chunk = (n - start).min(IN_FLIGHT);
        for i in 0..chunk {
            slot(slots.as_mut(), i).set(Some(make(start + i)));
        }
        poll_fn(|cx| {
            let mut pending = false;
            for i in 0..chunk {
                let mut slot = slot(slots.as_mut(), i);
                if let Some(publish) = slot.as_mut().as_pin_mut() {
                    if publish.poll(cx).is_ready() {
                        slot.set(None);
                    } else {
                        pending = true;
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        start += chunk;
    }
}

/// The `i`th slot of a pinned slice of slots, pinned.
fn slot<T>(slots: Pin<&mut [Option<T>]>, i: usize) -> Pin<&mut Option<T>> {
    // SAFETY: structural pinning. The slice is boxed and pinned, so an
    // element never moves; one is only ever replaced through `Pin::set`,
    // which drops the old value in place.
    unsafe { slots.map_unchecked_mut(|slots| &mut slots[i]) }
}
