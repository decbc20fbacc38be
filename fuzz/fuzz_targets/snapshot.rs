//! A snapshot file's bytes through `snapshot::load_bytes` into a cache, then every entry it
//! restored served to a client as a cache hit is.
//!
//! Each input is loaded twice: as it is (the magic and checksum checks), and with its last
//! four bytes replaced by the CRC-32 of the rest, so mutations reach the entry parser instead
//! of stopping at the checksum. A snapshot nodedns wrote is unchanged by the second form.
//!
//! Invariants: nothing panics; every entry in the cache afterwards, served to a plain UDP
//! client and to an EDNS one, gives a reply within their limits that nodedns re-parses.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nodedns::cache::{Cache, Limits, TtlPolicy};
use nodedns::snapshot;
use nodedns::wire::{self, Client, ClientHeader, HEADER_LEN};
use nodedns_fuzz::{check_reply, udp_limit};

fuzz_target!(|data: &[u8]| {
    load_and_serve(data);
    if let Some((body, _)) = data.split_last_chunk::<4>() {
        let mut fixed = body.to_vec();
        fixed.extend_from_slice(&crc32fast::hash(body).to_be_bytes());
        load_and_serve(&fixed);
    }
});

fn load_and_serve(data: &[u8]) {
    let cache = Cache::new(Limits {
        max_entries: 64,
        max_bytes: 1 << 20,
        stale_max: Duration::from_secs(3600),
    });
    // Every name gets the default TTL clamps, as a `.` zone would give it.
    let policy = |_: &[u8]| {
        Some(TtlPolicy {
            min_ttl: 0,
            max_ttl: 86_400,
            negative_max_ttl: 3_600,
            servfail_ttl: 5,
            zone: 0,
        })
    };
    // Loading is all or nothing: a refused file leaves the cache empty.
    match snapshot::load_bytes(&cache, data, policy) {
        Ok(loaded) => assert!(cache.len() <= loaded.restored),
        Err(_) => assert_eq!(cache.len(), 0, "a refused snapshot left entries behind"),
    }
    let mut out = Vec::new();
    cache.store().for_each(|entry| {
        let stored = entry.stored();
        let layout = entry.layout();
        let message = layout.message(stored);
        let question = message
            .get(HEADER_LEN..layout.question_end())
            .unwrap_or_default();
        for edns in [None, Some(4096)] {
            let client = Client {
                header: ClientHeader {
                    id: 0x5151,
                    flags: 0x0100,
                    dnssec_ok: false,
                },
                question,
                has_edns: edns.is_some(),
                max_len: udp_limit(edns),
            };
            wire::write_reply(stored, layout, &client, entry.ttl_rewrite(0), &mut out);
            let floor =
                layout.question_end() + layout.opt_offset().map_or(0, |o| message.len() - o);
            if out.len() > client.max_len {
                assert!(
                    out.len() <= floor,
                    "only an over-long question overruns the limit"
                );
                continue;
            }
            check_reply(&out, 0x5151, client.max_len, false);
        }
    });
}
