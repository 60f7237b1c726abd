//! Latency histograms cheap enough to observe every record: a Prometheus
//! histogram family (a [`Collector`]) whose series count durations in
//! nanoseconds into fixed buckets with two relaxed atomic adds, or, through
//! a [`LocalSeries`], into plain integers added to the shared series once
//! per batch. (The `prometheus` crate's own histogram searches its buckets
//! linearly and keeps a hot and a cold shard: several times the cost.)

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Buckets: upper bounds of 1 us times a power of two, 1 us to 2^24 us
/// (16.8 s), and one past the last (`+Inf`). Powers of two, so that a
/// duration's bucket is a count of leading zeros, not a search.
const BOUNDS: usize = 25;
const BUCKETS: usize = BOUNDS + 1;

/// The upper bound of bucket `i`, in nanoseconds.
#[inline]
fn bound_ns(i: usize) -> u64 {
    1_000 << i
}

/// The smallest bucket whose bound `nanos` does not exceed.
#[inline]
fn bucket_of(nanos: u64) -> usize {
    if nanos <= bound_ns(0) {
        return 0;
    }
    // With 2^(b-1) < nanos <= 2^b (b the bit length of nanos - 1, at least
    // 10 here) and 1000 * 2^(b-11) < 2^(b-1), the bucket is b - 10 or the
    // one after: one comparison, no division.
    let b = 64 - (nanos - 1).leading_zeros() as usize;
    let i = b - 10;
    (i + usize::from(nanos > bound_ns(i))).min(BUCKETS - 1)
}

/// One labelled histogram: counts per bucket (not cumulative) and the sum.
#[derive(Debug)]
pub(crate) struct Series {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Series {
    fn new() -> Self {
        Series {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Counts one duration, in nanoseconds.
    pub(crate) fn observe(&self, nanos: u64) {
        self.buckets[bucket_of(nanos)].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(nanos, Relaxed);
    }

    /// A local counter for this series, added to it on [`LocalSeries::flush`].
    pub(crate) fn local(self: &Arc<Self>) -> LocalSeries {
        LocalSeries {
            shared: self.clone(),
            buckets: [0; BUCKETS],
            sum_ns: 0,
            pending: false,
        }
    }
}

/// Counts of one series kept by one actor and added to the shared series
/// in one go (and when dropped).
#[derive(Debug)]
pub(crate) struct LocalSeries {
    shared: Arc<Series>,
    buckets: [u64; BUCKETS],
    sum_ns: u64,
    pending: bool,
}

impl LocalSeries {
    /// Counts one duration, in nanoseconds.
    #[inline]
    pub(crate) fn observe(&mut self, nanos: u64) {
        self.buckets[bucket_of(nanos)] += 1;
        self.sum_ns = self.sum_ns.wrapping_add(nanos);
        self.pending = true;
    }

    pub(crate) fn flush(&mut self) {
        if !std::mem::take(&mut self.pending) {
            return;
        }
        for (shared, local) in self.shared.buckets.iter().zip(&mut self.buckets) {
            if *local > 0 {
                shared.fetch_add(std::mem::take(local), Relaxed);
            }
        }
        self.shared
            .sum_ns
            .fetch_add(std::mem::take(&mut self.sum_ns), Relaxed);
    }
}

impl Drop for LocalSeries {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A histogram family: one [`Series`] per set of label values.
pub(crate) struct Histograms {
    desc: Desc,
    series: Mutex<Vec<(Vec<String>, Arc<Series>)>>,
}

impl Histograms {
    pub(crate) fn new(name: &str, help: &str, labels: &[&str]) -> Self {
        let desc = Desc::new(
            name.into(),
            help.into(),
            labels.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )
        .expect("a valid metric definition");
        Histograms {
            desc,
            series: Mutex::new(Vec::new()),
        }
    }

    /// The series of these label values (one per set, made on first use).
    pub(crate) fn series(&self, values: &[&str]) -> Arc<Series> {
        let mut all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = all.iter().find(|(v, _)| v.iter().eq(values.iter())) {
            return s.clone();
        }
        let series = Arc::new(Series::new());
        all.push((
            values.iter().map(|v| v.to_string()).collect(),
            series.clone(),
        ));
        series
    }
}

impl Collector for Histograms {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut metrics = Vec::with_capacity(all.len());
        for (values, series) in all.iter() {
            let mut h = proto::Histogram::default();
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(BOUNDS);
            for i in 0..BOUNDS {
                cumulative += series.buckets[i].load(Relaxed);
                let mut b = proto::Bucket::default();
                b.set_cumulative_count(cumulative);
                b.set_upper_bound(bound_ns(i) as f64 / 1e9);
                buckets.push(b);
            }
            cumulative += series.buckets[BUCKETS - 1].load(Relaxed);
            h.set_bucket(buckets);
            h.set_sample_count(cumulative);
            h.set_sample_sum(series.sum_ns.load(Relaxed) as f64 / 1e9);
            let labels = self
                .desc
                .variable_labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = proto::LabelPair::default();
                    pair.set_name(name.clone());
                    pair.set_value(value.clone());
                    pair
                })
                .collect();
            let mut m = proto::Metric::default();
            m.set_label(labels);
            m.set_histogram(h);
            metrics.push(m);
        }
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::HISTOGRAM);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ns(d: Duration) -> u64 {
        d.as_nanos() as u64
    }

    #[test]
    fn durations_land_in_the_bucket_whose_bound_they_do_not_exceed() {
        for nanos in (0..5_000_000)
            .step_by(997)
            .chain([u64::MAX, u64::MAX - 1, 16_777_216_000, 16_777_216_001])
            .chain((10..64).flat_map(|b| [(1u64 << b) - 1, 1 << b, (1 << b) + 1]))
            .chain((0..54).flat_map(|i| [bound_ns(i) - 1, bound_ns(i), bound_ns(i) + 1]))
        {
            let expected = (0..BOUNDS)
                .find(|&i| nanos <= bound_ns(i))
                .unwrap_or(BUCKETS - 1);
            assert_eq!(bucket_of(nanos), expected, "{nanos} ns");
        }
        assert_eq!(bucket_of(1_000), 0, "le is inclusive");
        assert_eq!(bucket_of(1_001), 1);
        assert_eq!(bucket_of(2_000), 1);
        assert_eq!(bucket_of(2_001), 2);
    }

    #[test]
    fn a_family_collects_cumulative_buckets_per_series() {
        let family = Histograms::new("t_seconds", "test", &["topic"]);
        let a = family.series(&["a"]);
        a.observe(ns(Duration::from_micros(3)));
        a.observe(ns(Duration::from_millis(2)));
        let mut local = family.series(&["a"]).local();
        local.observe(ns(Duration::from_secs(20)));
        assert_eq!(
            family.collect()[0].get_metric()[0]
                .get_histogram()
                .get_sample_count(),
            2
        );
        local.flush();
        family.series(&["b"]).observe(ns(Duration::from_micros(1)));
        let families = family.collect();
        let metrics = families[0].get_metric();
        assert_eq!(metrics.len(), 2);
        let h = metrics[0].get_histogram();
        assert_eq!(h.get_sample_count(), 3);
        assert!((h.get_sample_sum() - 20.002003).abs() < 1e-9);
        let counts: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(counts[0], 0);
        assert_eq!(counts[1], 0, "3 us is over 2 us");
        assert_eq!(counts[2], 1, "3 us is under 4 us");
        assert_eq!(counts[11], 2, "2 ms is under 2.048 ms");
        assert_eq!(*counts.last().unwrap(), 2, "20 s is only in +Inf");
        assert_eq!(metrics[1].get_label()[0].value(), "b");
    }
}
