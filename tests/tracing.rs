//! W3C trace context across the broker: the handler's `handle` span is a
//! child of the publisher's `publish` span (same trace id, the publish
//! span's id as its parent), directly and through a delay bucket; a
//! handler's own publishes continue the trace and carry the tenant and the
//! correlation id on; with no subscriber the headers still flow. On the
//! embedded broker, Apache Kafka and the mock cluster.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::TraceContext;
use support::forwarding::forwarding_app;
use support::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// A span's name and fields.
type SpanFields = (String, HashMap<String, String>);

/// Every span kafkactor opened, in the order opened, and which spans each
/// follows from (by that order).
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Opened>>);

#[derive(Default)]
struct Opened {
    spans: Vec<SpanFields>,
    follows: Vec<(usize, usize)>,
    /// The open spans' places in `spans`, by tracing id (a closed span's
    /// id may be given to a new one).
    open: HashMap<u64, usize>,
}

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        if attrs.metadata().target() != "kafkactor" {
            return;
        }
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut opened = self.0.lock().unwrap();
        let at = opened.spans.len();
        opened
            .spans
            .push((attrs.metadata().name().to_string(), fields));
        opened.open.insert(id.into_u64(), at);
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, _: Context<'_, S>) {
        let mut opened = self.0.lock().unwrap();
        if let Some(&at) = opened.open.get(&id.into_u64()) {
            values.record(&mut Fields(&mut opened.spans[at].1));
        }
    }

    fn on_follows_from(&self, id: &Id, follows: &Id, _: Context<'_, S>) {
        let mut opened = self.0.lock().unwrap();
        if let (Some(&a), Some(&b)) = (
            opened.open.get(&id.into_u64()),
            opened.open.get(&follows.into_u64()),
        ) {
            opened.follows.push((a, b));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        self.0.lock().unwrap().open.remove(&id.into_u64());
    }
}

impl Spans {
    /// The fields of every span called `name` whose `field` is `value`.
    fn find(&self, name: &str, field: &str, value: &str) -> Vec<HashMap<String, String>> {
        self.0
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|(n, f)| n == name && f.get(field).is_some_and(|v| v == value))
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// The names of the spans that follow from the `publish` span whose
    /// `span_id` is `span_id`.
    fn following_publish(&self, span_id: &str) -> Vec<String> {
        let opened = self.0.lock().unwrap();
        let publish = opened
            .spans
            .iter()
            .position(|(n, f)| n == "publish" && f.get("span_id").is_some_and(|v| v == span_id));
        opened
            .follows
            .iter()
            .filter(|(_, b)| Some(*b) == publish)
            .map(|(a, _)| opened.spans[*a].0.clone())
            .collect()
    }
}

/// What the handlers saw of each delivery.
#[derive(Debug, Clone)]
struct Seen {
    trace: Option<TraceContext>,
    tenant: Option<String>,
    correlation: Option<String>,
}

type Log = Arc<Mutex<Vec<(String, Seen)>>>;

fn seen<T>(d: &Delivery<T>) -> Seen {
    Seen {
        trace: d.trace_context(),
        tenant: d.tenant().map(str::to_string),
        correlation: d.correlation_id().map(str::to_string),
    }
}

/// The forwarding application ([`forwarding_app`]), logging what each
/// subscription saw.
async fn app(tb: &TestBroker, first: &str, second: &str, log: &Log) -> App {
    let log = log.clone();
    forwarding_app(tb, first, second, move |name, d| {
        log.lock().unwrap().push((name.into(), seen(d)))
    })
    .await
}

async fn trace_crosses_the_broker(tb: TestBroker) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let (first, second) = (unique("first"), unique("second"));
    tb.topics(&[&first, &second]).await;
    let log = Log::default();
    let app = app(&tb, &first, &second, &log).await;
    let producer = app.producer();
    producer
        .send(
            Publish::to(first.as_str())
                .tenant("acme")
                .correlation_id("order-7")
                .message(&"now".to_string())
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    producer
        .send(
            Publish::to(first.as_str())
                .message(&"later".to_string())
                .unwrap()
                .delay(Duration::from_millis(500)),
        )
        .await
        .unwrap()
        .unwrap();
    let patience = tb.patience(Duration::from_secs(10));
    eventually("both records through both handlers", patience, || {
        log.lock().unwrap().len() == 4
    })
    .await;
    let log = log.lock().unwrap().clone();
    let hex32 = |id: u128| format!("{id:032x}");
    let hex16 = |id: u64| format!("{id:016x}");
    for (name, s) in log.iter().filter(|(n, _)| n == "first") {
        let trace = s.trace.expect("a traceparent on every published record");
        // The publish span that wrote it...
        let publish = spans.find("publish", "span_id", &hex16(trace.span_id));
        assert_eq!(publish.len(), 1, "{name}: the publish span {trace}");
        assert_eq!(publish[0]["trace_id"], hex32(trace.trace_id));
        // The broker write follows from it (the span rode along to the
        // connection), and it lasted until the broker's answer, which it
        // records.
        assert_eq!(
            spans.following_publish(&hex16(trace.span_id)),
            ["broker_write"],
            "{name}: the write of {trace}"
        );
        assert!(
            publish[0].contains_key("offset") && publish[0].contains_key("partition"),
            "{name}: the publish span records where the record went: {:?}",
            publish[0]
        );
        // ... is the parent of the handle span, in the same trace.
        let handle = spans.find("handle", "parent_span_id", &hex16(trace.span_id));
        assert_eq!(handle.len(), 1, "{name}: one handle span below {trace}");
        assert_eq!(handle[0]["trace_id"], hex32(trace.trace_id));
        assert_eq!(handle[0]["topic"], first);
        // The handler's own publish is a child of its handle span, and the
        // second handler's span a child of that publish.
        let forwarded = spans.find("publish", "parent_span_id", &handle[0]["span_id"]);
        assert_eq!(forwarded.len(), 1, "the handler's publish");
        assert_eq!(forwarded[0]["trace_id"], hex32(trace.trace_id));
        let second_handle = spans.find("handle", "parent_span_id", &forwarded[0]["span_id"]);
        assert_eq!(second_handle.len(), 1, "the second handler's span");
        assert_eq!(second_handle[0]["trace_id"], hex32(trace.trace_id));
        assert_eq!(second_handle[0]["topic"], second);
    }
    // Both traces are different ones.
    let traces: std::collections::HashSet<u128> =
        log.iter().map(|(_, s)| s.trace.unwrap().trace_id).collect();
    assert_eq!(traces.len(), 2, "{log:?}");
    // Tenant and correlation id reach the handler and flow on.
    let with_tenant: Vec<_> = log
        .iter()
        .filter(|(_, s)| s.tenant.as_deref() == Some("acme"))
        .collect();
    assert_eq!(with_tenant.len(), 2, "{log:?}");
    assert!(with_tenant
        .iter()
        .all(|(_, s)| s.correlation.as_deref() == Some("order-7")));
    app.shutdown().await.unwrap();
}
on_every_broker!(traces_cross_the_broker, super::trace_crosses_the_broker, 2);

/// With no subscriber nothing is generated, but a context given on publish
/// flows through a handler's publish all the same.
#[actix::test]
async fn a_given_context_flows_without_a_subscriber() {
    let tb = TestBroker::memory(2);
    let (first, second) = (unique("first"), unique("second"));
    let log = Log::default();
    let app = app(&tb, &first, &second, &log).await;
    let given = TraceContext::new_root();
    let producer = app.producer();
    producer
        .send(
            Publish::to(first.as_str())
                .trace_context(given)
                .tenant("acme")
                .message(&"now".to_string())
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    producer
        .send(
            Publish::to(first.as_str())
                .message(&"bare".to_string())
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    eventually("both through both handlers", Duration::from_secs(5), || {
        log.lock().unwrap().len() == 4
    })
    .await;
    let log = log.lock().unwrap().clone();
    let traced: Vec<_> = log.iter().filter(|(_, s)| s.trace.is_some()).collect();
    assert_eq!(
        traced.len(),
        2,
        "only the given trace, nothing generated: {log:?}"
    );
    let (_, first_seen) = traced.iter().find(|(n, _)| n == "first").unwrap();
    let (_, second_seen) = traced.iter().find(|(n, _)| n == "second").unwrap();
    assert_eq!(first_seen.trace, Some(given));
    let child = second_seen.trace.unwrap();
    assert_eq!(child.trace_id, given.trace_id);
    assert_ne!(child.span_id, given.span_id);
    assert_eq!(second_seen.tenant.as_deref(), Some("acme"));
    app.shutdown().await.unwrap();
}

/// A record retried and dead-lettered stays in its publisher's trace: the
/// `retry` and `dead_letter` spans are children of its `publish` span, and
/// so is the `handle` span of the dead-letter topic's own handler.
async fn dead_letters_stay_in_the_trace(tb: TestBroker) {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);
    let (topic, dlq) = (unique("failing"), unique("failing.dlq"));
    tb.topics(&[&topic, &dlq]).await;
    let log: Arc<Mutex<Vec<Option<TraceContext>>>> = Arc::default();
    let dead = log.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str())
                .group(unique("failing").as_str())
                .retry(RetryPolicy::exponential(2, Duration::from_millis(1)))
                .dead_letter(dlq.as_str()),
            |_: Delivery<String>| async { Outcome::retry("always failing") },
        )
        .handle(
            Subscription::to(dlq.as_str()).group(unique("dlq").as_str()),
            move |d: Delivery<String>| {
                dead.lock().unwrap().push(d.trace_context());
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    until_owned(
        "both subscriptions own partitions",
        tb.patience(Duration::from_secs(5)),
        &app,
        |n| n >= 2,
    )
    .await;
    app.producer()
        .send(
            Publish::to(topic.as_str())
                .message(&"doomed".to_string())
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    eventually(
        "the dead letter handled",
        tb.patience(Duration::from_secs(10)),
        || log.lock().unwrap().len() == 1,
    )
    .await;
    let trace = log.lock().unwrap()[0].expect("the dead letter keeps its traceparent");
    let (trace_id, span_id) = (
        format!("{:032x}", trace.trace_id),
        format!("{:016x}", trace.span_id),
    );
    assert_eq!(spans.find("publish", "span_id", &span_id).len(), 1);
    let retries = spans.find("retry", "parent_span_id", &span_id);
    assert_eq!(retries.len(), 1, "one retry of two attempts: {retries:?}");
    let dead_letter = spans.find("dead_letter", "parent_span_id", &span_id);
    assert_eq!(dead_letter.len(), 1);
    let handles = spans.find("handle", "parent_span_id", &span_id);
    assert_eq!(
        handles.len(),
        3,
        "two attempts and the dead letter's handler"
    );
    assert!(retries
        .iter()
        .chain(&dead_letter)
        .chain(&handles)
        .all(|s| s["trace_id"] == trace_id));
    assert!(handles.iter().any(|s| s["topic"] == dlq));
    app.shutdown().await.unwrap();
}
on_every_broker!(
    dead_letters_stay_in_the_trace,
    super::dead_letters_stay_in_the_trace,
    1
);
