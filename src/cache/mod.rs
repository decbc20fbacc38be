//! The packet cache: stored upstream responses keyed by the normalised question.
//!
//! This module owns what is cached and for how long (TTL clamps, RFC 2308 negative caching,
//! brief SERVFAIL caching, the serve-stale window of RFC 8767, the prefetch trigger) and the
//! bounded, scan-resistant store underneath ([`store`]). It does not own talking to upstreams,
//! coalescing or serving: the fast path asks [`Cache::serve_fresh`], which hands it a fresh
//! entry to copy (with [`crate::wire::write_reply`]) while its shard is read-locked, or says
//! what it found instead (a stale entry, nothing); a flight stores what upstream sent with
//! [`Cache::insert_or_return`] ([`Cache::lookup`] and [`Cache::insert`] are the plain forms,
//! for benchmarks, examples and tests).
//!
//! Time is `tokio::time::Instant`, passed in by the caller, so expiry is tested with a paused
//! clock. An entry is fresh for `[0, ttl)` after insert, stale for `[ttl, ttl + stale_max)`,
//! and gone after that: the lookup that finds it expired removes it, and eviction takes the
//! expired entries nobody asks for.

mod entry;
pub mod store;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::wire::{Analysis, Kind, Layout};

pub use entry::{Entry, EntryKind, MAX_ZONE_INDEX};

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
    /// Where hits on the zone's entries are counted: an index the resolver gives each zone
    /// (0: nowhere in particular), at most [`MAX_ZONE_INDEX`]. Stored on every entry the
    /// policy inserts (see [`Entry::zone`]).
    pub zone: u8,
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
    /// What entries' insert times count from.
    epoch: Instant,
}

impl Cache {
    pub fn new(limits: Limits) -> Cache {
        Cache {
            store: store::Store::new(limits.max_entries, limits.max_bytes),
            stale_max_nanos: AtomicU64::new(nanos(limits.stale_max)),
            epoch: Instant::now(),
        }
    }

    /// Serves a fresh entry under `key` with `serve(entry, age)`, lent rather than
    /// referenced (the hit path copies it out and touches no reference count); anything
    /// else is reported as [`Cache::lookup`] would (`Fresh` never is). An entry past its
    /// stale window is removed. `serve` runs with the entry's shard read-locked: it must
    /// only copy the entry out.
    pub fn serve_fresh<R>(
        &self,
        key: &[u8],
        now: Instant,
        serve: impl FnOnce(&Arc<Entry>, u32) -> R,
    ) -> Result<R, Lookup> {
        let now = self.since_epoch(now);
        let stale_max = self.stale_max_nanos.load(Ordering::Relaxed);
        let found = self.store.get_with(key, |entry| {
            let elapsed = u64::try_from(now.saturating_sub(entry.inserted)).unwrap_or(0);
            let ttl = u64::from(entry.ttl) * 1_000_000_000;
            if elapsed < ttl {
                let age = u32::try_from(elapsed / 1_000_000_000).unwrap_or(u32::MAX);
                Ok(serve(entry, age))
            } else {
                let stale = elapsed < ttl.saturating_add(stale_max);
                Err((Arc::clone(entry), stale))
            }
        });
        match found {
            None => Err(Lookup::Miss),
            Some(Ok(served)) => Ok(served),
            Some(Err((entry, true))) => Err(Lookup::Stale { entry }),
            Some(Err((entry, false))) => {
                // Only this entry: a fresh answer inserted since our look must survive.
                self.store.remove_if(key, |held| Arc::ptr_eq(held, &entry));
                Err(Lookup::Miss)
            }
        }
    }

    /// Looks `key` up at `now`. An entry past its stale window is removed and reported a miss.
    pub fn lookup(&self, key: &[u8], now: Instant) -> Lookup {
        match self.serve_fresh(key, now, |entry, age| (Arc::clone(entry), age)) {
            Ok((entry, age)) => Lookup::Fresh { entry, age },
            Err(lookup) => lookup,
        }
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
        let inserted = self.since_epoch(now);
        let entry = Entry::new(key, response, layout, kind, inserted, ttl, policy.zone)
            .map_err(|response| (response, layout))?;
        let entry = Arc::new(entry);
        let weight = entry.weight();
        if self.store.insert(key, Arc::clone(&entry), weight) {
            return Ok(entry);
        }
        // Too large for the store: unwrap the entry nobody else holds.
        match Arc::try_unwrap(entry) {
            Ok(entry) => Err(entry.into_stored()),
            Err(entry) => Ok(entry),
        }
    }

    /// Puts back an entry saved by a snapshot, with the TTL and insert time it had, so it
    /// ages on as if the process had never restarted, counted in `zone` (see
    /// [`TtlPolicy::zone`]). Returns false when it does not fit.
    // The fields of one snapshot entry, each checked by the snapshot's reader.
    #[allow(clippy::too_many_arguments)]
    pub fn restore(
        &self,
        key: &[u8],
        response: Vec<u8>,
        layout: Layout,
        kind: EntryKind,
        ttl: u32,
        inserted: Instant,
        zone: u8,
    ) -> bool {
        let inserted = self.since_epoch(inserted);
        let Ok(entry) = Entry::new(key, response, layout, kind, inserted, ttl, zone) else {
            return false;
        };
        let entry = Arc::new(entry);
        let weight = entry.weight();
        self.store.insert(key, entry, weight)
    }

    /// How long before `now` `entry` was inserted (zero if after it).
    pub fn age(&self, entry: &Entry, now: Instant) -> Duration {
        let nanos = self.since_epoch(now).saturating_sub(entry.inserted);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
    }

    /// Removes `key` (e.g. an entry a caller found unusable).
    pub fn remove(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.store.remove(key)
    }

    /// How long entries are kept past expiry (`Limits::stale_max`, as last set).
    pub fn stale_max(&self) -> Duration {
        Duration::from_nanos(self.stale_max_nanos.load(Ordering::Relaxed))
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

    /// `t` as nanoseconds after the epoch; negative before it. Saturates after 292 years.
    fn since_epoch(&self, t: Instant) -> i64 {
        if t >= self.epoch {
            i64::try_from(nanos(t - self.epoch)).unwrap_or(i64::MAX)
        } else {
            i64::try_from(nanos(self.epoch - t)).map_or(i64::MIN, |n| -n)
        }
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
