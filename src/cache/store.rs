//! A bounded, sharded, scan-resistant map from byte keys to shared values.
//!
//! This module owns memory bounds and eviction: entries and bytes are both capped, and the
//! eviction policy keeps a hot set alive under a scan of one-off keys. It knows nothing of
//! DNS or of time.
//!
//! Values carry their own key ([`Keyed`]): the store keeps no copy, so an entry costs one
//! heap block fewer, and a hit compares the key in the memory it is about to serve from.
//! Keys are hashed once with a per-process seeded foldhash; the hash picks a shard, each shard
//! a `parking_lot::RwLock` around its own table and S3-FIFO queues (see `shard`). A hit takes
//! the read lock, compares the full key, bumps an atomic hit counter and clones the `Arc`:
//! no allocation, no write lock. Inserts, removals and eviction take the shard's write lock.
//! The limits are split evenly over the shards, so the totals hold exactly while a skewed hash
//! can leave a shard full before the whole store is.

mod ghost;
mod shard;
#[cfg(test)]
mod tests;

use std::hash::BuildHasher;
use std::mem::size_of;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use shard::Shard;

/// More shards than this buys nothing on the node sizes nodedns runs on.
const MAX_SHARDS: usize = 64;
/// A shard holds at least this many entries of `max_entries`, so S3-FIFO's 10% probation
/// queue is not a handful of entries...
const MIN_SHARD_ENTRIES: usize = 128;
/// ...and at least this many bytes of `max_bytes`, so one large (64 KiB TCP) response fits.
const MIN_SHARD_BYTES: usize = 256 << 10;

/// Bytes each entry costs beyond the caller's value weight, apart from the slab node itself
/// (added per value type in [`Store::entry_overhead`]): the hash table's index and control
/// byte, one ghost record (the ghost set holds at most as many hashes as the shard holds
/// entries), the slack of tables and slabs that grow by doubling, and the heap block headers
/// and rounding of the value. Measured with a counting allocator when keys had a heap block
/// of their own (30-byte keys, full stores of 1k, 100k and 1M entries after churn), all of it
/// came to 138-170 bytes per entry, 88-100 before any eviction; since then the key's block
/// (about 48 bytes with its header and rounding) is gone and the ghost record is 8 bytes
/// instead of 16 (twice over: set and queue), so this still covers the worst case seen.
const FIXED_OVERHEAD: usize = 120;

/// A value that holds the key it is stored under, in whatever form suits it.
pub trait Keyed {
    /// Whether this value is stored under `key`.
    fn has_key(&self, key: &[u8]) -> bool;
}

/// Keeps each shard's lock on its own cache lines, away from its neighbours'.
#[repr(align(128))]
struct Padded<T>(T);

/// A bounded map from byte keys to `Arc<V>`, safe to share between threads.
pub struct Store<V: ?Sized, S = foldhash::fast::RandomState> {
    shards: Box<[Padded<RwLock<Shard<V>>>]>,
    hasher: S,
    max_entries: AtomicUsize,
    max_bytes: AtomicUsize,
}

impl<V: Keyed + ?Sized> Store<V> {
    /// A store of at most `max_entries` entries and `max_bytes` bytes (see [`Store::insert`]
    /// for what an entry weighs), with a randomly seeded hasher.
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        let shards = default_shards(max_entries, max_bytes);
        Store::with_hasher(
            shards,
            max_entries,
            max_bytes,
            foldhash::fast::RandomState::default(),
        )
    }
}

impl<V: Keyed + ?Sized, S: BuildHasher> Store<V, S> {
    /// A store with `shards` shards (rounded up to a power of two, at most 64) and `hasher`.
    pub fn with_hasher(shards: usize, max_entries: usize, max_bytes: usize, hasher: S) -> Self {
        let n = shards.clamp(1, MAX_SHARDS).next_power_of_two();
        let shards = (0..n)
            .map(|i| {
                let (entries, bytes) = (share(max_entries, n, i), share(max_bytes, n, i));
                Padded(RwLock::new(Shard::new(entries, bytes)))
            })
            .collect();
        Store {
            shards,
            hasher,
            max_entries: AtomicUsize::new(max_entries),
            max_bytes: AtomicUsize::new(max_bytes),
        }
    }

    /// What an entry is charged beyond its value weight.
    pub fn entry_overhead() -> usize {
        size_of::<Option<shard::Node<V>>>() + FIXED_OVERHEAD
    }

    /// The value stored under `key`, counting a hit for eviction.
    pub fn get(&self, key: &[u8]) -> Option<Arc<V>> {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).read().get(hash, key)
    }

    /// Calls `f` on the value stored under `key` (counting a hit for eviction) while its
    /// shard is read-locked: no `Arc` is cloned or dropped, so a hit costs two atomic
    /// operations fewer. `f` must be short and must not touch this store (it would
    /// deadlock with a writer).
    pub fn get_with<R>(&self, key: &[u8], f: impl FnOnce(&Arc<V>) -> R) -> Option<R> {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).read().get_with(hash, key, f)
    }

    /// Stores `value`, which must hold `key` ([`Keyed::has_key`]), under `key`, replacing any
    /// value there, and evicts as needed to stay within both limits. The entry is charged
    /// `weight` (which should count the key as the value holds it) plus
    /// [`Store::entry_overhead`]. Returns false, and holds nothing under `key` afterwards,
    /// when the entry weighs more than one shard's share of `max_bytes`.
    pub fn insert(&self, key: &[u8], value: Arc<V>, weight: usize) -> bool {
        debug_assert!(
            value.has_key(key),
            "a value must hold the key it is stored under"
        );
        let hash = self.hasher.hash_one(key);
        let charge = weight.saturating_add(Self::entry_overhead());
        self.shard(hash).write().insert(hash, key, value, charge)
    }

    /// Removes `key` and returns its value.
    pub fn remove(&self, key: &[u8]) -> Option<Arc<V>> {
        self.remove_if(key, |_| true)
    }

    /// Removes `key` only if `pred` accepts its current value, atomically with respect to
    /// other writers (e.g. drop an expired value without dropping a fresh one that replaced it).
    pub fn remove_if(&self, key: &[u8], pred: impl FnOnce(&Arc<V>) -> bool) -> Option<Arc<V>> {
        let hash = self.hasher.hash_one(key);
        self.shard(hash).write().remove_if(hash, key, pred)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged by the entries held (see [`Store::insert`]); never above `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().bytes()).sum()
    }

    /// Entries evicted to make room (not removals, replacements or lowered limits' refusals).
    pub fn evictions(&self) -> u64 {
        self.shards.iter().map(|s| s.0.read().evictions()).sum()
    }

    /// The current `(max_entries, max_bytes)`.
    pub fn limits(&self) -> (usize, usize) {
        (
            self.max_entries.load(Ordering::Relaxed),
            self.max_bytes.load(Ordering::Relaxed),
        )
    }

    /// Changes the limits (config reload) and evicts down to them at once, one shard at a
    /// time. The number of shards stays as created.
    pub fn set_limits(&self, max_entries: usize, max_bytes: usize) {
        self.max_entries.store(max_entries, Ordering::Relaxed);
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            let (entries, bytes) = (share(max_entries, n, i), share(max_bytes, n, i));
            shard.0.write().set_limits(entries, bytes);
        }
    }

    /// Calls `f` on every entry, one shard at a time under its read lock. Not a consistent
    /// snapshot across shards; `f` must not write to this store (it would deadlock).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<V>)) {
        for shard in self.shards.iter() {
            shard.0.read().for_each(&mut f);
        }
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // Bits 32.. pick the shard: hashbrown takes its bucket index from the low bits and its
        // tag from the top 7, so neither is constant within a shard.
        let i = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[i].0
    }
}

/// Shard `i`'s part of `total` split over `n`: the parts differ by at most one and sum to it.
fn share(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

/// As many shards as the limits allow (see `MIN_SHARD_*`), a power of two up to 64.
fn default_shards(max_entries: usize, max_bytes: usize) -> usize {
    let want = (max_entries / MIN_SHARD_ENTRIES)
        .min(max_bytes / MIN_SHARD_BYTES)
        .clamp(1, MAX_SHARDS);
    // Round down to a power of two so no shard falls below the minimums.
    1 << want.ilog2()
}
