//! A fixed-bucket latency histogram kept as plain atomic counters.
//!
//! This owns `nodedns_upstream_duration_seconds`' data. A Prometheus exporter's histogram
//! keeps every raw sample until a scrape drains it, so a node that is not scraped (or is
//! scraped every minute at tens of thousands of misses a second) grows by 8 bytes per miss.
//! Here a sample costs two relaxed additions on counters that already exist, memory is fixed
//! at one counter per bucket, and a scrape reads the counters like any other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: sub-millisecond for a resolver's cache hits on
/// the node's network, up to the 2 s a recursion through a slow authority may take.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// The same bounds in nanoseconds, so recording compares integers.
const BOUNDS_NS: [u64; 12] = {
    let mut ns = [0u64; 12];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (LATENCY_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// Counts per bucket (not cumulative; the last slot is above every bound) and the sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// One reading of a [`LatencyHistogram`], in Prometheus' terms.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le, cumulative count)` for each bound of [`LATENCY_BUCKETS`].
    pub buckets: Vec<(f64, u64)>,
    /// Every sample: the `+Inf` bucket and `_count`.
    pub count: u64,
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Twelve bounds: a linear scan is as fast as a search and has no branches to mispredict
        // beyond the loop's own.
        let slot = BOUNDS_NS.iter().take_while(|&&b| ns > b).count();
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The counts now. Each bucket is read once and `count` is their total, so the cumulative
    /// series never decreases along `le` and `+Inf` equals `_count`, even while other threads
    /// record.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (i, &le) in LATENCY_BUCKETS.iter().enumerate() {
            running = running.wrapping_add(self.buckets[i].load(Ordering::Relaxed));
            buckets.push((le, running));
        }
        let last = self.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count: running.wrapping_add(last),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    #[test]
    fn samples_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let h = LatencyHistogram::default();
        h.record(ms(0.5)); // exactly on the first bound: le="0.0005"
        h.record(ms(0.7));
        h.record(ms(30.0));
        h.record(ms(5000.0)); // above every bound: only +Inf
        let s = h.snapshot();
        let at = |le: f64| s.buckets.iter().find(|b| b.0 == le).map(|b| b.1);
        assert_eq!(at(0.0005), Some(1));
        assert_eq!(at(0.001), Some(2));
        assert_eq!(at(0.025), Some(2));
        assert_eq!(at(0.05), Some(3));
        assert_eq!(at(2.0), Some(3));
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 5.0312).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn counts_from_many_threads_add_up_and_stay_cumulative() {
        let h = std::sync::Arc::new(LatencyHistogram::default());
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        h.record(Duration::from_micros((t * 1000 + i) * 37 % 3_000_000));
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let s = h.snapshot();
        assert_eq!(s.count, 8000);
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
        assert!(s.buckets.last().is_some_and(|b| b.1 <= s.count));
    }
}
