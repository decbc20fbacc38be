#![allow(clippy::unwrap_used)]

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Keyed, Store};

/// Sends every key to the same shard, bucket and tag: only the full key tells them apart.
#[derive(Clone, Copy, Default)]
struct SameHash;

impl BuildHasher for SameHash {
    type Hasher = SameHasher;
    fn build_hasher(&self) -> SameHasher {
        SameHasher
    }
}

struct SameHasher;

impl Hasher for SameHasher {
    fn finish(&self) -> u64 {
        0x9e37_79b9_7f4a_7c15
    }
    fn write(&mut self, _: &[u8]) {}
}

/// A qname-like key of about 30 bytes, distinct per `i` and per `tag`.
fn key(tag: &str, i: usize) -> Vec<u8> {
    format!("\x03{tag}\x07host{i:06}\x07example\x03com\x00\x00\x01\x00\x01").into_bytes()
}

/// A value for the store: the key it is stored under, and a payload.
#[derive(Debug)]
struct Kv<T> {
    key: Vec<u8>,
    val: T,
}

impl<T> Keyed for Kv<T> {
    fn has_key(&self, key: &[u8]) -> bool {
        self.key == key
    }
}

/// Stores `val` under `key`.
fn put<T, S: BuildHasher>(store: &Store<Kv<T>, S>, key: &[u8], val: T, weight: usize) -> bool {
    let value = Arc::new(Kv {
        key: key.to_vec(),
        val,
    });
    store.insert(key, value, weight)
}

/// The payload of a value the store returned.
fn val<T: Clone>(v: Option<Arc<Kv<T>>>) -> Option<T> {
    v.map(|v| v.val.clone())
}

fn overhead() -> usize {
    Store::<Kv<Vec<u8>>>::entry_overhead()
}

#[test]
fn never_holds_more_entries_than_its_limit() {
    let store = Store::new(1_000, usize::MAX);
    for i in 0..20_000 {
        put(&store, &key("www", i), i, 8);
        assert!(store.len() <= 1_000, "len {} after insert {i}", store.len());
    }
    // Every insert of a new key beyond the limit evicted exactly one entry.
    assert_eq!(store.evictions(), (20_000 - store.len()) as u64);
    assert!(store.len() > 900, "store too empty: {}", store.len());
}

#[test]
fn never_holds_more_bytes_than_its_limit() {
    let max_bytes = 2_000_000;
    let store = Store::new(1_000_000, max_bytes);
    let mut peak = 0;
    for i in 0..50_000 {
        let weight = (i * 37) % 3_000;
        assert!(put(&store, &key("big", i), vec![0u8; 4], weight));
        let bytes = store.bytes();
        assert!(bytes <= max_bytes, "bytes {bytes} after insert {i}");
        peak = peak.max(bytes);
    }
    assert!(store.len() < 1_000_000);
    assert!(store.evictions() > 40_000);
    // Splitting the bytes over shards must not waste most of them.
    assert!(peak > max_bytes * 3 / 4, "peak {peak} of {max_bytes}");
}

#[test]
fn keys_with_equal_hashes_are_told_apart() {
    let store = Store::with_hasher(1, 100, usize::MAX, SameHash);
    let keys: [&[u8]; 5] = [b"a", b"ab", b"abc", b"b", b""];
    for (i, k) in keys.iter().enumerate() {
        assert!(put(&store, k, i, 0));
    }
    assert_eq!(store.len(), keys.len());
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(val(store.get(k)), Some(i), "key {k:?}");
    }
    assert!(store.get(b"abcd").is_none());
    assert!(store.get(b"A").is_none());
    assert_eq!(val(store.remove(b"ab")), Some(1));
    assert!(store.get(b"ab").is_none());
    assert_eq!(val(store.get(b"abc")), Some(2));
    assert_eq!(val(store.get(b"a")), Some(0));
}

#[test]
fn keys_sharing_a_prefix_are_told_apart() {
    let store = Store::new(1_000, usize::MAX);
    let a = key("www", 1);
    let mut b = a.clone();
    b.push(0);
    let mut c = a.clone();
    *c.last_mut().unwrap() = 2; // same length, last byte differs (qclass)
    put(&store, &a, "a", 0);
    put(&store, &b, "b", 0);
    put(&store, &c, "c", 0);
    assert_eq!(val(store.get(&a)), Some("a"));
    assert_eq!(val(store.get(&b)), Some("b"));
    assert_eq!(val(store.get(&c)), Some("c"));
    assert!(store.get(&a[..a.len() - 1]).is_none());
}

#[test]
fn insert_replaces_the_value_and_its_weight() {
    let store = Store::new(100, usize::MAX);
    let k = key("www", 7);
    assert!(put(&store, &k, vec![1u8], 1_000));
    assert_eq!(store.bytes(), 1_000 + overhead());
    assert!(put(&store, &k, vec![2u8], 10));
    assert_eq!(store.get(&k).unwrap().val, [2]);
    assert_eq!(store.len(), 1);
    assert_eq!(store.bytes(), 10 + overhead());
    assert_eq!(store.evictions(), 0);
}

#[test]
fn an_entry_heavier_than_a_shard_is_refused_and_drops_the_old_value() {
    let store: Store<Kv<u8>, _> = Store::with_hasher(1, 10, 10_000, SameHash);
    assert!(put(&store, b"k", 1, 100));
    assert!(!put(&store, b"k", 2, 20_000));
    assert!(store.get(b"k").is_none());
    assert_eq!((store.len(), store.bytes()), (0, 0));
}

#[test]
fn remove_returns_the_value_and_frees_its_bytes() {
    let store = Store::new(100, usize::MAX);
    put(&store, b"one", 1, 50);
    put(&store, b"two", 2, 50);
    assert_eq!(val(store.remove(b"one")), Some(1));
    assert!(store.remove(b"one").is_none());
    assert!(store.remove_if(b"two", |v| v.val == 3).is_none());
    assert_eq!(store.len(), 1);
    assert_eq!(val(store.remove_if(b"two", |v| v.val == 2)), Some(2));
    assert_eq!((store.len(), store.bytes()), (0, 0));
}

/// Fills `store` with a hot set (each key hit a few times, as a cache sees), then inserts
/// `scan` one-off keys, and returns the share of the hot set still present.
fn hot_set_kept_after_scan(store: &Store<Kv<Vec<u8>>>, hot: usize, scan: usize) -> f64 {
    for _round in 0..3 {
        for i in 0..hot {
            let k = key("hot", i);
            if store.get(&k).is_none() {
                put(store, &k, vec![0; 100], 100);
            }
        }
    }
    for i in 0..scan {
        let k = key("scan", i);
        assert!(store.get(&k).is_none());
        put(store, &k, vec![0; 100], 100);
    }
    let kept = (0..hot)
        .filter(|&i| store.get(&key("hot", i)).is_some())
        .count();
    kept as f64 / hot as f64
}

#[test]
fn a_scan_of_one_off_keys_does_not_flush_the_hot_set() {
    let store = Store::new(10_000, usize::MAX);
    let kept = hot_set_kept_after_scan(&store, 1_000, 100_000);
    println!("hot set kept after a 100k scan into 10k entries (empty start): {kept:.4}");
    assert!(kept >= 0.95, "kept {kept}");
    assert!(store.len() <= 10_000);
}

#[test]
fn a_scan_does_not_flush_a_hot_set_that_arrived_in_a_full_cache() {
    let store = Store::new(10_000, usize::MAX);
    for i in 0..20_000 {
        put(&store, &key("warm", i), vec![0; 100], 100);
    }
    let kept = hot_set_kept_after_scan(&store, 1_000, 100_000);
    println!("hot set kept after a 100k scan into 10k entries (full start): {kept:.4}");
    assert!(kept >= 0.95, "kept {kept}");
}

#[test]
fn set_limits_evicts_down_at_once_and_can_grow_again() {
    let store = Store::new(1_000, usize::MAX);
    for i in 0..1_000 {
        put(&store, &key("www", i), i, 0);
    }
    let (held, before) = (store.len(), store.evictions());
    store.set_limits(100, usize::MAX);
    assert!(store.len() <= 100);
    assert_eq!(store.evictions(), before + (held - store.len()) as u64);
    let per_entry = overhead();
    store.set_limits(1_000, 50 * per_entry);
    assert!(store.len() <= 50 && store.bytes() <= 50 * per_entry);
    store.set_limits(1_000, usize::MAX);
    for i in 0..1_000 {
        put(&store, &key("new", i), i, 0);
    }
    assert!(store.len() > 500, "len {}", store.len());
    assert_eq!(store.limits(), (1_000, usize::MAX));
}

#[test]
fn for_each_visits_every_entry_once() {
    let store = Store::new(1_000, usize::MAX);
    for i in 0..300 {
        put(&store, &key("www", i), i, 0);
    }
    let mut seen = vec![0u32; 300];
    store.for_each(|v| {
        assert_eq!(v.key, key("www", v.val));
        seen[v.val] += 1;
    });
    assert!(seen.iter().all(|&n| n == 1));
}

#[test]
fn concurrent_gets_and_inserts_keep_bounds_and_values() {
    let (max_entries, max_bytes) = (500, 400_000);
    let hasher = foldhash::fast::RandomState::default();
    let store = Store::<Kv<Vec<u8>>>::with_hasher(16, max_entries, max_bytes, hasher);
    let done = AtomicBool::new(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    std::thread::scope(|s| {
        let checker = s.spawn(|| {
            let mut checks = 0u32;
            while !done.load(Ordering::Relaxed) && checks < 1_000_000 {
                assert!(store.len() <= max_entries);
                assert!(store.bytes() <= max_bytes);
                checks += 1;
            }
        });
        let workers: Vec<_> = (0..4usize)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    for n in 0..30_000usize {
                        if Instant::now() > deadline {
                            break;
                        }
                        let k = key("www", (n * 7919 + t * 104_729) % 3_000);
                        match n % 5 {
                            0 | 1 => {
                                put(store, &k, k.clone(), n % 700);
                            }
                            2 => {
                                store.remove(&k);
                            }
                            _ => {
                                if let Some(v) = store.get(&k) {
                                    assert_eq!(v.val, k, "value stored under another key");
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        done.store(true, Ordering::Relaxed);
        checker.join().unwrap();
    });
    assert!(
        Instant::now() <= deadline,
        "took too long: contention or deadlock"
    );
    assert!(store.len() <= max_entries && store.bytes() <= max_bytes);
}
