//! The cache's hit path in isolation: `Store::get` of a present key, at 1k and 1M entries.
//!
//! Keys are 30 bytes shaped like a cache key (flags byte, a qname in wire form, qtype,
//! qclass); values are distinct `Arc`s of one heap block holding the key and 100 bytes, as a
//! cache entry holds its key and response. Keys are visited in a strided
//! order so the 1M case pays the CPU cache misses a real hit would. Criterion's "time" line is
//! the cost of one hit (hash, read lock, key compare, hit count, `Arc` clone and drop).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nodedns::cache::store::{Keyed, Store};

#[path = "common/synthetic.rs"]
#[allow(dead_code)]
mod synthetic;
use synthetic::Strided;

const KEY_LEN: usize = 30;

/// The key, then the payload.
struct Value(Box<[u8]>);

impl Keyed for Value {
    fn has_key(&self, key: &[u8]) -> bool {
        self.0[..KEY_LEN] == *key
    }
}

/// A 30-byte key: flags, `h<6 digits>.svc-cluster.lan.`, qtype A, qclass IN.
fn qname_key(i: usize) -> [u8; KEY_LEN] {
    let text = format!(
        "\x01\x07h{:06}\x0bsvc-cluster\x03lan\x00\x00\x01\x00\x01",
        i % 1_000_000
    );
    let mut key = [0u8; KEY_LEN];
    key.copy_from_slice(&text.as_bytes()[..KEY_LEN]);
    key
}

fn get_hit(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_get_hit");
    group.throughput(Throughput::Elements(1));
    for n in [1_000usize, 1_000_000] {
        let store = Store::<Value>::new(2 * n, usize::MAX); // room for shard skew
        let keys: Vec<[u8; KEY_LEN]> = (0..n).map(qname_key).collect();
        for (i, key) in keys.iter().enumerate() {
            let mut bytes = key.to_vec();
            bytes.resize(KEY_LEN + 100, (i % 251) as u8);
            store.insert(
                key,
                Arc::new(Value(bytes.into_boxed_slice())),
                KEY_LEN + 100,
            );
        }
        assert_eq!(
            store.len(),
            n,
            "the store must hold every key for a pure-hit bench"
        );
        let mut order = Strided::new(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| black_box(store.get(black_box(&keys[order.next_index()]))));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = get_hit
}
criterion_main!(benches);
