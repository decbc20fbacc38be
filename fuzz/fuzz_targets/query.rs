//! A client packet through the fast path: `wire::parse_query`, then `Resolver::fast` over UDP
//! and TCP, first on an empty cache (malformed queries, CHAOS, misses) and again once the
//! cache holds an answer for the query (the hit path, truncation included).
//!
//! Invariants: nothing panics; whatever the handler writes is a response with the client's
//! ID, within the client's size limit, that nodedns re-parses and, when hickory-proto
//! decodes the query, that hickory decodes too.

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use nodedns::cache::TtlPolicy;
use nodedns::config;
use nodedns::{Fast, Observer, Proto, Resolver};
use nodedns::Stats;
use nodedns::wire::{self, Query};
use nodedns_fuzz::{EDNS_CAP, TCP_MAX, check_reply, hickory_parses, udp_limit};
use tokio::time::Instant;

/// One zone for every name; its upstream is never contacted (the fast path only reads the
/// cache). A small cache: entries from earlier inputs are evicted, never relied on.
const CONFIG: &str = r#"
[cache]
capacity = 256
prefetch = false

[[zones]]
name = "."
upstreams = ["192.0.2.1:53"]
"#;

static HANDLER: LazyLock<Arc<Resolver>> = LazyLock::new(|| {
    let cfg = config::parse_str(CONFIG, "fuzz").expect("the fuzz config is valid");
    Arc::new(Resolver::new(&cfg, Arc::new(Stats::default())))
});

const POLICY: TtlPolicy = TtlPolicy {
    min_ttl: 0,
    max_ttl: 86_400,
    negative_max_ttl: 3_600,
    servfail_ttl: 5,
    zone: 0,
};

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 53);

fuzz_target!(|pkt: &[u8]| {
    let handler = &*HANDLER;
    let parsed = wire::parse_query(pkt);
    if let Ok(q) = &parsed {
        check_query(q);
    }
    let oracle = hickory_parses(pkt);
    let id = u16::from_be_bytes([
        pkt.first().copied().unwrap_or(0),
        pkt.get(1).copied().unwrap_or(0),
    ]);
    let limit = parsed
        .as_ref()
        .map_or(512, |q| udp_limit(q.edns.map(|e| e.udp_size)));
    let mut out = Vec::new();
    serve(handler, pkt, id, limit, oracle, &mut out);

    let Ok(q) = parsed else { return };
    if q.qclass == wire::class::CH {
        return;
    }
    // The answer an upstream would give, cached under the query's key: the next pass is a hit.
    let answer = answer_for(&q);
    let mut stored = Vec::new();
    let (analysis, layout) =
        wire::normalize_response(&answer, &mut stored).expect("the built answer normalises");
    handler
        .cache()
        .insert(
            q.cache_key(),
            stored,
            &analysis,
            layout,
            &POLICY,
            Instant::now(),
        )
        .expect("the built answer is cacheable");
    serve(handler, pkt, id, limit, oracle, &mut out);
});

/// Runs the fast path over UDP and TCP and checks what it writes.
fn serve(
    handler: &Arc<Resolver>,
    pkt: &[u8],
    id: u16,
    limit: usize,
    oracle: bool,
    out: &mut Vec<u8>,
) {
    for (proto, limit) in [(Proto::Udp, limit), (Proto::Tcp, TCP_MAX)] {
        let mut obs = Observer::without_retransmits();
        match handler.fast(pkt, proto, CLIENT, Instant::now(), out, &mut obs) {
            Fast::Reply => check_reply(out, id, limit, oracle),
            Fast::Drop => assert!(
                !matches!(wire::parse_query(pkt), Ok(_)),
                "a query that parses is answered"
            ),
            Fast::Slow(_) => {}
        }
    }
}

/// What a parsed query must satisfy whatever the packet was.
fn check_query(q: &Query<'_>) {
    let name = q.qname();
    assert!(name.len() <= wire::MAX_NAME, "qname within 255 bytes");
    assert_eq!(name.last(), Some(&0), "qname ends in the root label");
    assert_eq!(
        q.question.len(),
        name.len() + 4,
        "question is qname, qtype, qclass"
    );
    assert!(
        q.question[..name.len()].eq_ignore_ascii_case(name),
        "the key's name is the question's, lowercased"
    );
    let key = q.cache_key();
    assert_eq!(&key[1..1 + name.len()], name);
    assert_eq!(&key[1 + name.len()..], &q.question[name.len()..]);
    let _ = q.qname_text();
    assert!((512..=usize::from(EDNS_CAP)).contains(&q.udp_limit(EDNS_CAP)));
    // The query sent upstream is one hickory decodes, and its own echo passes the reply check.
    let mut upstream = Vec::new();
    let question_end = wire::build_upstream_query(q, 0x4242, &mut upstream);
    assert!(
        hickory_parses(&upstream),
        "hickory decodes our upstream query"
    );
    let mut echo = upstream.clone();
    echo[2] |= 0x80;
    assert_eq!(wire::check_reply(&upstream[..question_end], &echo), Ok(()));
}

/// An upstream answer to `q`: its question lowercased as we ask it, and 1 to 128 CNAME
/// records pointing at the qname, how many taken from the query ID so that some answers
/// outgrow 512 and 1232 bytes and are cut; the OPT when the client sent one.
fn answer_for(q: &Query<'_>) -> Vec<u8> {
    let n = 1 + q.header.id % 128;
    let edns = u16::from(q.edns.is_some());
    let mut r = Vec::new();
    for v in [q.header.id, 0x8180, 1, n, 0, edns] {
        r.extend_from_slice(&v.to_be_bytes());
    }
    r.extend_from_slice(q.qname());
    r.extend_from_slice(&q.qtype.to_be_bytes());
    r.extend_from_slice(&q.qclass.to_be_bytes());
    for _ in 0..n {
        // Owner and target: pointers to the qname at offset 12.
        r.extend_from_slice(&[0xC0, 0x0C, 0, 5]);
        r.extend_from_slice(&q.qclass.to_be_bytes());
        r.extend_from_slice(&[0, 0, 1, 44, 0, 2, 0xC0, 0x0C]);
    }
    if edns == 1 {
        r.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
    }
    r
}
