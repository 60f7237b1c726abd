//! outbox_relay_rows_per_s: the outbox relay's throughput. `n` records
//! written to an outbox table (PostgreSQL on loopback) before the clock
//! starts, then relayed to the embedded broker in batches of 500 until the
//! broker acknowledged them all (kafkactor); against a plain Producer
//! publishing the same records in batches of 500, each waited for
//! (baseline). The difference is what the relay's database work costs:
//! taking the rows, deleting them, one transaction per batch.

use super::*;
use e2e::unique;
use kafkactor::outbox::{Outbox, OutboxRelay};

const BATCH: usize = 500;

fn record(topic: &str, id: u64) -> Publish {
    Publish::to(topic)
        .key(key_of(id, 1_000))
        .message(&sample(id))
        .unwrap()
}

/// Rows per second the relay moves from a table holding `n` rows.
pub(crate) async fn relay_rows_per_s(url: &str, n: u64) -> f64 {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("PostgreSQL reachable");
    let outbox = Outbox::table(&unique("bench_outbox").replace('-', "_")).unwrap();
    outbox.migrate(&pool).await.unwrap();
    let topic = unique("outbox");
    let filling = Instant::now();
    let mut first = 0;
    while first < n {
        let mut tx = pool.begin().await.unwrap();
        let chunk = (first..(first + 1_000).min(n)).map(|id| record(&topic, id));
        outbox.publish_all(&mut *tx, chunk).await.unwrap();
        tx.commit().await.unwrap();
        first += 1_000;
    }
    eprintln!(
        "  outbox: {n} rows written (publish_all, 1,000 a transaction) in {:.1} us each",
        filling.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let started = Instant::now();
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .outbox_relay(OutboxRelay::new(pool.clone(), outbox.clone()).batch(BATCH))
        .start()
        .await
        .unwrap();
    let sent = || {
        app.metrics_registry()
            .gather()
            .iter()
            .filter(|f| f.name() == "kafkactor_outbox_sent_total")
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum::<f64>() as u64
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent() < n {
        assert!(Instant::now() < deadline, "rows not relayed in 120 s");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = started.elapsed();
    app.shutdown().await.unwrap();
    let drop = format!("DROP TABLE {}", outbox.table_name());
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&pool)
        .await
        .unwrap();
    n as f64 / took.as_secs_f64()
}

/// Records per second a plain Producer publishes, `BATCH` at a time.
pub(crate) async fn producer_rows_per_s(n: u64) -> f64 {
    let topic = unique("plain");
    let started = Instant::now();
    let app = Kafkactor::builder()
        .broker(Broker::memory())
        .start()
        .await
        .unwrap();
    let producer = app.producer();
    let mut first = 0;
    while first < n {
        let batch = (first..(first + BATCH as u64).min(n))
            .map(|id| record(&topic, id))
            .collect();
        for outcome in producer
            .send_batch(kafkactor::PublishBatch(batch))
            .await
            .unwrap()
        {
            outcome.unwrap();
        }
        first += BATCH as u64;
    }
    let took = started.elapsed();
    app.shutdown().await.unwrap();
    n as f64 / took.as_secs_f64()
}
