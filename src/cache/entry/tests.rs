#![allow(clippy::unwrap_used)]

use std::mem::size_of;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Entry;
use crate::cache::{Cache, Limits, Lookup, TtlPolicy};
use crate::wire::{normalize_response, parse_query};

const POLICY: TtlPolicy = TtlPolicy {
    min_ttl: 0,
    max_ttl: 86_400,
    negative_max_ttl: 3_600,
    servfail_ttl: 5,
    zone: 0,
};

fn new_cache() -> Cache {
    Cache::new(Limits {
        max_entries: 1_000,
        max_bytes: 1 << 20,
        stale_max: Duration::from_secs(60),
    })
}

/// The question section of `name` (lowercase labels as given), type A, class IN.
fn question(name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The cache key of a recursive query for `name` A, as the query path builds it.
fn key(name: &str) -> Vec<u8> {
    let mut pkt = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pkt.extend_from_slice(&question(&name.to_ascii_lowercase()));
    parse_query(&pkt).unwrap().cache_key().to_vec()
}

/// Inserts upstream's answer to `name` A, its question echoed as `echoed`, under `name`'s key.
fn insert(cache: &Cache, name: &str, echoed: &str) -> Arc<Entry> {
    let mut resp = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    resp.extend_from_slice(&question(echoed));
    resp.extend_from_slice(&[
        0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 198, 18, 0, 1,
    ]);
    let mut stored = Vec::new();
    let (analysis, layout) = normalize_response(&resp, &mut stored).unwrap();
    let now = Instant::now();
    cache
        .insert(&key(name), stored, &analysis, layout, &POLICY, now)
        .unwrap()
}

fn joined(entry: &Entry) -> Vec<u8> {
    entry.key_parts().concat()
}

#[test]
fn an_entry_with_its_arc_counts_fits_56_bytes() {
    // RSS per cached entry is a documented target; a field added here grows every entry.
    assert!(size_of::<Entry>() + 2 * size_of::<usize>() <= 56);
}

#[test]
fn an_entry_keeps_its_zone_through_the_prefetch_claim() {
    let cache = new_cache();
    let mut resp = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    resp.extend_from_slice(&question("hot.example.test."));
    resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 100, 0, 4, 198, 18, 0, 1]);
    let mut stored = Vec::new();
    let (analysis, layout) = normalize_response(&resp, &mut stored).unwrap();
    let policy = TtlPolicy { zone: 5, ..POLICY };
    let now = Instant::now();
    let key = key("hot.example.test.");
    let entry = cache
        .insert(&key, stored, &analysis, layout, &policy, now)
        .unwrap();
    assert_eq!(entry.zone(), 5);
    // Two hits with a tenth of the TTL left win the prefetch: the flag sits beside the zone.
    assert!(!entry.record_hit_and_check_prefetch(95));
    assert!(entry.record_hit_and_check_prefetch(95));
    assert!(!entry.record_hit_and_check_prefetch(95), "once per entry");
    assert_eq!(entry.zone(), 5);
    assert_eq!(
        insert(&cache, "other.example.test.", "other.example.test.").zone(),
        0
    );
}

#[test]
fn the_key_is_not_stored_twice_when_upstream_echoes_the_question() {
    let cache = new_cache();
    let name = "registry.infra.example.test.";
    let folded = insert(&cache, name, name);
    let folded_bytes = cache.bytes();
    assert_eq!(joined(&folded), key(name));
    assert!(folded.has_key(&key(name)));
    assert!(!folded.has_key(&key("registrx.infra.example.test.")));
    assert!(!folded.has_key(&key(name)[1..]));

    // An upstream that changed the name's case: the whole key is kept, and found all the same.
    let other = new_cache();
    let kept = insert(&other, name, &name.to_ascii_uppercase());
    assert_eq!(joined(&kept), key(name));
    assert!(matches!(
        other.lookup(&key(name), Instant::now()),
        Lookup::Fresh { .. }
    ));
    // Same response length, so the difference in charge is the key less its flags byte.
    assert_eq!(other.bytes() - folded_bytes, key(name).len() - 1);
}

#[test]
fn entries_under_keys_differing_only_in_flags_are_told_apart() {
    let cache = new_cache();
    let name = "www.example.test.";
    insert(&cache, name, name);
    let mut cd = key(name);
    cd[0] ^= 0x80;
    assert!(matches!(cache.lookup(&cd, Instant::now()), Lookup::Miss));
    assert!(matches!(
        cache.lookup(&key(name), Instant::now()),
        Lookup::Fresh { .. }
    ));
}

#[test]
fn hits_stop_counting_without_wrapping() {
    let cache = new_cache();
    let e = insert(&cache, "www.example.test.", "www.example.test.");
    for _ in 0..40_000 {
        e.record_hit_and_check_prefetch(0);
    }
    assert_eq!(e.hits(), 32_767);
}

#[test]
fn a_response_too_large_to_store_is_given_back_whole() {
    let cache = Cache::new(Limits {
        max_entries: 100,
        max_bytes: 4096,
        stale_max: Duration::ZERO,
    });
    let name = "big.example.test.";
    let mut resp = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0x01, 0x2c, 0, 0, 0, 0];
    resp.extend_from_slice(&question(name));
    for i in 0..300u16 {
        resp.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 198, 18]);
        resp.extend_from_slice(&i.to_be_bytes());
    }
    let mut stored = Vec::new();
    let (analysis, layout) = normalize_response(&resp, &mut stored).unwrap();
    let now = Instant::now();
    let given_back =
        cache.insert_or_return(&key(name), stored.clone(), &analysis, layout, &POLICY, now);
    assert_eq!(given_back.unwrap_err(), (stored, layout));
    assert!(cache.is_empty());
}
