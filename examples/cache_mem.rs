//! Memory per cached entry, measured the way the load benchmark's figure is, without a daemon.
//!
//! Inserts `N` (default 100,000) answers into a fresh cache of capacity 200,000, shaped like
//! the load benchmark's: `h<6 digits>.bench. A IN` asked with EDNS, answered the way nsd
//! answers it (one A record, the zone's NS in authority, its glue in additional, an OPT: 91
//! bytes from upstream, 80 on the wire to a client without EDNS), normalised with the real
//! `wire::normalize_response` and stored with `Cache::insert` as the miss path does. Prints the
//! growth of the resident set per entry (from `/proc/self/statm`), what the cache charges per
//! entry, and the sizes of the types behind an entry.
//!
//! With `--steady`, `4N` names go into room for `N` instead: the figure then includes what
//! eviction keeps per entry (the ghost set of S3-FIFO) once the cache has turned over.
//!
//! Usage: `cargo run --release --example cache_mem [--steady] [N]`. Linux only (reads `/proc`).

use std::time::Duration;

use nodedns::cache::store::Store;
use nodedns::cache::{Cache, Entry, Limits, TtlPolicy};
use nodedns::wire::{normalize_response, parse_query};
use tokio::time::Instant;

#[path = "../benches/common/synthetic.rs"]
#[allow(dead_code)]
mod synthetic;
use synthetic::{OPT, query, question};

/// The daemon's allocator: what an entry costs depends on its size classes.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// nsd's answer for name `i` of the load benchmark's zone: `h<i>.bench. 3600 A 198.18.x.y`,
/// `bench. 3600 NS ns.bench.`, `ns.bench. 3600 A 127.0.0.2`, then its OPT.
fn response(i: usize) -> Vec<u8> {
    let mut r = vec![0x12, 0x34, 0x85, 0x00, 0, 1, 0, 1, 0, 1, 0, 2];
    r.extend_from_slice(&question(i));
    // Answer: owner -> the question's name (offset 12).
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 198, 18]);
    r.extend_from_slice(&[(i >> 8) as u8, i as u8]);
    // Authority: owner `bench.` -> offset 20 (after the 8-byte first label); RDATA `ns` + ptr.
    r.extend_from_slice(&[
        0xc0, 0x14, 0, 2, 0, 1, 0, 0, 0x0e, 0x10, 0, 5, 2, b'n', b's',
    ]);
    r.extend_from_slice(&[0xc0, 0x14]);
    // Additional: owner `ns.bench.` -> the NS RDATA at offset 59.
    r.extend_from_slice(&[0xc0, 59, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 127, 0, 0, 2]);
    r.extend_from_slice(&OPT);
    r
}

/// Resident set size in bytes, from `/proc/self/statm` (second field, in pages).
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let steady = args.iter().any(|a| a == "--steady");
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    // Filling: n names into room for 2n, as the load benchmark does. Steady: 4n names into
    // room for n, so three quarters of them pass through and are evicted (the ghost set full).
    let (capacity, inserts) = if steady { (n, 4 * n) } else { (2 * n, n) };
    let policy = TtlPolicy {
        min_ttl: 0,
        max_ttl: 86_400,
        negative_max_ttl: 3_600,
        servfail_ttl: 5,
        zone: 0,
    };
    let cache = Cache::new(Limits {
        max_entries: capacity,
        max_bytes: 256 << 20,
        stale_max: Duration::from_secs(3_600),
    });
    // Everything the loop reuses is allocated before the first reading.
    let mut upstream = Vec::with_capacity(512);
    let mut sample = Vec::new();
    let Ok((_, layout)) = normalize_response(&response(0), &mut sample) else {
        eprintln!("the sample response does not parse");
        return;
    };
    let before = rss();
    let now = Instant::now();
    for i in 0..inserts {
        let pkt = query(i);
        let Ok(q) = parse_query(&pkt) else {
            eprintln!("query {i} does not parse");
            return;
        };
        let key = q.cache_key();
        upstream.clear();
        upstream.extend_from_slice(&response(i));
        // As the miss path does: a buffer a little larger than the reply, then a copy to keep.
        let mut normalized = Vec::with_capacity(upstream.len() + 16);
        let Ok((analysis, layout)) = normalize_response(&upstream, &mut normalized) else {
            eprintln!("response {i} does not parse");
            return;
        };
        cache.insert(key, normalized.clone(), &analysis, layout, &policy, now);
    }
    let after = rss();
    let held = cache.len().max(1);
    println!(
        "{inserts} inserts into room for {capacity}: {} entries held",
        cache.len()
    );
    println!(
        "response: {} bytes as a message, {} as stored (with its TTL offsets)",
        layout.message(&sample).len(),
        sample.len()
    );
    println!("size_of::<Entry>():       {}", std::mem::size_of::<Entry>());
    println!(
        "store overhead per entry: {} (slab node included)",
        Store::<Entry>::entry_overhead()
    );
    println!("charged bytes per entry:  {}", cache.bytes() / held);
    println!(
        "RSS growth per entry:     {}",
        after.saturating_sub(before) / held
    );
}
