//! scale: 10,000 idle subscriptions: start time, memory, idle CPU.

use super::*;

/// Starts `n` subscriptions in one application: (start seconds, resident
/// MiB, CPU % while idle for 5 s).
pub(crate) async fn scale(n: usize) -> (f64, f64, f64) {
    let broker = Broker::memory_with_partitions(1).unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let rss_before = rss_mib();
    let started = Instant::now();
    let mut builder = Kafkactor::builder().broker(broker.clone());
    for i in 0..n {
        let handled = handled.clone();
        builder = builder.subscribe(
            Subscription::to(format!("scale-{i}")).group(format!("g-{i}")),
            move || Noop {
                handled: handled.clone(),
            },
        );
    }
    let app = builder.start().await.unwrap();
    // Started means every subscription has joined its group.
    let memory = broker.as_memory().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in (0..n).rev() {
        while memory.assignment(&format!("g-{i}")).is_empty() {
            assert!(Instant::now() < deadline, "subscriptions did not start");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let start_secs = started.elapsed().as_secs_f64();
    let rss = rss_mib() - rss_before;
    let cpu_before = cpu_seconds();
    let idle_from = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let cpu = (cpu_seconds() - cpu_before) / idle_from.elapsed().as_secs_f64() * 100.0;
    app.shutdown().await.unwrap();
    (start_secs, rss, cpu)
}

pub(crate) fn proc_status(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn rss_mib() -> f64 {
    proc_status("VmRSS:").unwrap_or(0.0) / 1024.0
}

/// User + system CPU seconds of this process.
pub(crate) fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: utime is field 14, stime 15 (1-based), here 11 and 12.
    (ticks(11) + ticks(12)) / 100.0
}
