//! What the operator's questions read off `/metrics` after a scripted mix on loopback: hits
//! and misses per zone, client latency by result, search-list expansions and client
//! retransmits, each an exact count.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::{self, QueryBuilder, answer_a};
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config_with_admin, zone};
use support::scrape::{Scrape, get};
use tokio::net::UdpSocket;

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const CLUSTER: &str = "cluster.local.";
const HOLE: &str = "hole.test.";
const LATENCY: &str = "nodedns_request_duration_seconds_count";

/// `world` serves `.`, `cluster` serves `cluster.local.` (NXDOMAIN with an SOA for every
/// name it does not hold), `hole` serves `hole.test.` and never answers.
struct Mix {
    ns: Nodedns,
    _upstreams: [FakeUpstream; 3],
}

async fn start() -> Mix {
    let (world, cluster, hole) = (
        FakeUpstream::start().await,
        FakeUpstream::start().await,
        FakeUpstream::start().await,
    );
    for name in [
        "a.example.test.",
        "b.example.test.",
        "registry.example.com.",
    ] {
        world.add_a(name, ADDR, 300);
    }
    cluster.set_zone(CLUSTER);
    cluster.add_a("redis.gitlab.svc.cluster.local.", ADDR, 300);
    hole.set_behavior(Behavior::Drop);
    let zones = [
        zone(".", &[world.addr()], ""),
        zone(CLUSTER, &[cluster.addr()], ""),
        zone(HOLE, &[hole.addr()], ""),
    ];
    let toml = config_with_admin(&format!(
        "[cache]\nprefetch = false\n[forward]\nattempts = 1\ndeadline = \"400ms\"\n{}",
        zones.concat()
    ));
    Mix {
        ns: Nodedns::start(&toml).await,
        _upstreams: [world, cluster, hole],
    }
}

async fn scrape(ns: &Nodedns) -> Scrape {
    let (status, body) = get(ns.admin.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    Scrape::parse(&body)
}

/// Scrapes until `done` holds (a reply is timed just after it is sent, so a client can
/// read it a moment before the scrape shows it), for up to 5 s; then returns the scrape.
async fn scrape_when(ns: &Nodedns, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..100 {
        let s = scrape(ns).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scrape(ns).await
}

/// An A query with an ID no other query of the test has, so that none is taken for a
/// retransmit of another by chance.
async fn a(ns: &Nodedns, name: &str) -> hickory_proto::op::Message {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1000);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let q = QueryBuilder::new(name, RecordType::A).id(id);
    client::send_udp(ns.addr, &q).await.unwrap()
}

fn latency(s: &Scrape, zone: &str, result: &str) -> f64 {
    s.get(
        LATENCY,
        &[("zone", zone), ("proto", "udp"), ("result", result)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_expansions_and_retransmits_are_counted_exactly() {
    let m = start().await;
    let ns = &m.ns;

    // 3 misses in two zones, then 10 hits: 7 in `.`, 3 in cluster.local.
    for name in [
        "a.example.test",
        "b.example.test",
        "redis.gitlab.svc.cluster.local",
    ] {
        assert_eq!(answer_a(&a(ns, name).await), vec![ADDR], "{name}");
    }
    for (name, times) in [
        ("a.example.test", 4),
        ("b.example.test", 3),
        ("redis.gitlab.svc.cluster.local", 3),
    ] {
        for _ in 0..times {
            assert_eq!(answer_a(&a(ns, name).await), vec![ADDR], "{name}");
        }
    }
    let s = scrape_when(ns, |s| {
        s.sum(LATENCY, &[("result", "hit")]) == 10.0 && s.sum(LATENCY, &[("result", "miss")]) == 3.0
    })
    .await;
    let hits = "nodedns_cache_hits_total";
    assert_eq!(s.get(hits, &[("type", "success"), ("zone", ".")]), 7.0);
    assert_eq!(s.get(hits, &[("type", "success"), ("zone", CLUSTER)]), 3.0);
    assert_eq!(s.sum(hits, &[]), 10.0);
    let misses = "nodedns_cache_misses_total";
    assert_eq!(s.get(misses, &[("zone", ".")]), 2.0);
    assert_eq!(s.get(misses, &[("zone", CLUSTER)]), 1.0);
    assert_eq!(s.sum(misses, &[]), 3.0);
    // Every query under its zone: the per-zone hit rate is hits / requests.
    let req = "nodedns_requests_total";
    assert_eq!(s.get(req, &[("proto", "udp"), ("zone", ".")]), 9.0);
    assert_eq!(s.get(req, &[("proto", "udp"), ("zone", CLUSTER)]), 4.0);
    assert_eq!(s.get(req, &[("proto", "udp"), ("zone", "-")]), 0.0);
    // The latency histogram counts the same replies, by zone and result.
    assert_eq!(latency(&s, ".", "hit"), 7.0);
    assert_eq!(latency(&s, CLUSTER, "hit"), 3.0);
    assert_eq!(latency(&s, ".", "miss"), 2.0);
    assert_eq!(latency(&s, CLUSTER, "miss"), 1.0);
    let tcp_hits = [("zone", "."), ("proto", "tcp"), ("result", "hit")];
    assert_eq!(s.get(LATENCY, &tcp_hits), 0.0);
    let inf = [
        ("zone", "."),
        ("proto", "udp"),
        ("result", "hit"),
        ("le", "+Inf"),
    ];
    assert_eq!(s.get("nodedns_request_duration_seconds_bucket", &inf), 7.0);
    // Hits are answered in well under a second on loopback.
    let one_s = [
        ("zone", "."),
        ("proto", "udp"),
        ("result", "hit"),
        ("le", "1"),
    ];
    assert_eq!(
        s.get("nodedns_request_duration_seconds_bucket", &one_s),
        7.0
    );
    assert_eq!(s.sum("nodedns_search_expansions_total", &[]), 0.0);

    // glibc with `search gitlab.svc.cluster.local svc.cluster.local cluster.local` and
    // `ndots:5` looks `registry.example.com` up as these 4 names, in this order: the
    // first 3 are expansions (NXDOMAIN), the 4th is the name itself.
    for name in [
        "registry.example.com.gitlab.svc.cluster.local",
        "registry.example.com.svc.cluster.local",
        "registry.example.com.cluster.local",
    ] {
        let r = a(ns, name).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    let name = "registry.example.com";
    assert_eq!(answer_a(&a(ns, name).await), vec![ADDR]);
    let s = scrape_when(ns, |s| s.sum(LATENCY, &[("result", "miss")]) == 7.0).await;
    let expansions = "nodedns_search_expansions_total";
    assert_eq!(s.get(expansions, &[("rcode", "NXDOMAIN")]), 3.0);
    assert_eq!(s.sum(expansions, &[]), 3.0);
    assert_eq!(latency(&s, CLUSTER, "miss"), 4.0);
    assert_eq!(latency(&s, ".", "miss"), 3.0);

    // One query to a black-holed zone sent 4 times with one ID: 3 retransmits. The same
    // name with another ID is a question of its own.
    let retransmits = "nodedns_client_retransmits_total";
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let first = QueryBuilder::new("x.hole.test", RecordType::A)
        .id(0x4242)
        .build();
    for _ in 0..4 {
        sock.send_to(&first, ns.addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = QueryBuilder::new("x.hole.test", RecordType::A)
        .id(0x4243)
        .build();
    sock.send_to(&other, ns.addr).await.unwrap();
    // Each of the 5 gets a SERVFAIL at the deadline: replies made here, `error`.
    let servfails = read_replies(&sock, 5, ns.addr).await;
    assert!(servfails.iter().all(|rcode| *rcode == 2), "{servfails:?}");
    let s = scrape_when(ns, |s| latency(s, HOLE, "error") == 5.0).await;
    assert_eq!(s.get(retransmits, &[("proto", "udp")]), 3.0);
    assert_eq!(s.get(retransmits, &[("proto", "tcp")]), 0.0);
    assert_eq!(latency(&s, HOLE, "error"), 5.0);

    // Every reply was timed once, under one result.
    assert_eq!(s.sum(LATENCY, &[("result", "hit")]), 10.0);
    assert_eq!(s.sum(LATENCY, &[("result", "miss")]), 7.0);
    assert_eq!(s.sum(LATENCY, &[("result", "error")]), 5.0);
    assert_eq!(s.sum(LATENCY, &[("result", "stale")]), 0.0);
    let replies = s.sum("nodedns_responses_total", &[]);
    assert_eq!(s.sum(LATENCY, &[]), replies);
    m.ns.shutdown().await;
}

/// The rcodes of the first `n` replies to `sock` from `from`, within 5 s.
async fn read_replies(sock: &UdpSocket, n: usize, from: SocketAddr) -> Vec<u16> {
    let mut rcodes = Vec::new();
    let mut buf = [0u8; 512];
    while rcodes.len() < n {
        let read = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf));
        let (len, src) = read.await.expect("a reply within 5 s").unwrap();
        if src == from && len >= 4 {
            rcodes.push(u16::from(buf[3] & 0x0f));
        }
    }
    rcodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_on_a_fresh_entry_that_repeats_a_just_answered_query_is_a_retransmit() {
    let m = start().await;
    let ns = &m.ns;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // A miss, answered; the client's retry with the same ID crosses the answer and is a hit
    // on the entry the answer just stored.
    let q = QueryBuilder::new("a.example.test", RecordType::A)
        .id(7)
        .build();
    for _ in 0..2 {
        sock.send_to(&q, ns.addr).await.unwrap();
        assert_eq!(read_replies(&sock, 1, ns.addr).await, vec![0]);
    }
    // Another ID for the same name, right after: a new question, and a hit.
    let q = QueryBuilder::new("a.example.test", RecordType::A)
        .id(8)
        .build();
    sock.send_to(&q, ns.addr).await.unwrap();
    assert_eq!(read_replies(&sock, 1, ns.addr).await, vec![0]);
    let s = scrape_when(ns, |s| latency(s, ".", "hit") == 2.0).await;
    assert_eq!(latency(&s, ".", "hit"), 2.0);
    let retransmits = "nodedns_client_retransmits_total";
    assert_eq!(s.get(retransmits, &[("proto", "udp")]), 1.0);
    m.ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_retrying_over_a_new_tcp_connection_is_a_retransmit() {
    let m = start().await;
    let ns = &m.ns;
    // The same ID and question on a second connection while the first is unanswered (the
    // zone's upstream never answers): one retransmit. Both get SERVFAIL at the deadline.
    let q = QueryBuilder::new("y.hole.test", RecordType::A)
        .id(9)
        .build();
    let wait = Duration::from_secs(5);
    let first = client::exchange_tcp_raw_timeout(ns.addr, std::slice::from_ref(&q), wait);
    let second = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client::exchange_tcp_raw_timeout(ns.addr, std::slice::from_ref(&q), wait).await
    };
    let (first, second) = tokio::join!(first, second);
    for replies in [first.unwrap(), second.unwrap()] {
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0][3] & 0x0f, 2, "SERVFAIL");
    }
    let tcp_errors = [("zone", HOLE), ("proto", "tcp"), ("result", "error")];
    let s = scrape_when(ns, |s| s.get(LATENCY, &tcp_errors) == 2.0).await;
    assert_eq!(s.get(LATENCY, &tcp_errors), 2.0);
    let retransmits = "nodedns_client_retransmits_total";
    assert_eq!(s.get(retransmits, &[("proto", "tcp")]), 1.0);
    assert_eq!(s.get(retransmits, &[("proto", "udp")]), 0.0);
    m.ns.shutdown().await;
}
