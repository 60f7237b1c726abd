//! The AsyncAPI document: what an application's subscriptions, retry and
//! dead-letter topics, declared publishes and message schemas make of it;
//! that it validates against the official AsyncAPI 3.0.0 JSON Schema
//! (`tests/asyncapi/`); that it is served at `/asyncapi` and
//! `/asyncapi.json`; and that two message types with one name are refused
//! at start instead of merged.

mod support;

use std::time::Duration;

use kafkactor::prelude::*;
use kafkactor::{AsyncApi, Raw, RetryTopic};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct OrderPlaced {
    id: u64,
    customer: String,
    lines: Vec<Line>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Line {
    sku: String,
    cents: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Invoice {
    order: u64,
    cents: u64,
}

mod legacy {
    /// Another type named `OrderPlaced`.
    #[derive(Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
    pub struct OrderPlaced {
        pub number: String,
    }
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("asyncapi/asyncapi-3.0.0.schema.json")).unwrap();
    jsonschema::draft7::new(&schema).expect("the official schema compiles")
}

/// Panics with every error when `document` does not validate.
fn assert_valid(document: &Value) {
    let validator = validator();
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "not a valid AsyncAPI 3.0.0 document:\n{}\n{}",
        errors.join("\n"),
        serde_json::to_string_pretty(document).unwrap()
    );
}

async fn billing_app() -> App {
    Kafkactor::builder()
        .broker(Broker::memory())
        .serve_http("127.0.0.1:0")
        .asyncapi(
            AsyncApi::new("billing", "1.4.0")
                .description("Bills orders and sends invoices.")
                .message::<OrderPlaced>()
                .publishes::<Invoice>("invoices"),
        )
        .handle(
            Subscription::to("orders").group("billing").retry(
                RetryPolicy::exponential(3, Duration::from_millis(10))
                    .via_retry_topic(RetryTopic::Ordered),
            ),
            |_: Delivery<OrderPlaced>| async { Outcome::Ack },
        )
        .handle(
            Subscription::to("audit")
                .group("auditors")
                .dead_letter("audit.failed"),
            |_: Delivery<Raw>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap()
}

#[actix::test]
async fn the_document_describes_the_application_and_validates() {
    let app = billing_app().await;
    let doc = app.asyncapi().clone();
    assert_valid(&doc);

    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "billing");
    assert_eq!(doc["info"]["version"], "1.4.0");
    let channels = doc["channels"].as_object().unwrap();
    let mut addresses: Vec<&str> = channels
        .values()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    assert_eq!(
        addresses,
        [
            "audit",
            "audit.failed",
            "invoices",
            "orders",
            "orders.billing.retry",
            "orders.dlq"
        ]
    );
    let operations = doc["operations"].as_object().unwrap();
    let receive = &operations["receive.billing.orders"];
    assert_eq!(receive["action"], "receive");
    assert_eq!(receive["channel"]["$ref"], "#/channels/orders");
    assert_eq!(
        receive["bindings"]["kafka"]["groupId"]["enum"][0],
        "billing"
    );
    assert_eq!(operations["send.Invoice.invoices"]["action"], "send");
    assert_eq!(
        operations["dead-letter.auditors.audit"]["channel"]["$ref"],
        "#/channels/audit.failed"
    );
    assert!(operations.contains_key("retry-send.billing.orders"));
    assert!(operations.contains_key("retry-receive.billing.orders"));

    // Schemas through schemars, nested types under components.schemas.
    let messages = &doc["components"]["messages"];
    let order = &messages["OrderPlaced"];
    assert_eq!(order["contentType"], "application/msgpack");
    assert_eq!(order["payload"]["$ref"], "#/components/schemas/OrderPlaced");
    let schema = &doc["components"]["schemas"]["OrderPlaced"];
    assert_eq!(schema["properties"]["id"]["type"], "integer");
    assert_eq!(
        schema["properties"]["lines"]["items"]["$ref"],
        "#/components/schemas/Line"
    );
    assert_eq!(
        doc["components"]["schemas"]["Line"]["properties"]["sku"]["type"],
        "string"
    );
    assert_eq!(
        messages["Invoice"]["payload"]["$ref"],
        "#/components/schemas/Invoice"
    );
    // Dead letters carry the failure's headers.
    let dead = &messages["OrderPlaced.dead-letter"];
    assert!(dead["headers"]["properties"]["x-error-reason"].is_object());
    assert_eq!(dead["payload"], order["payload"]);
    assert!(messages["Raw"]["payload"]["description"].is_string());

    // Served as it is, under both paths.
    let addr = app.http_addr().unwrap();
    for path in ["/asyncapi", "/asyncapi.json"] {
        let (status, body) = support::http::http_get(addr, path).await.unwrap();
        assert_eq!(status, 200, "{path}");
        let served: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(served, doc, "{path}");
    }
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn without_a_description_the_document_still_validates() {
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .handle(
            Subscription::to("orders").group("billing"),
            |_: Delivery<OrderPlaced>| async { Outcome::Ack },
        )
        .start()
        .await
        .unwrap();
    let doc = app.asyncapi();
    assert_valid(doc);
    let order = &doc["components"]["messages"]["OrderPlaced"];
    assert!(
        order["payload"]["description"]
            .as_str()
            .unwrap()
            .contains("no schema declared"),
        "{order}"
    );
    app.shutdown().await.unwrap();
}

#[actix::test]
async fn two_message_types_with_one_name_are_refused() {
    // A route and a declared schema.
    let started = Kafkactor::builder()
        .broker(Broker::memory())
        .asyncapi(AsyncApi::new("billing", "1").message::<legacy::OrderPlaced>())
        .handle(
            Subscription::to("orders").group("billing"),
            |_: Delivery<OrderPlaced>| async { Outcome::Ack },
        )
        .start()
        .await;
    match started {
        Err(Error::Config(why)) => assert!(
            why.contains("two message types are named OrderPlaced")
                && why.contains("legacy::OrderPlaced"),
            "{why}"
        ),
        other => panic!("two OrderPlaced types should be refused: {other:?}"),
    }
    // Two subscriptions.
    let started = Kafkactor::builder()
        .broker(Broker::memory())
        .handle(
            Subscription::to("orders").group("billing"),
            |_: Delivery<OrderPlaced>| async { Outcome::Ack },
        )
        .handle(
            Subscription::to("old-orders").group("billing-old"),
            |_: Delivery<legacy::OrderPlaced>| async { Outcome::Ack },
        )
        .start()
        .await;
    assert!(matches!(started, Err(Error::Config(_))), "{started:?}");
}

/// The official schema is no rubber stamp: it refuses a document with an
/// operation of no known action.
#[test]
fn the_schema_refuses_a_wrong_document() {
    let wrong = serde_json::json!({
        "asyncapi": "3.0.0",
        "info": { "title": "t", "version": "1" },
        "operations": { "o": { "action": "consume", "channel": { "$ref": "#/channels/c" } } },
    });
    assert!(!validator().is_valid(&wrong));
}
