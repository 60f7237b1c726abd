//! Request-reply: a pricing service answers quotes for a shop.
//!
//! Two shop instances (callers) each read their own partition of
//! `quotes.replies`, without a consumer group. Two pricing instances
//! (responders, one group) answer from their handler with
//! `Delivery::reply`. Each shop sends 200 quote requests at once and awaits
//! the typed replies. A quote for a product the pricing service does not
//! know is rejected: its caller gets an error reply at once instead of
//! waiting for its timeout.
//!
//! Delivery semantics: a request is handled at least once (a responder
//! restarted mid-request answers it again; the second reply is counted as
//! unmatched, never handed to another request). A caller gets its own
//! reply, an error reply, or a timeout error: never another request's
//! reply. The example exits non-zero if a shop gets a wrong or missing
//! answer.
//!
//! Run: `cargo run --example request_reply`

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use kafkactor::prelude::*;
use kafkactor::Replies;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct QuoteRequest {
    product: u64,
    quantity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    product: u64,
    cents: u64,
    priced_by: String,
}

/// A pricing instance: prices known products, rejects the others.
async fn pricing(broker: &Broker, name: &'static str) -> Result<App, Error> {
    Kafkactor::builder()
        .broker(broker.clone())
        .handle(
            Subscription::to("quotes").group("pricing").concurrency(4),
            move |d: Delivery<QuoteRequest>| price(d, name),
        )
        .start()
        .await
}

/// Answers one quote request: `?` fails it by the error's kind, and a
/// failure for good reaches the caller as an error reply.
async fn price(d: Delivery<QuoteRequest>, name: &str) -> Result<(), Failure> {
    let request = d.message();
    if request.product % 100 == 99 {
        return Err(Failure::reject(format!(
            "product {} is not for sale",
            request.product
        )));
    }
    let quote = Quote {
        product: request.product,
        cents: (request.product % 50 + 1) * 100 * u64::from(request.quantity),
        priced_by: name.to_string(),
    };
    d.reply(&quote).await?;
    Ok(())
}

/// A shop instance, reading partition `partition` of the reply topic.
async fn shop(broker: &Broker, partition: i32) -> Result<App, Error> {
    Kafkactor::builder()
        .broker(broker.clone())
        .replies(Replies::on("quotes.replies").partition(partition))
        .start()
        .await
}

#[actix::main]
async fn main() -> Result<(), Error> {
    let broker = Broker::memory();
    broker.create_topic("quotes.replies", 2).await?;
    let responders = [
        pricing(&broker, "pricing-a").await?,
        pricing(&broker, "pricing-b").await?,
    ];
    let shops = [shop(&broker, 0).await?, shop(&broker, 1).await?];

    let started = Instant::now();
    let (mut quoted, mut refused, mut wrong) = (0, 0, 0);
    let asks = shops.iter().enumerate().flat_map(|(s, shop)| {
        let requester = shop.requester();
        (0..200u64).map(move |i| {
            let requester = requester.clone();
            let product = s as u64 * 1_000 + i;
            async move {
                let request =
                    Publish::to("quotes")
                        .key(product.to_string())
                        .message(&QuoteRequest {
                            product,
                            quantity: 2,
                        })?;
                let answer = requester
                    .request::<Quote>(request, Duration::from_secs(5))
                    .await;
                Ok::<_, Error>((product, answer))
            }
        })
    });
    for result in join_all(asks).await {
        let (product, answer) = result?;
        match answer {
            Ok(quote) if quote.product == product => quoted += 1,
            Ok(quote) => {
                eprintln!("product {product} got the quote of {}", quote.product);
                wrong += 1;
            }
            Err(Error::Refused { reason, .. }) if product % 100 == 99 => {
                assert!(reason.contains("not for sale"));
                refused += 1;
            }
            Err(e) => {
                eprintln!("product {product}: {e}");
                wrong += 1;
            }
        }
    }
    println!(
        "{quoted} quotes and {refused} refusals for 400 requests from 2 shops to 2 pricing \
         instances in {:.2} s; {wrong} wrong or missing",
        started.elapsed().as_secs_f64()
    );
    for app in shops.into_iter().chain(responders) {
        app.shutdown().await?;
    }
    if wrong > 0 || quoted + refused != 400 {
        return Err(Error::Unavailable(
            "a shop got a wrong or missing answer".into(),
        ));
    }
    Ok(())
}
