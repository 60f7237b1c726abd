//! Writes the AsyncAPI 3.0 document of the README's quickstart service: its
//! `orders` channel read by group `billing`, the dead-letter topic
//! `orders.dlq`, the `OrderPlaced` message and its JSON Schema (derived
//! with `schemars`). The same document is served at `/asyncapi` when the
//! service serves HTTP.
//!
//! Run: `cargo run --example asyncapi` (to stdout) or
//! `cargo run --example asyncapi -- quickstart.asyncapi.json` (to a file).
//! It exits non-zero if the document does not show the service's channel,
//! group and schema.
//!
//! Delivery semantics: none; nothing is published or consumed.

use kafkactor::prelude::*;
use kafkactor::AsyncApi;
use serde::{Deserialize, Serialize};

/// An order, as the quickstart publishes it.
#[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct OrderPlaced {
    /// The order's number.
    pub id: u64,
    /// Its total, in cents.
    pub total_cents: u64,
}

/// The quickstart's handler.
pub async fn bill(d: Delivery<OrderPlaced>) -> Result<(), Failure> {
    if d.message().total_cents == 0 {
        return Err(Failure::reject("empty order"));
    }
    Ok(())
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .asyncapi(
            AsyncApi::new("quickstart", env!("CARGO_PKG_VERSION"))
                .description("Bills orders; an empty order is dead-lettered.")
                .message::<OrderPlaced>(),
        )
        .handle(
            Subscription::to("orders").group("billing").concurrency(8),
            bill,
        )
        .start()
        .await?;
    let document = app.asyncapi().clone();
    app.shutdown().await?;

    let shown = document["operations"]["receive.billing.orders"]["bindings"]["kafka"]["groupId"]
        ["enum"][0]
        == "billing"
        && document["channels"]["orders.dlq"]["address"] == "orders.dlq"
        && document["components"]["schemas"]["OrderPlaced"]["properties"]["total_cents"]
            .is_object();
    let text = serde_json::to_string_pretty(&document)?;
    match std::env::args().nth(1) {
        Some(path) => {
            std::fs::write(&path, &text)?;
            eprintln!("wrote {path} ({} bytes)", text.len());
        }
        None => println!("{text}"),
    }
    if !shown {
        eprintln!("FAILED: the document does not show the orders channel, its group and schema");
        std::process::exit(1);
    }
    Ok(())
}
