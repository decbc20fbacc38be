#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Cache, EntryKind, Limits, Lookup, STALE_TTL, TtlPolicy, cache_ttl};
use crate::wire::{Analysis, Kind, Layout, TtlRewrite, rcode};

const POLICY: TtlPolicy = TtlPolicy {
    min_ttl: 0,
    max_ttl: 86_400,
    negative_max_ttl: 3_600,
    servfail_ttl: 5,
    zone: 0,
};

const LIMITS: Limits = Limits {
    max_entries: 10_000,
    max_bytes: 16 << 20,
    stale_max: Duration::from_secs(3_600),
};

const KEY: &[u8] = b"\x01\x03www\x07example\x03com\x00\x00\x01\x00\x01";

fn analysis(kind: Kind, min_ttl: Option<u32>) -> Analysis {
    let rcode = match kind {
        Kind::NxDomain { .. } => rcode::NXDOMAIN,
        Kind::ServFail => rcode::SERVFAIL,
        Kind::Other(r) => r,
        Kind::Positive | Kind::NoData { .. } => rcode::NOERROR,
    };
    Analysis {
        kind,
        rcode,
        truncated: false,
        min_ttl,
        dropped: 0,
    }
}

fn positive(min_ttl: u32) -> Analysis {
    analysis(Kind::Positive, Some(min_ttl))
}

/// Inserts `a` under `KEY` with `policy` and returns the TTL the entry got, if cached.
fn cached_ttl(a: &Analysis, policy: &TtlPolicy) -> Option<u32> {
    let cache = Cache::new(LIMITS);
    let now = Instant::now();
    let entry = cache.insert(KEY, vec![0; 40], a, Layout::default(), policy, now);
    // What insert returns and what a lookup finds must agree.
    match cache.lookup(KEY, now) {
        Lookup::Fresh {
            entry: found,
            age: 0,
        } => {
            assert!(Arc::ptr_eq(&found, entry.as_ref().unwrap()));
        }
        Lookup::Miss => assert!(entry.is_none()),
        other => panic!("unexpected {other:?}"),
    }
    entry.map(|e| e.ttl)
}

#[test]
fn positive_ttl_is_clamped_both_ways() {
    let policy = TtlPolicy {
        min_ttl: 30,
        max_ttl: 600,
        ..POLICY
    };
    assert_eq!(cached_ttl(&positive(5), &policy), Some(30));
    assert_eq!(cached_ttl(&positive(300), &policy), Some(300));
    assert_eq!(cached_ttl(&positive(86_400), &policy), Some(600));
}

#[test]
fn zero_ttl_answers_are_not_cached() {
    assert_eq!(cached_ttl(&positive(0), &POLICY), None);
    // ...unless the zone sets a floor.
    assert_eq!(
        cached_ttl(
            &positive(0),
            &TtlPolicy {
                min_ttl: 2,
                ..POLICY
            }
        ),
        Some(2)
    );
}

#[test]
fn inverted_clamps_do_not_panic_and_max_wins() {
    let policy = TtlPolicy {
        min_ttl: 100,
        max_ttl: 10,
        ..POLICY
    };
    assert_eq!(cached_ttl(&positive(50), &policy), Some(10));
}

#[test]
fn negative_answers_live_for_the_soa_ttl_capped() {
    let kinds: [fn(Option<u32>) -> Kind; 2] = [
        |t| Kind::NxDomain { soa_ttl: t },
        |t| Kind::NoData { soa_ttl: t },
    ];
    for kind in kinds {
        assert_eq!(
            cached_ttl(&analysis(kind(Some(900)), Some(900)), &POLICY),
            Some(900)
        );
        assert_eq!(
            cached_ttl(&analysis(kind(Some(7_200)), Some(7_200)), &POLICY),
            Some(3_600)
        );
        // The answer-section min TTL is not what counts for a denial (RFC 2308 §5).
        assert_eq!(
            cached_ttl(&analysis(kind(Some(60)), Some(5)), &POLICY),
            Some(60)
        );
        assert_eq!(cached_ttl(&analysis(kind(None), None), &POLICY), None);
    }
    let a = analysis(Kind::NxDomain { soa_ttl: Some(60) }, Some(60));
    assert_eq!(cache_ttl(&a, &POLICY), Some((EntryKind::Denial, 60)));
}

#[test]
fn servfail_is_cached_for_servfail_ttl_only() {
    let a = analysis(Kind::ServFail, None);
    assert_eq!(cache_ttl(&a, &POLICY), Some((EntryKind::ServFail, 5)));
    assert_eq!(cached_ttl(&a, &POLICY), Some(5));
    assert_eq!(
        cached_ttl(
            &a,
            &TtlPolicy {
                servfail_ttl: 0,
                zone: 0,
                ..POLICY
            }
        ),
        None
    );
}

#[test]
fn other_rcodes_and_truncated_answers_are_never_cached() {
    for r in [
        rcode::REFUSED,
        rcode::FORMERR,
        rcode::NOTIMP,
        rcode::BADVERS,
    ] {
        assert_eq!(
            cached_ttl(&analysis(Kind::Other(r), Some(300)), &POLICY),
            None
        );
    }
    let mut tc = positive(300);
    tc.truncated = true;
    assert_eq!(cached_ttl(&tc, &POLICY), None);
    assert_eq!(
        cache_ttl(&positive(300), &POLICY),
        Some((EntryKind::Success, 300))
    );
}

/// A cache with 100 s of serve-stale holding `KEY` for 60 s from now.
fn one_entry_for_a_minute() -> (Cache, Arc<super::Entry>) {
    let limits = Limits {
        stale_max: Duration::from_secs(100),
        ..LIMITS
    };
    let cache = Cache::new(limits);
    let a = positive(60);
    let entry = cache.insert(
        KEY,
        vec![1; 40],
        &a,
        Layout::default(),
        &POLICY,
        Instant::now(),
    );
    (cache, entry.unwrap())
}

#[tokio::test(start_paused = true)]
async fn entries_go_fresh_then_stale_then_away_on_time() {
    let (cache, _) = one_entry_for_a_minute();

    tokio::time::advance(Duration::from_millis(59_999)).await;
    let Lookup::Fresh { entry, age } = cache.lookup(KEY, Instant::now()) else {
        panic!("not fresh just before the TTL");
    };
    assert_eq!(age, 59);
    assert_eq!(
        entry.ttl_rewrite(age),
        TtlRewrite::Aged { cap: 60, age: 59 }
    );

    tokio::time::advance(Duration::from_millis(1)).await;
    let Lookup::Stale { entry } = cache.lookup(KEY, Instant::now()) else {
        panic!("not stale at the TTL");
    };
    assert_eq!(entry.stale_ttl_rewrite(), TtlRewrite::Fixed(STALE_TTL));

    tokio::time::advance(Duration::from_millis(99_999)).await;
    assert!(matches!(
        cache.lookup(KEY, Instant::now()),
        Lookup::Stale { .. }
    ));

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(cache.lookup(KEY, Instant::now()), Lookup::Miss));
    assert_eq!(cache.len(), 0, "the expired entry was not removed");
}

/// The hit path's lookup goes fresh, stale, then away at the entry's instants, to the nanosecond.
#[tokio::test(start_paused = true)]
async fn serving_in_place_goes_fresh_then_stale_then_away_on_time() {
    let (cache, inserted) = one_entry_for_a_minute();
    let serve = |at| cache.serve_fresh(KEY, at, |entry, age| (entry.ttl, age, entry.hits()));

    tokio::time::advance(Duration::from_millis(59_999)).await;
    assert_eq!(serve(Instant::now()).ok(), Some((60, 59, 0)));

    tokio::time::advance(Duration::from_millis(1)).await;
    let Err(Lookup::Stale { entry }) = serve(Instant::now()) else {
        panic!("not stale at the TTL");
    };
    assert!(Arc::ptr_eq(&entry, &inserted));

    tokio::time::advance(Duration::from_millis(99_999)).await;
    assert!(matches!(serve(Instant::now()), Err(Lookup::Stale { .. })));

    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(matches!(serve(Instant::now()), Err(Lookup::Miss)));
    assert_eq!(cache.len(), 0, "the expired entry was not removed");
}

#[test]
fn an_expired_lookup_does_not_remove_a_newer_answer() {
    let cache = Cache::new(Limits {
        stale_max: Duration::ZERO,
        ..LIMITS
    });
    let t0 = Instant::now();
    let old = cache.insert(
        KEY,
        vec![1; 40],
        &positive(10),
        Layout::default(),
        &POLICY,
        t0,
    );
    let later = t0 + Duration::from_secs(10);
    let new = cache.insert(
        KEY,
        vec![2; 40],
        &positive(10),
        Layout::default(),
        &POLICY,
        later,
    );
    assert!(old.is_some() && new.is_some());
    assert!(matches!(
        cache.lookup(KEY, later),
        Lookup::Fresh { age: 0, .. }
    ));
    assert_eq!(cache.len(), 1);
    let Lookup::Fresh { entry, .. } = cache.lookup(KEY, later) else {
        panic!("replaced entry missing");
    };
    assert_eq!(entry.message(), &[2; 40][..]);
}

#[test]
fn prefetch_fires_once_when_ttl_is_nearly_spent_on_a_popular_entry() {
    let cache = Cache::new(LIMITS);
    let e = cache
        .insert(
            KEY,
            vec![0; 40],
            &positive(100),
            Layout::default(),
            &POLICY,
            Instant::now(),
        )
        .unwrap();
    assert!(!e.record_hit_and_check_prefetch(10)); // 90 s left
    assert!(!e.record_hit_and_check_prefetch(89)); // 11 s left: more than 10%
    assert!(e.record_hit_and_check_prefetch(90)); // 10 s left, third hit
    assert!(!e.record_hit_and_check_prefetch(95)); // already won
    assert!(!e.record_hit_and_check_prefetch(99));
    assert_eq!(e.hits(), 5);
}

#[test]
fn prefetch_needs_a_second_hit() {
    let cache = Cache::new(LIMITS);
    let e = cache
        .insert(
            KEY,
            vec![0; 40],
            &positive(100),
            Layout::default(),
            &POLICY,
            Instant::now(),
        )
        .unwrap();
    assert!(!e.record_hit_and_check_prefetch(95)); // first hit, though due by time
    assert!(e.record_hit_and_check_prefetch(95));
}

#[test]
fn short_ttls_are_never_prefetched() {
    let cache = Cache::new(LIMITS);
    let e = cache
        .insert(
            KEY,
            vec![0; 40],
            &positive(9),
            Layout::default(),
            &POLICY,
            Instant::now(),
        )
        .unwrap();
    for age in [0, 5, 8, 8, 8, 9] {
        assert!(!e.record_hit_and_check_prefetch(age));
    }
}

#[test]
fn only_one_of_many_concurrent_hits_wins_the_prefetch() {
    let cache = Cache::new(LIMITS);
    let e = cache
        .insert(
            KEY,
            vec![0; 40],
            &positive(600),
            Layout::default(),
            &POLICY,
            Instant::now(),
        )
        .unwrap();
    e.record_hit_and_check_prefetch(0);
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    (0..100)
                        .filter(|_| e.record_hit_and_check_prefetch(590))
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1);
    assert_eq!(e.hits(), 801);
}

#[test]
fn cache_respects_byte_limit_and_reload_shrinks_it() {
    let cache = Cache::new(Limits {
        max_entries: 1_000,
        max_bytes: 1 << 20,
        ..LIMITS
    });
    let now = Instant::now();
    for i in 0..5_000u32 {
        let key = [KEY, &i.to_be_bytes()].concat();
        let stored = cache.insert(
            &key,
            vec![0; 1_000],
            &positive(300),
            Layout::default(),
            &POLICY,
            now,
        );
        assert!(stored.is_some());
        assert!(cache.bytes() <= 1 << 20 && cache.len() <= 1_000);
    }
    assert!(cache.evictions() > 0);
    cache.set_limits(Limits {
        max_entries: 10,
        ..LIMITS
    });
    assert!(cache.len() <= 10);
}

#[test]
fn entries_record_their_kind() {
    let cache = Cache::new(LIMITS);
    let now = Instant::now();
    let nx = analysis(Kind::NxDomain { soa_ttl: Some(30) }, Some(30));
    let e = cache
        .insert(KEY, vec![0; 40], &nx, Layout::default(), &POLICY, now)
        .unwrap();
    assert_eq!(e.kind, EntryKind::Denial);
    let e = cache
        .insert(
            KEY,
            vec![0; 40],
            &positive(30),
            Layout::default(),
            &POLICY,
            now,
        )
        .unwrap();
    assert_eq!(e.kind, EntryKind::Success);
    assert_eq!(cache.len(), 1);
}
