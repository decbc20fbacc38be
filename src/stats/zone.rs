//! One zone's counters: queries routed to it, its cache hits and misses, and the client
//! latency histogram of its replies (`nodedns_request_duration_seconds`).
//!
//! Hits and replies are counted on every query, so these counters are per-thread blocks
//! like the process-wide hot counters (see the parent module): a plain load and store on a
//! cache line only this thread writes. A zone's blocks are kept by name in [`super::Stats`],
//! so they survive reloads; replies of queries that no zone took (malformed, refused, CHAOS)
//! are counted in a block set of their own, the unrouted zone `-`.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::{Block, SHARDS, add_on_this_thread, sum_over_threads};

/// Upper bounds of the client latency buckets, in seconds: from 50 µs (a cache hit, batch
/// included) to 2.5 s (past every upstream deadline but under glibc's 5 s retry).
pub const CLIENT_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5,
];

const BOUNDS_NS: [u64; 15] = {
    let mut ns = [0u64; 15];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (CLIENT_BUCKETS[i] * 1e9) as u64;
        i += 1;
    }
    ns
};

/// What a reply was: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// From a fresh cache entry (or a local CHAOS answer).
    Hit,
    /// Forwarded: the upstream's answer.
    Miss,
    /// An expired entry, served because upstream failed or was slow (RFC 8767).
    Stale,
    /// Made here instead of an answer: SERVFAIL, REFUSED, FORMERR, NOTIMP.
    Error,
}

impl Served {
    pub const ALL: [Served; 4] = [Served::Hit, Served::Miss, Served::Stale, Served::Error];

    pub fn label(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::Miss => "miss",
            Served::Stale => "stale",
            Served::Error => "error",
        }
    }
}

/// The transport, as a slot index: 0 UDP, 1 TCP.
pub type ProtoIndex = usize;

/// What kind of fresh hit: 0 success, 1 denial (NXDOMAIN, NODATA, cached SERVFAIL).
pub type HitKind = usize;

const BUCKETS: usize = CLIENT_BUCKETS.len() + 1;
const HITS_AT: usize = 0; // [proto][kind]
const STALE_AT: usize = HITS_AT + 4;
const MISSES_AT: usize = STALE_AT + 1;
const HIST_AT: usize = MISSES_AT + 1; // [proto][result][bucket]
const SUM_AT: usize = HIST_AT + 2 * 4 * BUCKETS; // [proto][result], nanoseconds
const SLOTS: usize = SUM_AT + 2 * 4;

/// The counters of one zone (or of the unrouted queries).
#[derive(Debug)]
pub struct ZoneCounters {
    /// Queries routed to this zone on the miss path, by transport (misses and stale).
    pub udp: AtomicU64,
    pub tcp: AtomicU64,
    blocks: Box<[Block<SLOTS>]>,
}

impl Default for ZoneCounters {
    fn default() -> ZoneCounters {
        ZoneCounters {
            udp: AtomicU64::new(0),
            tcp: AtomicU64::new(0),
            blocks: (0..SHARDS).map(|_| Block::default()).collect(),
        }
    }
}

/// One reading of a zone's histogram for one transport and result.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientLatency {
    /// `(le, cumulative count)` for each bound of [`CLIENT_BUCKETS`].
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl From<ClientLatency> for super::HistogramSnapshot {
    fn from(h: ClientLatency) -> super::HistogramSnapshot {
        super::HistogramSnapshot {
            buckets: h.buckets,
            count: h.count,
            sum_seconds: h.sum_seconds,
        }
    }
}

impl ZoneCounters {
    fn add(&self, slot: usize, n: u64) {
        add_on_this_thread(&self.blocks, |b| b.0.get(slot), n);
    }

    fn sum(&self, slot: usize) -> u64 {
        sum_over_threads(&self.blocks, slot)
    }

    /// A fresh cache hit over `proto` of `kind`.
    pub fn hit(&self, proto: ProtoIndex, kind: HitKind) {
        self.add(HITS_AT + proto * 2 + kind, 1);
    }

    /// Fresh hits over `proto` of `kind`.
    pub fn hits(&self, proto: ProtoIndex, kind: HitKind) -> u64 {
        self.sum(HITS_AT + proto * 2 + kind)
    }

    /// An expired entry served (RFC 8767).
    pub fn stale(&self) {
        self.add(STALE_AT, 1);
    }

    pub fn stales(&self) -> u64 {
        self.sum(STALE_AT)
    }

    /// A query that found no entry, fresh or stale.
    pub fn miss(&self) {
        self.add(MISSES_AT, 1);
    }

    pub fn misses(&self) -> u64 {
        self.sum(MISSES_AT)
    }

    /// `n` replies over `proto` that were `served` and took `took` each from receipt to send.
    pub fn observe(&self, proto: ProtoIndex, served: Served, took: Duration, n: u64) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().take_while(|&&b| ns > b).count();
        let series = proto * 4 + served as usize;
        self.add(HIST_AT + series * BUCKETS + bucket, n);
        self.add(SUM_AT + series, ns.saturating_mul(n));
    }

    /// The histogram of replies over `proto` that were `served`. Each bucket is read once
    /// and the count is their total, so the series is cumulative and `+Inf` equals `_count`
    /// while other threads record.
    pub fn latency(&self, proto: ProtoIndex, served: Served) -> ClientLatency {
        let series = proto * 4 + served as usize;
        let mut running = 0u64;
        let mut buckets = Vec::with_capacity(CLIENT_BUCKETS.len());
        for (i, &le) in CLIENT_BUCKETS.iter().enumerate() {
            running = running.wrapping_add(self.sum(HIST_AT + series * BUCKETS + i));
            buckets.push((le, running));
        }
        let last = self.sum(HIST_AT + series * BUCKETS + CLIENT_BUCKETS.len());
        ClientLatency {
            buckets,
            count: running.wrapping_add(last),
            sum_seconds: self.sum(SUM_AT + series) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_land_in_their_bucket_by_transport_and_result() {
        let z = ZoneCounters::default();
        z.observe(0, Served::Hit, Duration::from_micros(30), 10);
        z.observe(0, Served::Hit, Duration::from_micros(100), 1); // on the bound
        z.observe(0, Served::Miss, Duration::from_millis(3), 2);
        z.observe(1, Served::Error, Duration::from_secs(9), 1); // above every bound
        let hit = z.latency(0, Served::Hit);
        assert_eq!(hit.buckets[0], (0.00005, 10));
        assert_eq!(hit.buckets[1], (0.0001, 11));
        assert_eq!(hit.count, 11);
        assert!(
            (hit.sum_seconds - 0.0004).abs() < 1e-12,
            "{}",
            hit.sum_seconds
        );
        let miss = z.latency(0, Served::Miss);
        assert_eq!(miss.buckets[4].1, 0, "1 ms");
        assert_eq!(miss.buckets[6].1, 2, "5 ms");
        let err = z.latency(1, Served::Error);
        assert_eq!(err.buckets.last().map(|b| b.1), Some(0));
        assert_eq!(err.count, 1);
        assert_eq!(z.latency(1, Served::Hit).count, 0);
    }
}
