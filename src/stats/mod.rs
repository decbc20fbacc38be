//! Counters for everything a dashboard or a test wants to see.
//!
//! This module owns the process-wide counters (requests, responses by rcode, cache hits by
//! type, drops by reason, ...), and keeps each zone's and each upstream's counters by name
//! so that they survive a config reload that rebuilds the zones and upstreams (a Prometheus
//! counter must never go backwards). [`crate::metrics`] reads them at scrape time. Counters
//! are never used for control flow. It imports nothing else of the crate: every part may
//! count, and it depends on none of them.
//!
//! The per-query ("hot") counters are sharded: every thread increments its own cache-line
//! aligned block, picked once per thread, and a read sums the blocks. One shared atomic
//! bumped by every worker on every query would bounce its cache line between cores; a block
//! only its own thread writes stays in that core's cache. The first threads to count each
//! own a block outright and count with a plain load and store (no locked instruction, which
//! would be a third of a cache hit's atomics); threads after them share the last block and
//! count atomically. Rarer counters (failovers, spoofed replies, ...) are relaxed atomics.

mod histogram;
mod limited;
mod upstream;
mod zone;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

pub use histogram::{HistogramSnapshot, LatencyHistogram};
pub use limited::{ClientLimited, LimitedAnswer, LimitedReason};
pub use upstream::{ErrorKind, UpstreamCounters, UpstreamStatus};
pub use zone::{Served, ZoneCounters};

/// Why a packet got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Fewer than 12 bytes: no ID to answer to.
    Short,
    /// QR=1: a response sent to a server.
    Response,
    /// A client TCP frame shorter than a header or larger than a query can be.
    TcpFrame,
    /// The client TCP connection cap was reached.
    TcpConnections,
    /// Sending the reply failed (socket buffer full, client gone).
    Send,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Short,
        DropReason::Response,
        DropReason::TcpFrame,
        DropReason::TcpConnections,
        DropReason::Send,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::Response => "response",
            DropReason::TcpFrame => "tcp_frame",
            DropReason::TcpConnections => "tcp_connections",
            DropReason::Send => "send",
        }
    }
}

/// The per-query counters, each one slot of a thread's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hot {
    RequestsUdp,
    RequestsTcp,
    Prefetches,
    Coalesced,
    /// Misses refused because too many clients wait on one key or too many keys are in flight.
    Overload,
    /// Queries from a source outside `listen.allow`, answered REFUSED.
    DeniedRefused,
    /// Queries from a source outside `listen.allow`, dropped (`deny_action = "drop"`).
    DeniedDropped,
    /// The same client, ID and question again while the first was unanswered or just
    /// answered (`crate::retransmit`), over UDP.
    RetransmitsUdp,
    /// The same, over TCP.
    RetransmitsTcp,
}

/// The kinds of cache hit counted: `type` of `nodedns_cache_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HitType {
    Success,
    Denial,
    Stale,
}

/// Responses are counted by rcode; full 12-bit rcodes above 23 share the last slot.
pub const RCODE_SLOTS: usize = 24;
const HOT_NAMED: usize = Hot::RetransmitsTcp as usize + 1;
const RESPONSES_AT: usize = HOT_NAMED;
/// Replies to search-list expansions, by rcode.
const EXPANSIONS_AT: usize = RESPONSES_AT + RCODE_SLOTS;
const DROPPED_AT: usize = EXPANSIONS_AT + RCODE_SLOTS;
const SLOTS: usize = DROPPED_AT + DropReason::ALL.len();
/// Blocks per `Stats`: the first `SHARDS - 1` threads own one each, the rest share the last.
const SHARDS: usize = 32;
/// The block threads beyond the owners share.
const SHARED: usize = SHARDS - 1;

/// One thread's counters, aligned so no two blocks share a cache line (128 bytes covers
/// the adjacent-line prefetcher on x86 and the line size on Apple and some Arm cores).
#[derive(Debug)]
#[repr(align(128))]
struct Block<const N: usize>([AtomicU64; N]);

impl<const N: usize> Default for Block<N> {
    fn default() -> Block<N> {
        Block(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// The total of counter `slot` over every thread's block.
fn sum_over_threads<const N: usize>(blocks: &[Block<N>], slot: usize) -> u64 {
    blocks
        .iter()
        .filter_map(|b| b.0.get(slot))
        .map(|c| c.load(Ordering::Relaxed))
        .fold(0u64, u64::wrapping_add)
}

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's block index, the same in every `Stats`. Indices are never handed out
    /// twice, so a block below [`SHARED`] has exactly one writer for the life of the process.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed).min(SHARED);
}

/// Process-wide counters.
#[derive(Debug)]
pub struct Stats {
    zones: Mutex<Vec<(String, Arc<ZoneCounters>)>>,
    /// Replies to queries no zone took: malformed, refused, CHAOS; the `-` zone.
    unrouted: Arc<ZoneCounters>,
    upstreams: Mutex<Vec<(String, Arc<UpstreamCounters>)>>,
    blocks: Box<[Block<SLOTS>]>,
    pub spoof_mismatches: AtomicU64,
    pub failovers: AtomicU64,
    pub all_upstreams_down: AtomicU64,
    pub inflight: AtomicI64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Unix time of the last config load that succeeded (start-up counts).
    pub last_reload_ok_unix: AtomicU64,
    pub tcp_connections: AtomicI64,
    /// Misses and TCP connections a per-client limit turned away.
    pub client_limited: ClientLimited,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            zones: Mutex::new(Vec::new()),
            unrouted: Arc::default(),
            upstreams: Mutex::new(Vec::new()),
            blocks: (0..SHARDS).map(|_| Block::default()).collect(),
            spoof_mismatches: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            all_upstreams_down: AtomicU64::new(0),
            inflight: AtomicI64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_ok_unix: AtomicU64::new(0),
            tcp_connections: AtomicI64::new(0),
            client_limited: ClientLimited::default(),
        }
    }
}

impl Stats {
    fn bump(&self, slot: usize) {
        add_on_this_thread(&self.blocks, |b| b.0.get(slot), 1);
    }

    fn sum(&self, slot: usize) -> u64 {
        sum_over_threads(&self.blocks, slot)
    }

    /// Counts one event on this thread's block.
    pub fn inc(&self, counter: Hot) {
        self.bump(counter as usize);
    }

    /// The total over every thread.
    pub fn get(&self, counter: Hot) -> u64 {
        self.sum(counter as usize)
    }

    pub fn response(&self, rcode: u16) {
        self.bump(RESPONSES_AT + usize::from(rcode).min(RCODE_SLOTS - 1));
    }

    /// Responses sent with `rcode` (rcodes from 23 up are counted together).
    pub fn responses(&self, rcode: u16) -> u64 {
        self.sum(RESPONSES_AT + usize::from(rcode).min(RCODE_SLOTS - 1))
    }

    /// A reply with `rcode` to a search-list expansion (`crate::search_path`).
    pub fn expansion(&self, rcode: u16) {
        self.bump(EXPANSIONS_AT + usize::from(rcode).min(RCODE_SLOTS - 1));
    }

    /// Replies with `rcode` to search-list expansions (rcodes from 23 up together).
    pub fn expansions(&self, rcode: u16) -> u64 {
        self.sum(EXPANSIONS_AT + usize::from(rcode).min(RCODE_SLOTS - 1))
    }

    pub fn dropped_one(&self, reason: DropReason) {
        self.bump(DROPPED_AT + reason as usize);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.sum(DROPPED_AT + reason as usize)
    }

    /// The counters of the zone named `name`, created at 0 on first use (start-up or reload,
    /// never per query).
    pub fn zone(&self, name: &str) -> Arc<ZoneCounters> {
        registered(&self.zones, name)
    }

    /// Every zone's counters, in the order they were first configured.
    pub fn zones(&self) -> Vec<(String, Arc<ZoneCounters>)> {
        self.zones.lock().clone()
    }

    /// The position of the zone named `name` in [`Stats::zones`], registering it at 0 first
    /// if new. Positions never change: zones are never forgotten.
    pub fn zone_index(&self, name: &str) -> usize {
        let mut list = self.zones.lock();
        if let Some(at) = list.iter().position(|(n, _)| n == name) {
            return at;
        }
        list.push((name.to_string(), Arc::default()));
        list.len() - 1
    }

    /// The counters of replies to queries no zone took (the `-` zone).
    pub fn unrouted(&self) -> &Arc<ZoneCounters> {
        &self.unrouted
    }

    /// Cache hits of `ty` over every zone.
    pub fn cache_hits(&self, ty: HitType) -> u64 {
        self.every_zone(|z| match ty {
            HitType::Success => z.hits(0, 0).wrapping_add(z.hits(1, 0)),
            HitType::Denial => z.hits(0, 1).wrapping_add(z.hits(1, 1)),
            HitType::Stale => z.stales(),
        })
    }

    /// Cache misses over every zone.
    pub fn cache_misses(&self) -> u64 {
        self.every_zone(ZoneCounters::misses)
    }

    fn every_zone(&self, f: impl Fn(&ZoneCounters) -> u64) -> u64 {
        let zones = self.zones.lock();
        zones
            .iter()
            .map(|(_, z)| f(z))
            .fold(f(&self.unrouted), u64::wrapping_add)
    }

    /// The counters of the upstream labelled `label` (see `Upstream::label`), created at 0 on
    /// first use.
    pub fn upstream(&self, label: &str) -> Arc<UpstreamCounters> {
        registered(&self.upstreams, label)
    }

    /// Every upstream's counters, in the order they were first configured.
    pub fn upstreams(&self) -> Vec<(String, Arc<UpstreamCounters>)> {
        self.upstreams.lock().clone()
    }
}

/// Adds `n` to this thread's counter of `blocks` (one block per [`SHARDS`], as [`Stats`]
/// keeps them): a plain load and store on a block this thread owns, an atomic add on the
/// shared last one.
fn add_on_this_thread<B>(blocks: &[B], slot: impl Fn(&B) -> Option<&AtomicU64>, n: u64) {
    let shard = SHARD.with(|s| *s);
    let Some(c) = blocks.get(shard).and_then(slot) else {
        return;
    };
    if shard == SHARED {
        c.fetch_add(n, Ordering::Relaxed);
    } else {
        // Only this thread writes this block: no other increment can be lost between the
        // load and the store, and readers see each value whole.
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

fn registered<T: Default>(list: &Mutex<Vec<(String, Arc<T>)>>, name: &str) -> Arc<T> {
    let mut list = list.lock();
    if let Some((_, c)) = list.iter().find(|(n, _)| n == name) {
        return c.clone();
    }
    let c = Arc::new(T::default());
    list.push((name.to_string(), c.clone()));
    c
}

/// Shorthand for a relaxed increment.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Shorthand for a relaxed read.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up() {
        let stats = std::sync::Arc::new(Stats::default());
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let s = stats.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        s.inc(Hot::Prefetches);
                        s.response(3);
                        s.dropped_one(DropReason::Send);
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(stats.get(Hot::Prefetches), 40_000);
        assert_eq!(stats.get(Hot::Coalesced), 0);
        assert_eq!(stats.responses(3), 40_000);
        assert_eq!(stats.responses(0), 0);
        assert_eq!(stats.dropped(DropReason::Send), 40_000);
        assert_eq!(stats.dropped(DropReason::Short), 0);
    }

    #[test]
    fn large_rcodes_share_the_last_slot() {
        let stats = Stats::default();
        stats.response(23);
        stats.response(4095);
        assert_eq!(stats.responses(30), 2);
        assert_eq!(stats.responses(22), 0);
    }
}
