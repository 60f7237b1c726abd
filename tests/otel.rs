//! OpenTelemetry (feature `otel`): with a `tracing-opentelemetry` layer on
//! the subscriber, the spans OpenTelemetry exports link up across the
//! broker. The `traceparent` a record carries is its exported `publish`
//! span's, the exported `handle` span is that span's child, directly and
//! through a delay bucket, and a handler's publish continues the trace; a
//! publish inside an application's own span joins that span's trace. On
//! the embedded broker, Apache Kafka and the mock cluster (the broker
//! write links to each publish it carries); and
//! `kafkactor::otel::Otlp` posts the spans as OTLP protobuf to a collector
//! listening on a real socket.
#![cfg(feature = "otel")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::TraceContext;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use support::forwarding::forwarding_app;
use support::*;
use tracing_subscriber::layer::SubscriberExt;

type Log = Arc<Mutex<Vec<(String, Option<TraceContext>)>>>;

/// The forwarding application ([`forwarding_app`]), logging each
/// record's trace context.
async fn app(tb: &TestBroker, first: &str, second: &str, log: &Log) -> App {
    let log = log.clone();
    forwarding_app(tb, first, second, move |name, d| {
        log.lock().unwrap().push((name.into(), d.trace_context()))
    })
    .await
}

/// Publishes "now" inside an application span `request` and "later"
/// through the 200 ms bucket, and waits until both went through both
/// handlers.
async fn publish_both(tb: &TestBroker, app: &App, first: &str, log: &Log) {
    let producer = app.producer();
    let request = tracing::info_span!("request");
    let sent =
        request.in_scope(|| producer.send(Publish::to(first).message(&"now".to_string()).unwrap()));
    sent.await.unwrap().unwrap();
    drop(request);
    producer
        .send(
            Publish::to(first)
                .message(&"later".to_string())
                .unwrap()
                .delay(Duration::from_millis(500)),
        )
        .await
        .unwrap()
        .unwrap();
    eventually(
        "both records through both handlers",
        tb.patience(Duration::from_secs(10)),
        || log.lock().unwrap().len() == 4,
    )
    .await;
}

fn ids(trace: TraceContext) -> (TraceId, SpanId) {
    (TraceId::from(trace.trace_id), SpanId::from(trace.span_id))
}

/// The one exported span called `name` that `pick` selects.
fn one<'a>(spans: &'a [SpanData], name: &str, pick: impl Fn(&SpanData) -> bool) -> &'a SpanData {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name && pick(s)).collect();
    assert_eq!(found.len(), 1, "one {name} span: {found:#?}");
    found[0]
}

/// Checks the exported spans against what the handlers saw: each record's
/// `traceparent` is its exported `publish` span, the `handle` span is that
/// span's child, the handler's publish the `handle` span's child, and the
/// second handler's span that publish's child, all in one trace. Returns
/// the first publish spans' parents.
fn assert_linked(spans: &[SpanData], log: &Log) -> Vec<SpanId> {
    let log = log.lock().unwrap().clone();
    let mut parents = Vec::new();
    for (_, trace) in log.iter().filter(|(n, _)| n == "first") {
        let (trace_id, span_id) = ids(trace.expect("a traceparent on every record"));
        let publish = one(spans, "publish", |s| s.span_context.span_id() == span_id);
        assert_eq!(publish.span_context.trace_id(), trace_id);
        parents.push(publish.parent_span_id);
        // The broker write links to it.
        assert!(
            spans.iter().any(|s| s.name == "broker_write"
                && s.links.iter().any(|l| l.span_context.span_id() == span_id)),
            "a broker_write span links to the publish span"
        );
        let handle = one(spans, "handle", |s| s.parent_span_id == span_id);
        assert_eq!(handle.span_context.trace_id(), trace_id);
        let forwarded = one(spans, "publish", |s| {
            s.parent_span_id == handle.span_context.span_id()
        });
        assert_eq!(forwarded.span_context.trace_id(), trace_id);
        // The second record's traceparent is the forwarding publish span.
        let forwarded_id = forwarded.span_context.span_id();
        assert!(
            log.iter()
                .any(|(n, t)| n == "second" && t.map(|t| ids(t).1) == Some(forwarded_id)),
            "the second record carries the handler's publish span: {log:?}"
        );
        let second = one(spans, "handle", |s| s.parent_span_id == forwarded_id);
        assert_eq!(second.span_context.trace_id(), trace_id);
    }
    assert_eq!(parents.len(), 2, "{log:?}");
    parents
}

async fn spans_link_across_the_broker(tb: TestBroker) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);
    let (first, second) = (unique("first"), unique("second"));
    tb.topics(&[&first, &second]).await;
    let log = Log::default();
    let app = app(&tb, &first, &second, &log).await;
    publish_both(&tb, &app, &first, &log).await;
    let finished = || exporter.get_finished_spans().unwrap();
    eventually("four handle spans exported", Duration::from_secs(5), || {
        finished().iter().filter(|s| s.name == "handle").count() >= 4
    })
    .await;
    let spans = finished();
    let parents = assert_linked(&spans, &log);
    // "now" was published inside `request`: its publish span is that
    // span's child; "later" started a trace of its own.
    let request = one(&spans, "request", |_| true);
    assert!(
        parents.contains(&request.span_context.span_id()),
        "{parents:?}"
    );
    assert!(parents.contains(&SpanId::INVALID), "{parents:?}");
    app.shutdown().await.unwrap();
}
on_every_broker!(
    spans_link_across_the_broker,
    super::spans_link_across_the_broker,
    2
);

/// What a collector received: every span of every OTLP request, with its
/// resource's service name.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)>>>);

async fn collect(
    body: actix_web::web::Bytes,
    collected: actix_web::web::Data<Collected>,
) -> actix_web::HttpResponse {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return actix_web::HttpResponse::BadRequest().finish();
    };
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref())
            .and_then(|v| match &v.value {
                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                collected.0.lock().unwrap().push((service.clone(), span));
            }
        }
    }
    actix_web::HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .body(ExportTraceServiceResponse::default().encode_to_vec())
}

/// `Otlp` posts kafkactor's spans to a collector on a real socket: the
/// `handle` span arrives as the child of the `publish` span.
#[actix::test]
async fn otlp_exports_to_a_collector() {
    let collected = Collected::default();
    let data = actix_web::web::Data::new(collected.clone());
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .route("/v1/traces", actix_web::web::post().to(collect))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let stop = server.handle();
    actix::spawn(server);

    let otlp = kafkactor::otel::Otlp::to(&format!("http://{addr}/v1/traces"), "otel-test").unwrap();
    let subscriber = tracing_subscriber::registry().with(otlp.layer());
    let _guard = tracing::subscriber::set_default(subscriber);
    let tb = TestBroker::memory(1);
    let topic = unique("otlp");
    let seen: Arc<Mutex<Vec<Option<TraceContext>>>> = Arc::default();
    let log = seen.clone();
    let app = Kafkactor::builder()
        .broker(tb.broker.clone())
        .handle(
            Subscription::to(topic.as_str()).group("otlp"),
            move |d: Delivery<String>| {
                log.lock().unwrap().push(d.trace_context());
                async { Outcome::Ack }
            },
        )
        .start()
        .await
        .unwrap();
    app.producer()
        .send(
            Publish::to(topic.as_str())
                .message(&"hi".to_string())
                .unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    eventually("the record handled", Duration::from_secs(5), || {
        seen.lock().unwrap().len() == 1
    })
    .await;
    let trace = seen.lock().unwrap()[0].expect("a traceparent");
    let (trace_id, span_id) = (
        trace.trace_id.to_be_bytes().to_vec(),
        trace.span_id.to_be_bytes().to_vec(),
    );
    let handle_exported = || {
        collected
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|(_, s)| s.name == "handle" && s.parent_span_id == span_id)
    };
    // The handle span ends just after the handler answers; flush until the
    // collector has it (each flush posts what has ended).
    eventually_async(
        "the handle span at the collector",
        Duration::from_secs(10),
        || {
            let flushed = otlp.flush();
            async move { flushed.is_ok() && handle_exported() }
        },
    )
    .await;
    let spans = collected.0.lock().unwrap().clone();
    let publish: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.name == "publish" && s.span_id == span_id)
        .collect();
    assert_eq!(publish.len(), 1, "{spans:#?}");
    assert_eq!(publish[0].1.trace_id, trace_id);
    assert_eq!(publish[0].0, "otel-test");
    let handle = spans
        .iter()
        .find(|(_, s)| s.name == "handle" && s.parent_span_id == span_id)
        .unwrap();
    assert_eq!(handle.1.trace_id, trace_id);
    assert!(
        handle.1.attributes.iter().any(|a| a.key == "topic"),
        "span fields become attributes: {:?}",
        handle.1.attributes
    );
    app.shutdown().await.unwrap();
    otlp.shutdown().unwrap();
    stop.stop(true).await;
}
