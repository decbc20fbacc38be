//! The cache, end to end on loopback with tokio's paused clock: what a client sees on hits,
//! negative and SERVFAIL caching, serve-stale, prefetch and coalescing.
//!
//! Time only moves by `tokio::time::advance` (or by auto-advance when every task waits on a
//! timer), so TTL arithmetic is exact and nothing sleeps for real.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nodedns::{HitType, Hot};
use support::client::{self, QueryBuilder, answer_a, answer_ttls};
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config, zone};
use tokio::time::{Instant, advance};

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

async fn setup(ttl: u32, extra_config: &str) -> (FakeUpstream, Nodedns) {
    let up = FakeUpstream::start().await;
    up.add_a("registry.example.test.", ADDR, ttl);
    let ns = Nodedns::start(&config(&format!(
        "{extra_config}\n{}",
        zone(".", &[up.addr()], "")
    )))
    .await;
    (up, ns)
}

async fn a(ns: &Nodedns, name: &str) -> Message {
    client::query_udp(ns.addr, name, RecordType::A, None)
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn hit_is_served_without_upstream_with_ttl_aged() {
    let (up, ns) = setup(300, "").await;
    let first = a(&ns, "registry.example.test").await;
    assert_eq!(answer_ttls(&first), vec![300]);
    advance(Duration::from_secs(100)).await;
    let q = QueryBuilder::new("REGISTRY.example.TEST", RecordType::A).id(7);
    let hit = client::send_udp(ns.addr, &q).await.unwrap();
    assert_eq!(hit.metadata.id, 7);
    assert_eq!(hit.queries[0].name().to_ascii(), "REGISTRY.example.TEST.");
    assert_eq!(answer_a(&hit), vec![ADDR]);
    assert_eq!(answer_ttls(&hit), vec![200]);
    assert_eq!(up.udp_queries(), 1);
    assert_eq!(ns.stats().cache_hits(HitType::Success), 1);
    assert_eq!(ns.stats().cache_misses(), 1);
}

#[tokio::test(start_paused = true)]
async fn queries_with_a_new_cookie_each_time_still_hit() {
    let (up, ns) = setup(300, "").await;
    for _ in 0..3 {
        // dig sends a fresh client cookie per query; the key must ignore it.
        let q = QueryBuilder::new("registry.example.test", RecordType::A).cookie();
        let r = client::send_udp(ns.addr, &q).await.unwrap();
        assert_eq!(answer_a(&r), vec![ADDR]);
        assert!(r.edns.is_some(), "an EDNS client gets an OPT back");
    }
    assert_eq!(up.udp_queries(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_ttl_clamps_what_clients_see_and_how_long_it_is_cached() {
    let (up, ns) = setup(3600, "[cache]\nmax_ttl = \"60s\"").await;
    assert_eq!(
        answer_ttls(&a(&ns, "registry.example.test").await),
        vec![60]
    );
    advance(Duration::from_secs(59)).await;
    assert_eq!(answer_ttls(&a(&ns, "registry.example.test").await), vec![1]);
    assert_eq!(up.udp_queries(), 1);
    advance(Duration::from_secs(2)).await;
    a(&ns, "registry.example.test").await;
    assert_eq!(up.udp_queries(), 2, "expired after the clamped TTL");
}

#[tokio::test(start_paused = true)]
async fn nxdomain_and_nodata_are_cached_for_the_soa_derived_time() {
    let (up, ns) = setup(300, "").await;
    // SOA TTL 60, MINIMUM 20: negative TTL is min(60, 20) = 20 (RFC 2308 §5).
    up.set_soa(60, 20);
    for (name, qtype, rcode) in [
        (
            "missing.example.test",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        (
            "registry.example.test",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
    ] {
        let ask = || client::query_udp(ns.addr, name, qtype, None);
        let r = ask().await.unwrap();
        assert_eq!(r.metadata.response_code, rcode, "{name}");
        assert!(r.answers.is_empty());
        let before = up.queries_for(&format!("{name}."));
        advance(Duration::from_secs(19)).await;
        let r = ask().await.unwrap();
        assert_eq!(r.metadata.response_code, rcode, "{name}");
        assert_eq!(
            up.queries_for(&format!("{name}.")),
            before,
            "{name}: cached for 20 s"
        );
        assert!(
            r.authorities.iter().all(|rr| rr.ttl <= 1),
            "{name}: SOA TTL aged"
        );
        advance(Duration::from_secs(2)).await;
        ask().await.unwrap();
        assert_eq!(
            up.queries_for(&format!("{name}.")),
            before + 1,
            "{name}: expired"
        );
    }
    assert_eq!(ns.stats().cache_hits(HitType::Denial), 2);
}

#[tokio::test(start_paused = true)]
async fn negative_answer_without_soa_is_not_cached() {
    let (up, ns) = setup(300, "").await;
    up.set_negative_soa(false);
    for _ in 0..2 {
        let r = a(&ns, "missing.example.test").await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    assert_eq!(up.queries_for("missing.example.test."), 2);
}

#[tokio::test(start_paused = true)]
async fn servfail_is_cached_for_servfail_ttl() {
    let (up, ns) = setup(300, "[cache]\nservfail_ttl = \"5s\"\nstale_max = \"0s\"").await;
    up.set_behavior(Behavior::Rcode(ResponseCode::ServFail));
    let r = a(&ns, "registry.example.test").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let asked = up.udp_queries();
    advance(Duration::from_secs(4)).await;
    let r = a(&ns, "registry.example.test").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(up.udp_queries(), asked, "SERVFAIL served from cache");
    advance(Duration::from_secs(2)).await;
    up.set_behavior(Behavior::Answer);
    assert_eq!(answer_a(&a(&ns, "registry.example.test").await), vec![ADDR]);
}

#[tokio::test(start_paused = true)]
async fn truncated_copies_are_never_cached() {
    let up = FakeUpstream::start().await;
    up.add_many_a("big.example.test.", 40, 300);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    // A plain-DNS client gets a truncated copy...
    let small = a(&ns, "big.example.test").await;
    assert!(small.metadata.truncation);
    // ...but what was cached is the full answer: an EDNS client gets all 40, from cache.
    let full = client::query_udp(ns.addr, "big.example.test", RecordType::A, Some(1232))
        .await
        .unwrap();
    assert!(!full.metadata.truncation);
    assert_eq!(answer_a(&full).len(), 40);
    assert_eq!(
        up.udp_queries() + up.tcp_queries(),
        1,
        "the EDNS client was served from cache"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_answer_is_served_when_upstream_stops_answering() {
    let (up, ns) = setup(
        60,
        "[cache]\nstale_max = \"1h\"\nstale_client_timeout = \"1800ms\"",
    )
    .await;
    a(&ns, "registry.example.test").await;
    up.set_behavior(Behavior::Drop);
    advance(Duration::from_secs(61)).await;
    let started = Instant::now();
    let r = a(&ns, "registry.example.test").await;
    let waited = started.elapsed();
    assert_eq!(answer_a(&r), vec![ADDR]);
    assert_eq!(
        answer_ttls(&r),
        vec![30],
        "stale answers carry TTL 30 (RFC 8767)"
    );
    assert!(waited <= Duration::from_millis(1900), "waited {waited:?}");
    assert_eq!(ns.stats().cache_hits(HitType::Stale), 1);
}

#[tokio::test(start_paused = true)]
async fn past_stale_max_the_answer_is_servfail() {
    let (mut up, ns) = setup(60, "[cache]\nstale_max = \"10m\"").await;
    a(&ns, "registry.example.test").await;
    up.stop().await;
    advance(Duration::from_secs(60 + 600 + 1)).await;
    let r = a(&ns, "registry.example.test").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test(start_paused = true)]
async fn stale_entry_is_refreshed_in_the_background() {
    // Attempt timeouts above the upstream's delay, so that exactly one query is sent.
    let (up, ns) = setup(
        60,
        "[cache]\nstale_client_timeout = \"100ms\"\n\
         [forward]\nmin_attempt_timeout = \"1s\"\ninitial_attempt_timeout = \"1s\"",
    )
    .await;
    a(&ns, "registry.example.test").await;
    advance(Duration::from_secs(61)).await;
    // The upstream is slower than the stale timer: the client gets stale, the cache still
    // gets the fresh answer when it lands.
    up.set_behavior(Behavior::Delay(Duration::from_millis(300)));
    let stale = a(&ns, "registry.example.test").await;
    assert_eq!(answer_ttls(&stale), vec![30]);
    advance(Duration::from_millis(400)).await;
    let fresh = a(&ns, "registry.example.test").await;
    assert_eq!(answer_ttls(&fresh), vec![60]);
    assert_eq!(up.udp_queries(), 2);
}

#[tokio::test(start_paused = true)]
async fn hot_name_is_prefetched_and_never_misses() {
    let (up, ns) = setup(100, "").await;
    a(&ns, "registry.example.test").await;
    a(&ns, "registry.example.test").await;
    assert_eq!(up.udp_queries(), 1);
    // 91 s in, 9 s (<= 10%) are left: this hit triggers one background refresh.
    advance(Duration::from_secs(91)).await;
    a(&ns, "registry.example.test").await;
    a(&ns, "registry.example.test").await;
    tokio::task::yield_now().await;
    advance(Duration::from_millis(10)).await;
    assert_eq!(up.udp_queries(), 2, "exactly one prefetch");
    assert_eq!(ns.stats().get(Hot::Prefetches), 1);
    // Past the original expiry the refreshed entry answers: no miss.
    advance(Duration::from_secs(20)).await;
    let r = a(&ns, "registry.example.test").await;
    assert_eq!(answer_a(&r), vec![ADDR]);
    assert_eq!(ns.stats().cache_misses(), 1);
    assert_eq!(up.udp_queries(), 2);
}

#[tokio::test(start_paused = true)]
async fn identical_concurrent_misses_share_one_upstream_query() {
    let (up, ns) = setup(300, "").await;
    up.set_behavior(Behavior::Delay(Duration::from_millis(200)));
    let mut tasks = Vec::new();
    for i in 0..100u16 {
        let q = QueryBuilder::new("registry.example.test", RecordType::A)
            .id(i)
            .random_case();
        let addr = ns.addr;
        tasks.push(tokio::spawn(async move {
            let r = client::send_udp(addr, &q).await.unwrap();
            (i, q.name().to_ascii(), r)
        }));
    }
    for t in tasks {
        let (id, name, r) = t.await.unwrap();
        assert_eq!(r.metadata.id, id);
        assert_eq!(
            r.queries[0].name().to_ascii(),
            name,
            "each waiter keeps its own case"
        );
        assert_eq!(answer_a(&r), vec![ADDR]);
    }
    assert_eq!(up.udp_queries(), 1);
    assert_eq!(ns.stats().get(Hot::Coalesced), 99);
}
