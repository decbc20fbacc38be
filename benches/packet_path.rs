//! The UDP cache-hit path in pieces, as `Resolver::fast` runs it for every packet: parse the
//! query, build its cache key, and the whole hit (parse, key, cache lookup, patched copy of
//! the stored reply) at 1k and 1M cached names; and the miss path's one wire step, normalising
//! an upstream answer before it is cached. Counters and I/O are left out there: the load
//! benchmark (`benches/load.sh`) measures those. `resolver_hit` adds the counters: the whole
//! `Resolver::fast` on a hit (source check, parse, search-list check, lookup, copy, hit and
//! reply counters, the zone's pending latency) and the batch's timing every 32 queries, still
//! without I/O; `aged` hits an entry 10 s old, as most hits are, `fresh` one under a second
//! old, which is also looked up in the retransmit table.
//!
//! Queries are `h<6 digits>.bench. A IN` with an EDNS OPT (bufsize 1232), as a stub
//! resolver sends them; the stored reply has one A record and our OPT. Names are visited in
//! a strided order so the 1M case pays the CPU cache misses a real hit would. Criterion's
//! "time" line is the cost of one operation.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::sync::Arc;

use nodedns::cache::{Cache, Limits, TtlPolicy};
use nodedns::wire::{self, Client, ClientHeader, normalize_response, parse_query, write_reply};
use nodedns::{Fast, Observer, Proto, Resolver, Stats};
use tokio::time::Instant;

#[path = "common/synthetic.rs"]
mod synthetic;
use synthetic::{OPT, Strided, query, question};

/// An upstream answer for name `i`: one A record (TTL 300) and an OPT.
fn response(i: usize) -> Vec<u8> {
    let mut r = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 1];
    r.extend_from_slice(&question(i));
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x01, 0x2c, 0, 4, 10, 0]);
    r.extend_from_slice(&[(i >> 8) as u8, i as u8]);
    r.extend_from_slice(&OPT);
    r
}

/// A larger upstream answer, as a CDN name gets one: `www.example.com. A` answered by a CNAME
/// to `e1.cdn.example.net.`, two A records, two NS records in authority and their two A glue
/// records in additional, every name after the question compressed, and an OPT.
fn chain_response() -> Vec<u8> {
    let mut r = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 3, 0, 2, 0, 3];
    // Question at 12: www.example.com. A IN.
    r.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    // CNAME owner -> 12; its target, e1.cdn.example.net., is the RDATA.
    r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 20]);
    let [target_hi, target] = (0xc000 | r.len() as u16).to_be_bytes();
    let [cdn_hi, cdn] = (0xc000 | (r.len() + 3) as u16).to_be_bytes();
    r.extend_from_slice(b"\x02e1\x03cdn\x07example\x03net\x00");
    for last in [1u8, 2] {
        r.extend_from_slice(&[target_hi, target, 0, 1, 0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&[0, 4, 192, 0, 2, last]);
    }
    // Authority: cdn.example.net. NS ns1/ns2.cdn.example.net.
    let mut ns_at = Vec::new();
    for n in [b'1', b'2'] {
        r.extend_from_slice(&[cdn_hi, cdn, 0, 2, 0, 1, 0, 0, 0x0e, 0x10, 0, 6]);
        ns_at.push(r.len());
        r.extend_from_slice(&[3, b'n', b's', n, cdn_hi, cdn]);
    }
    for (i, at) in ns_at.into_iter().enumerate() {
        let [hi, lo] = (0xc000 | at as u16).to_be_bytes();
        r.extend_from_slice(&[hi, lo, 0, 1, 0, 1, 0, 0, 0x0e, 0x10]);
        r.extend_from_slice(&[0, 4, 198, 51, 100, 1 + i as u8]);
    }
    r.extend_from_slice(&OPT);
    r
}

/// Normalising an upstream answer: what every miss pays once before the answer is cached.
fn normalize(c: &mut Criterion) {
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(4096);
    for (name, resp) in [("one_a", response(42)), ("cname_chain", chain_response())] {
        assert!(
            normalize_response(&resp, &mut out).is_ok(),
            "the bench reply {name} normalises"
        );
        group.bench_function(name, |b| {
            b.iter(|| black_box(normalize_response(black_box(&resp), &mut out).is_ok()))
        });
    }
    group.finish();
}

fn parse_and_key(c: &mut Criterion) {
    let pkt = query(42);
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));
    // Parsing writes the cache key as it goes: this is both.
    group.bench_function("parse_query", |b| {
        b.iter(|| black_box(parse_query(black_box(&pkt)).map(|q| q.cache_key().len())))
    });
    group.finish();
}

/// A cache holding `n` names, and their queries laid end to end (all the same length).
fn filled(n: usize) -> (Cache, Vec<u8>, usize) {
    let cache = Cache::new(Limits {
        max_entries: 2 * n, // room for shard skew
        max_bytes: usize::MAX,
        stale_max: Duration::ZERO,
    });
    let policy = TtlPolicy {
        min_ttl: 0,
        max_ttl: 86_400,
        negative_max_ttl: 3_600,
        servfail_ttl: 0,
        zone: 0,
    };
    let now = Instant::now();
    let (mut queries, mut stored) = (Vec::new(), Vec::new());
    for i in 0..n {
        let pkt = query(i);
        let q = parse_query(&pkt).expect("the bench query parses");
        let (analysis, layout) =
            normalize_response(&response(i), &mut stored).expect("the bench reply parses");
        let key = q.cache_key();
        cache.insert(key, stored.clone(), &analysis, layout, &policy, now);
        queries.extend_from_slice(&pkt);
    }
    assert_eq!(
        cache.len(),
        n,
        "the cache must hold every name for a pure-hit bench"
    );
    (cache, queries, query(0).len())
}

/// One hit as the fast path serves it (copied out under the shard's read lock); returns the
/// reply length.
fn hit(cache: &Cache, pkt: &[u8], now: Instant, out: &mut Vec<u8>) -> usize {
    let Ok(q) = parse_query(pkt) else { return 0 };
    let client = Client {
        header: ClientHeader::of(&q),
        question: q.question,
        has_edns: q.edns.is_some(),
        max_len: q.udp_limit(wire::EDNS_UDP_SIZE),
    };
    let served = cache.serve_fresh(q.cache_key(), now, |entry, age| {
        let ttl = entry.ttl_rewrite(age);
        write_reply(entry.stored(), entry.layout(), &client, ttl, out);
    });
    if served.is_err() {
        return 0;
    }
    out.len()
}

fn hit_with_patching(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_hit_patch");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 1_000_000] {
        let (cache, queries, len) = filled(n);
        let mut out = Vec::with_capacity(4096);
        assert!(
            hit(&cache, &queries[..len], Instant::now(), &mut out) > 0,
            "a hit writes a reply"
        );
        let mut order = Strided::new(n);
        // The listener reads the clock once per batch of up to 32.
        let now = Instant::now();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                let i = order.next_index();
                black_box(hit(
                    &cache,
                    black_box(&queries[i * len..(i + 1) * len]),
                    now,
                    &mut out,
                ))
            });
        });
    }
    group.finish();
}

/// A resolver with one zone (never asked: every query hits) holding 1k names inserted
/// `age` ago.
fn resolver_with(age: Duration) -> (Arc<Resolver>, Vec<u8>, usize) {
    let toml = "[listen]\naddresses = [\"127.0.0.1:0\"]\n[admin]\naddress = \"\"\n\
                [[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\"]\n";
    let cfg = nodedns::config::parse_str(toml, "bench.toml").expect("the bench config parses");
    let resolver = Arc::new(Resolver::new(&cfg, Arc::new(Stats::default())));
    let policy = resolver
        .ttl_policy(b"\x05bench\x00")
        .expect("`.` routes every name");
    let inserted = Instant::now()
        .checked_sub(age)
        .expect("the clock is past the age");
    let (mut queries, mut stored) = (Vec::new(), Vec::new());
    for i in 0..1_000 {
        let pkt = query(i);
        let q = parse_query(&pkt).expect("the bench query parses");
        let (analysis, layout) =
            normalize_response(&response(i), &mut stored).expect("the bench reply parses");
        let cache = resolver.cache();
        cache.insert(
            q.cache_key(),
            stored.clone(),
            &analysis,
            layout,
            &policy,
            inserted,
        );
        queries.extend_from_slice(&pkt);
    }
    (resolver, queries, query(0).len())
}

fn resolver_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("resolver_hit");
    group.throughput(Throughput::Elements(1));
    let client = "127.0.0.1:5353".parse().expect("an address");
    for (name, age) in [("aged", Duration::from_secs(10)), ("fresh", Duration::ZERO)] {
        let (resolver, queries, len) = resolver_with(age);
        let mut out = Vec::with_capacity(4096);
        let mut obs = Observer::udp();
        let mut order = Strided::new(1_000);
        let mut in_batch = 0;
        let now = Instant::now();
        group.bench_function(name, |b| {
            b.iter(|| {
                let i = order.next_index();
                let pkt = black_box(&queries[i * len..(i + 1) * len]);
                let fast = resolver.fast(pkt, Proto::Udp, client, now, &mut out, &mut obs);
                assert!(matches!(fast, Fast::Reply), "every query hits");
                in_batch += 1;
                if in_batch == 32 {
                    resolver.settle(&mut obs, Proto::Udp, now);
                    in_batch = 0;
                }
                out.len()
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = parse_and_key, normalize, hit_with_patching, resolver_hit
}
criterion_main!(benches);
