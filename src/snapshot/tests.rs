//! The file format round trip, and every way a snapshot is refused whole.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::cache::{Limits, Lookup, TtlPolicy};
use crate::wire;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

const POLICY: TtlPolicy = TtlPolicy {
    min_ttl: 0,
    max_ttl: 86400,
    negative_max_ttl: 3600,
    servfail_ttl: 5,
    zone: 0,
};

fn policy(_: &[u8]) -> Option<TtlPolicy> {
    Some(POLICY)
}

pub(super) fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn cache() -> Cache {
    Cache::new(Limits {
        max_entries: 200_000,
        max_bytes: 256 << 20,
        stale_max: Duration::from_secs(3600),
    })
}

/// The cache key a client query for `name type` (RD set) gets.
fn key_of(name: &str, rtype: RecordType) -> Vec<u8> {
    let mut q = Message::new(7, MessageType::Query, OpCode::Query);
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    let qbytes = q.to_vec().unwrap();
    wire::parse_query(&qbytes).unwrap().cache_key().to_vec()
}

/// An upstream response for `name A` with one record of `ttl`.
fn a_response(name: &str, ttl: u32) -> Vec<u8> {
    let qname = Name::from_ascii(name).unwrap();
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(qname.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(
        qname,
        ttl,
        RData::A(A::new(198, 18, 0, 1)),
    ));
    m.to_vec().unwrap()
}

/// Caches `name A` with `ttl` and returns its key.
fn fill(cache: &Cache, name: &str, ttl: u32) -> Vec<u8> {
    let key = key_of(name, RecordType::A);
    let mut out = Vec::new();
    let (analysis, layout) = wire::normalize_response(&a_response(name, ttl), &mut out).unwrap();
    cache
        .insert(&key, out, &analysis, layout, &POLICY, Instant::now())
        .unwrap();
    key
}

/// One entry as a test wants it on disk.
struct Crafted {
    kind: u8,
    ttl: u32,
    key: Vec<u8>,
    response: Vec<u8>,
}

impl Crafted {
    fn a(name: &str, ttl: u32) -> Crafted {
        Crafted {
            kind: 0,
            ttl,
            key: key_of(name, RecordType::A),
            response: a_response(name, ttl),
        }
    }
}

/// Writes a snapshot holding `entries`, inserted now, owner-only.
fn craft(path: &Path, entries: &[Crafted]) {
    let wall = now_ms();
    let mut body = MAGIC.to_vec();
    body.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
    for e in entries {
        body.push(e.kind);
        body.extend_from_slice(&e.ttl.to_be_bytes());
        body.extend_from_slice(&wall.to_be_bytes());
        body.extend_from_slice(&u64::MAX.to_be_bytes());
        body.extend_from_slice(&u16::try_from(e.key.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&e.key);
        body.extend_from_slice(&u16::try_from(e.response.len()).unwrap().to_be_bytes());
        body.extend_from_slice(&e.response);
    }
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(path, &body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn entry_error(result: Result<Loaded, SnapshotError>) -> (u32, EntryError) {
    match result {
        Err(SnapshotError::Entry { index, reason }) => (index, reason),
        other => panic!("expected an entry error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn round_trip_keeps_entries_and_their_age() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let a = cache();
    let key = fill(&a, "registry.example.test.", 300);
    tokio::time::advance(Duration::from_secs(100)).await;
    assert_eq!(write(&a, &path, Duration::from_secs(3600)).unwrap(), 1);

    let b = cache();
    let loaded = load(&b, &path, policy).unwrap();
    assert_eq!(loaded.restored, 1);
    let Lookup::Fresh { entry, age } = b.lookup(&key, Instant::now()) else {
        panic!("restored entry must be fresh");
    };
    assert!((99..=101).contains(&age), "age {age}");
    assert_eq!(entry.ttl, 300);
}

#[tokio::test(start_paused = true)]
async fn a_restored_entry_counts_its_hits_in_the_zone_the_current_config_routes_it_to() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let a = cache();
    let key = fill(&a, "registry.example.test.", 300);
    assert_eq!(write(&a, &path, Duration::from_secs(3600)).unwrap(), 1);
    let b = cache();
    let zone_3 = |_: &[u8]| Some(TtlPolicy { zone: 3, ..POLICY });
    assert_eq!(load(&b, &path, zone_3).unwrap().restored, 1);
    let Lookup::Fresh { entry, .. } = b.lookup(&key, Instant::now()) else {
        panic!("restored entry must be fresh");
    };
    assert_eq!(entry.zone(), 3);
}

#[tokio::test(start_paused = true)]
async fn round_trip_keeps_keys_whether_or_not_upstream_echoed_the_question_case() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let a = cache();
    // The second answer's question is in upper case: its entry holds its key whole.
    let keys = [
        fill(&a, "api.example.test.", 300),
        fill(&a, "WWW.Example.TEST.", 300),
    ];
    assert_eq!(write(&a, &path, Duration::from_secs(3600)).unwrap(), 2);
    let b = cache();
    assert_eq!(load(&b, &path, policy).unwrap().restored, 2);
    for key in keys {
        assert!(matches!(
            b.lookup(&key, Instant::now()),
            Lookup::Fresh { .. }
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_and_truncated_files_are_refused_whole() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    std::fs::write(&path, b"this is not a snapshot at all").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(matches!(
        load(&cache(), &path, policy),
        Err(SnapshotError::Magic)
    ));

    let a = cache();
    for i in 0..10 {
        fill(&a, &format!("n{i}.example.test."), 300);
    }
    write(&a, &path, Duration::from_secs(60)).unwrap();
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 40]).unwrap();
    let b = cache();
    assert!(matches!(
        load(&b, &path, policy),
        Err(SnapshotError::Checksum)
    ));
    assert!(b.is_empty(), "nothing from a corrupt file is used");
    assert!(
        load(&b, &dir.path().join("missing"), policy)
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test(start_paused = true)]
async fn a_file_cut_inside_an_entry_inserts_none_of_the_entries_before_it() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let entries: Vec<Crafted> = (0..5)
        .map(|i| Crafted::a(&format!("n{i}.example.test."), 300))
        .collect();
    craft(&path, &entries);
    // Drop the last entry's final bytes and the CRC, then seal it again with a valid CRC:
    // the count still says five.
    let full = std::fs::read(&path).unwrap();
    let mut body = full[..full.len() - 4 - 10].to_vec();
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &body).unwrap();
    let b = cache();
    assert!(matches!(
        load(&b, &path, policy),
        Err(SnapshotError::Truncated(4))
    ));
    assert!(b.is_empty(), "entries before the cut were inserted");
}

#[tokio::test(start_paused = true)]
async fn a_key_that_is_not_the_responses_question_refuses_the_file() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let mut wrong = Crafted::a("victim.example.test.", 300);
    wrong.key = key_of("victim.example.test.", RecordType::TXT);
    craft(&path, &[Crafted::a("fine.example.test.", 300), wrong]);
    let b = cache();
    assert_eq!(
        entry_error(load(&b, &path, policy)),
        (1, EntryError::Question)
    );
    assert!(b.is_empty());

    let mut other_name = Crafted::a("victim.example.test.", 300);
    other_name.key = key_of("bank.example.test.", RecordType::A);
    craft(&path, &[other_name]);
    assert_eq!(
        entry_error(load(&b, &path, policy)),
        (0, EntryError::Question)
    );
}

#[tokio::test(start_paused = true)]
async fn twelve_zero_bytes_are_not_a_response() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let mut zeros = Crafted::a("zero.example.test.", 300);
    zeros.response = vec![0; 12];
    craft(&path, &[zeros]);
    let b = cache();
    assert_eq!(
        entry_error(load(&b, &path, policy)),
        (0, EntryError::NotAResponse)
    );
    assert!(b.is_empty());
}

#[tokio::test(start_paused = true)]
async fn malformed_keys_kinds_and_messages_refuse_the_file() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let mut bad_flags = Crafted::a("k.example.test.", 300);
    bad_flags.key[0] |= 0x80;
    let mut upper = Crafted::a("k.example.test.", 300);
    upper.key[2] = b'K';
    let mut trailing = Crafted::a("k.example.test.", 300);
    trailing.response.push(0);
    let cases = [
        (
            Crafted {
                kind: 9,
                ..Crafted::a("k.example.test.", 300)
            },
            "Kind(9)",
        ),
        (
            Crafted {
                kind: 1,
                ..Crafted::a("k.example.test.", 300)
            },
            "KindMismatch",
        ),
        (
            Crafted {
                ttl: 0,
                ..Crafted::a("k.example.test.", 300)
            },
            "ZeroTtl",
        ),
        (bad_flags, "unknown flag bits"),
        (upper, "not lowercased"),
        (trailing, "Message(Trailing)"),
    ];
    for (i, (crafted, expected)) in cases.into_iter().enumerate() {
        craft(&path, &[crafted]);
        let b = cache();
        let (_, reason) = entry_error(load(&b, &path, policy));
        assert!(
            format!("{reason:?}").contains(expected),
            "case {i}: {reason:?}"
        );
        assert!(b.is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn ttls_are_clamped_to_the_current_config() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    craft(&path, &[Crafted::a("long.example.test.", 2_147_483_645)]);
    let b = cache();
    assert_eq!(load(&b, &path, policy).unwrap().restored, 1);
    let key = key_of("long.example.test.", RecordType::A);
    let Lookup::Fresh { entry, .. } = b.lookup(&key, Instant::now()) else {
        panic!("restored entry must be fresh");
    };
    assert_eq!(entry.ttl, POLICY.max_ttl);

    // A zone no longer configured: the entry is skipped, not the file.
    let c = cache();
    let loaded = load(&c, &path, |_| None).unwrap();
    assert_eq!((loaded.restored, loaded.dropped), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn the_stale_window_is_the_current_one() {
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    // Written with an unbounded stale window, inserted an hour ago by the wall clock.
    craft(&path, &[Crafted::a("old.example.test.", 1)]);
    let mut body = std::fs::read(&path).unwrap();
    let at = MAGIC.len() + 4 + 1 + 4;
    let hour_ago = now_ms() - 3_600_000;
    body[at..at + 8].copy_from_slice(&hour_ago.to_be_bytes());
    let len = body.len();
    let crc = crc32fast::hash(&body[..len - 4]);
    body[len - 4..].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(&path, &body).unwrap();
    let short = Cache::new(Limits {
        max_entries: 10,
        max_bytes: 1 << 20,
        stale_max: Duration::from_secs(60),
    });
    let loaded = load(&short, &path, policy).unwrap();
    assert_eq!((loaded.restored, loaded.expired), (0, 1));
}

#[test]
fn entries_past_their_stale_window_are_skipped() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = private_dir();
        let path = dir.path().join("cache.snap");
        let a = cache();
        fill(&a, "short.example.test.", 1);
        fill(&a, "long.example.test.", 300);
        // A stale window of zero: the 1 s entry is past it once a second has gone by.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(write(&a, &path, Duration::ZERO).unwrap(), 1);
        assert_eq!(load(&cache(), &path, policy).unwrap().restored, 1);
    });
}

/// Measures the load time docs/config.md quotes. 20k entries by default, to keep the
/// debug-build test run short; `NODEDNS_SNAPSHOT_ENTRIES=100000` for the documented figure.
#[tokio::test]
async fn loads_many_entries() {
    let n: usize = std::env::var("NODEDNS_SNAPSHOT_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let a = cache();
    for i in 0..n {
        fill(&a, &format!("host-{i}.example.test."), 3600);
    }
    let written = write(&a, &path, Duration::from_secs(3600)).unwrap();
    assert_eq!(written, n);
    let size = std::fs::metadata(&path).unwrap().len();
    let b = cache();
    let started = std::time::Instant::now();
    let loaded = load(&b, &path, policy).unwrap();
    eprintln!(
        "snapshot: {n} entries, {size} bytes, loaded in {:?}",
        started.elapsed()
    );
    assert_eq!(loaded.restored, n);
    assert_eq!(b.len(), n);
}
