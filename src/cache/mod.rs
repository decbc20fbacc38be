//! The packet cache: stored upstream responses keyed by the normalised question.
//!
//! This module owns what is cached and for how long (TTL clamps, RFC 2308 negative caching,
//! brief SERVFAIL caching, the serve-stale window of RFC 8767, the prefetch trigger) and the
//! bounded, scan-resistant store underneath ([`store`]). It does not own talking to upstreams,
//! coalescing or serving: the query path asks [`Cache::lookup`], writes the reply with
//! [`crate::wire::write_reply`], and calls [`Cache::insert`] with what upstream sent.
//!
//! Time is `tokio::time::Instant`, passed in by the caller, so expiry is tested with a paused
//! clock. An entry is fresh for `[0, ttl)` after insert, stale for `[ttl, ttl + stale_max)`,
//! and gone after that: the lookup that finds it expired removes it, and eviction takes the
//! expired entries nobody asks for.

pub mod store;
#[cfg(test)]
mod tests;

use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::{Analysis, Kind, Layout, TtlRewrite};

/// TTL served for stale answers (RFC 8767 §4 recommends 30 seconds).
pub const STALE_TTL: u32 = 30;
/// Prefetch only entries whose TTL is at least this long (unbound's rule), seconds...
pub const PREFETCH_MIN_TTL: u32 = 10;
/// ...that have been hit at least this often...
pub const PREFETCH_MIN_HITS: u32 = 2;
/// ...once no more than 1/PREFETCH_REMAINING_DIVISOR of their TTL remains.
pub const PREFETCH_REMAINING_DIVISOR: u64 = 10;

/// TTL rules for one zone, in whole seconds (see `config::CacheTtl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlPolicy {
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub negative_max_ttl: u32,
    pub servfail_ttl: u32,
}

/// What kind of answer an entry holds; hits are counted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A positive answer.
    Success,
    /// NXDOMAIN or NODATA (RFC 2308).
    Denial,
    /// A SERVFAIL, cached briefly to stop stampedes (RFC 2308 §7.1).
    ServFail,
}

/// One cached response.
#[derive(Debug)]
pub struct Entry {
    /// The normalised response: the message and its TTL offset table (see
    /// [`crate::wire::normalize_response`]).
    pub response: Box<[u8]>,
    pub layout: Layout,
    pub kind: EntryKind,
    pub inserted: Instant,
    /// The clamped TTL, seconds: the entry is fresh for this long after `inserted`.
    pub ttl: u32,
    hits: AtomicU32,
    /// Set by the one caller that wins the prefetch of this entry.
    prefetching: AtomicBool,
    /// Set by the one caller that wins the stale refresh of this entry. Separate from
    /// `prefetching` so a failed prefetch does not block the refresh once the entry is stale.
    refreshing: AtomicBool,
}

impl Entry {
    fn new(
        response: Vec<u8>,
        layout: Layout,
        kind: EntryKind,
        inserted: Instant,
        ttl: u32,
    ) -> Self {
        Entry {
            response: response.into_boxed_slice(),
            layout,
            kind,
            inserted,
            ttl,
            hits: AtomicU32::new(0),
            prefetching: AtomicBool::new(false),
            refreshing: AtomicBool::new(false),
        }
    }

    /// How a fresh hit `age` seconds old rewrites TTLs: aged, and never above our clamp.
    pub fn ttl_rewrite(&self, age: u32) -> TtlRewrite {
        TtlRewrite::Aged { cap: self.ttl, age }
    }

    /// How a stale answer rewrites TTLs (RFC 8767 §4).
    pub fn stale_ttl_rewrite(&self) -> TtlRewrite {
        TtlRewrite::Fixed(STALE_TTL)
    }

    /// Hits recorded by [`Entry::record_hit_and_check_prefetch`].
    pub fn hits(&self) -> u32 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Counts a fresh hit `age` seconds old and says whether this caller should refresh the
    /// entry in the background: at least [`PREFETCH_MIN_HITS`] hits (this one included), a TTL
    /// of at least [`PREFETCH_MIN_TTL`], and at most a tenth of it left. True once per entry.
    pub fn record_hit_and_check_prefetch(&self, age: u32) -> bool {
        let hits = self.hits.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let remaining = u64::from(self.ttl.saturating_sub(age));
        let due = hits >= PREFETCH_MIN_HITS
            && self.ttl >= PREFETCH_MIN_TTL
            && remaining * PREFETCH_REMAINING_DIVISOR <= u64::from(self.ttl);
        due && !self.prefetching.load(Ordering::Relaxed)
            && !self.prefetching.swap(true, Ordering::AcqRel)
    }

    /// For a stale hit: true for the one caller that should refresh this entry.
    pub fn try_start_refresh(&self) -> bool {
        !self.refreshing.load(Ordering::Relaxed) && !self.refreshing.swap(true, Ordering::AcqRel)
    }

    /// The response as a DNS message, without its TTL offset table.
    pub fn message(&self) -> &[u8] {
        self.layout.message(&self.response)
    }

    /// The weight the store charges for this entry's value: the response (TTL offsets
    /// included), the entry itself and its `Arc` counts.
    fn weight(&self) -> usize {
        self.response.len() + size_of::<Entry>() + 2 * size_of::<usize>()
    }
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Lookup {
    /// Fresh; `age` whole seconds since insert.
    Fresh {
        entry: Arc<Entry>,
        age: u32,
    },
    /// Past its TTL but within `stale_max`: usable when upstreams fail (RFC 8767).
    Stale {
        entry: Arc<Entry>,
    },
    Miss,
}

/// Size and lifetime limits of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
    pub max_bytes: usize,
    pub stale_max: Duration,
}

/// The cache: a bounded store of [`Entry`] plus the TTL policy.
pub struct Cache {
    store: store::Store<Entry>,
    /// `Limits::stale_max` in nanoseconds; atomic so a reload can change it in place.
    stale_max_nanos: AtomicU64,
}

impl Cache {
    pub fn new(limits: Limits) -> Cache {
        Cache {
            store: store::Store::new(limits.max_entries, limits.max_bytes),
            stale_max_nanos: AtomicU64::new(nanos(limits.stale_max)),
        }
    }

    /// Looks `key` up at `now`. An entry past its stale window is removed and reported a miss.
    pub fn lookup(&self, key: &[u8], now: Instant) -> Lookup {
        let Some(entry) = self.store.get(key) else {
            return Lookup::Miss;
        };
        let elapsed = now.saturating_duration_since(entry.inserted);
        let ttl = Duration::from_secs(u64::from(entry.ttl));
        if elapsed < ttl {
            let age = u32::try_from(elapsed.as_secs()).unwrap_or(u32::MAX);
            return Lookup::Fresh { entry, age };
        }
        if elapsed < ttl.saturating_add(self.stale_max()) {
            return Lookup::Stale { entry };
        }
        // Only this entry: a fresh answer inserted since our get must survive.
        self.store.remove_if(key, |held| Arc::ptr_eq(held, &entry));
        Lookup::Miss
    }

    /// Stores upstream's normalised `response` under `key` if [`cache_ttl`] allows, replacing
    /// any entry there. Returns the entry, or `None` when not cacheable or too large.
    pub fn insert(
        &self,
        key: &[u8],
        response: Vec<u8>,
        analysis: &Analysis,
        layout: Layout,
        policy: &TtlPolicy,
        now: Instant,
    ) -> Option<Arc<Entry>> {
        self.insert_or_return(key, response, analysis, layout, policy, now)
            .ok()
    }

    /// [`Cache::insert`] that gives `response` and `layout` back when they are not stored,
    /// so a caller that must still serve them need not copy them first.
    pub fn insert_or_return(
        &self,
        key: &[u8],
        response: Vec<u8>,
        analysis: &Analysis,
        layout: Layout,
        policy: &TtlPolicy,
        now: Instant,
    ) -> Result<Arc<Entry>, (Vec<u8>, Layout)> {
        let Some((kind, ttl)) = cache_ttl(analysis, policy) else {
            return Err((response, layout));
        };
        let entry = Arc::new(Entry::new(response, layout, kind, now, ttl));
        let weight = entry.weight();
        if self.store.insert(key, Arc::clone(&entry), weight) {
            return Ok(entry);
        }
        // Too large for the store: unwrap the entry nobody else holds.
        match Arc::try_unwrap(entry) {
            Ok(entry) => Err((entry.response.into_vec(), entry.layout)),
            Err(entry) => Ok(entry),
        }
    }

    /// Puts back an entry saved by a snapshot, with the TTL and insert time it had, so it
    /// ages on as if the process had never restarted. Returns false when it does not fit.
    pub fn restore(
        &self,
        key: &[u8],
        response: Vec<u8>,
        layout: Layout,
        kind: EntryKind,
        ttl: u32,
        inserted: Instant,
    ) -> bool {
        let entry = Arc::new(Entry::new(response, layout, kind, inserted, ttl));
        let weight = entry.weight();
        self.store.insert(key, entry, weight)
    }

    /// Removes `key` (e.g. an entry a caller found unusable).
    pub fn remove(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.store.remove(key)
    }

    /// Applies new limits (config reload): evicts down to them at once; entries survive.
    pub fn set_limits(&self, limits: Limits) {
        self.stale_max_nanos
            .store(nanos(limits.stale_max), Ordering::Relaxed);
        self.store.set_limits(limits.max_entries, limits.max_bytes);
    }

    pub fn len(&self) -> usize {
        self.store.len()
    }

    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.store.bytes()
    }

    pub fn evictions(&self) -> u64 {
        self.store.evictions()
    }

    /// The store underneath, for snapshots ([`store::Store::for_each`]).
    pub fn store(&self) -> &store::Store<Entry> {
        &self.store
    }

    fn stale_max(&self) -> Duration {
        Duration::from_nanos(self.stale_max_nanos.load(Ordering::Relaxed))
    }
}

/// Whether a response may be cached, as what, and for how many seconds.
///
/// - Truncated responses and rcodes other than NOERROR/NXDOMAIN/SERVFAIL: never (a TC answer
///   is incomplete; REFUSED and friends are one upstream's failure, not an answer).
/// - Positive: the smallest record TTL clamped to `[min_ttl, max_ttl]`.
/// - NXDOMAIN and NODATA: the SOA-derived TTL capped by `negative_max_ttl`; without an SOA
///   there is no TTL to honour, so not cached (RFC 2308 §5).
/// - SERVFAIL: `servfail_ttl` (RFC 2308 §7.1; config keeps it within 5 minutes).
///
/// A TTL of 0 means "use once, do not cache" (RFC 1035 §3.2.1), so it is never stored.
pub fn cache_ttl(analysis: &Analysis, policy: &TtlPolicy) -> Option<(EntryKind, u32)> {
    if analysis.truncated {
        return None;
    }
    let (kind, ttl) = match analysis.kind {
        // Not `clamp`: it panics when min > max; here max wins.
        Kind::Positive => (
            EntryKind::Success,
            analysis
                .min_ttl
                .unwrap_or(0)
                .max(policy.min_ttl)
                .min(policy.max_ttl),
        ),
        Kind::NxDomain { soa_ttl } | Kind::NoData { soa_ttl } => {
            (EntryKind::Denial, soa_ttl?.min(policy.negative_max_ttl))
        }
        Kind::ServFail => (EntryKind::ServFail, policy.servfail_ttl),
        Kind::Other(_) => return None,
    };
    (ttl > 0).then_some((kind, ttl))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
