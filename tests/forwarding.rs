//! The forwarding core, end to end on loopback: nodedns in-process between a test client and
//! scripted fake upstreams.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use support::client::{self, QueryBuilder, answer_a};
use support::fake_upstream::{Behavior, FakeUpstream, POISON_A, Proto};
use support::nodedns::{Nodedns, config, zone};

const REGISTRY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

async fn upstream_with_registry() -> FakeUpstream {
    let up = FakeUpstream::start().await;
    up.add_a("registry.example.test.", REGISTRY, 300);
    up
}

#[tokio::test]
async fn forwards_over_udp_and_tcp() {
    let up = upstream_with_registry().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;

    let udp = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(udp.metadata.response_code, ResponseCode::NoError);
    assert_eq!(answer_a(&udp), vec![REGISTRY]);

    let tcp = client::query_tcp(ns.addr, "registry.example.test", RecordType::A)
        .await
        .unwrap();
    assert_eq!(answer_a(&tcp), vec![REGISTRY]);
}

#[tokio::test]
async fn client_gets_its_own_id_and_question_case_back() {
    let up = upstream_with_registry().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    for _ in 0..2 {
        // The second round is a cache hit: the patched copy must carry this client's case.
        let q = QueryBuilder::new("ReGiStRy.ExAmPlE.TeSt", RecordType::A).id(0xBEEF);
        let reply = client::send_udp(ns.addr, &q).await.unwrap();
        assert_eq!(reply.metadata.id, 0xBEEF);
        assert_eq!(reply.queries[0].name().to_ascii(), "ReGiStRy.ExAmPlE.TeSt.");
        assert_eq!(answer_a(&reply), vec![REGISTRY]);
    }
    // Upstream saw the lowercased name: one question form shared by every client.
    assert_eq!(up.queries()[0].name, "registry.example.test.");
}

#[tokio::test]
async fn routes_each_zone_to_its_own_upstreams() {
    let cluster = FakeUpstream::start().await;
    cluster.add_a(
        "kube-dns.kube-system.svc.cluster.local.",
        Ipv4Addr::new(198, 18, 0, 53),
        30,
    );
    let underlay = upstream_with_registry().await;
    let toml = config(&format!(
        "{}{}",
        zone("cluster.local", &[cluster.addr()], "transport = \"tcp\""),
        zone(".", &[underlay.addr()], "")
    ));
    let ns = Nodedns::start(&toml).await;

    let a = client::query_udp(
        ns.addr,
        "kube-dns.kube-system.svc.cluster.local",
        RecordType::A,
        None,
    )
    .await
    .unwrap();
    assert_eq!(answer_a(&a), vec![Ipv4Addr::new(198, 18, 0, 53)]);
    let b = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&b), vec![REGISTRY]);

    assert_eq!(
        cluster.queries_for("kube-dns.kube-system.svc.cluster.local."),
        1
    );
    assert_eq!(cluster.queries_for("registry.example.test."), 0);
    assert_eq!(underlay.queries_for("registry.example.test."), 1);
    assert_eq!(
        underlay.queries_for("kube-dns.kube-system.svc.cluster.local."),
        0
    );
    // transport = "tcp": the cluster zone never used UDP.
    assert_eq!(cluster.udp_queries(), 0);
    assert_eq!(cluster.tcp_queries(), 1);
}

#[tokio::test]
async fn tcp_zone_reuses_one_connection() {
    let up = FakeUpstream::start().await;
    for i in 0..5 {
        up.add_a(
            &format!("n{i}.cluster.local."),
            Ipv4Addr::new(198, 18, 0, i),
            30,
        );
    }
    let ns = Nodedns::forwarding_to(&[up.addr()], "transport = \"tcp\"").await;
    // The start-up probe opens the connection the queries then share.
    ns.probed().await;
    for i in 0..5 {
        let r = client::query_udp(ns.addr, &format!("n{i}.cluster.local"), RecordType::A, None)
            .await
            .unwrap();
        assert_eq!(answer_a(&r), vec![Ipv4Addr::new(198, 18, 0, i)]);
    }
    assert_eq!(up.tcp_queries(), 5);
    assert_eq!(
        up.tcp_connections(),
        1,
        "queries must share one upstream connection"
    );
}

#[tokio::test]
async fn truncated_upstream_reply_is_retried_over_tcp() {
    let up = upstream_with_registry().await;
    up.set_behavior(Behavior::TruncateUdp);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let r = client::query_udp(ns.addr, "registry.example.test", RecordType::A, Some(1232))
        .await
        .unwrap();
    assert!(
        !r.metadata.truncation,
        "a TC reply from upstream must never reach the client"
    );
    assert_eq!(answer_a(&r), vec![REGISTRY]);
    assert_eq!(up.udp_queries(), 1);
    assert_eq!(up.tcp_queries(), 1);
}

#[tokio::test]
async fn plain_dns_client_gets_tc_then_full_answer_over_tcp() {
    let up = FakeUpstream::start().await;
    up.add_many_a("big.example.test.", 40, 300);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;

    let q = QueryBuilder::new("big.example.test", RecordType::A);
    let raw = client::exchange_udp_raw(ns.addr, &q.build()).await.unwrap();
    assert!(
        raw.len() <= 512,
        "a client without EDNS gets at most 512 bytes"
    );
    let udp = Message::from_vec(&raw).unwrap();
    assert!(udp.metadata.truncation);
    let fitted = answer_a(&udp).len();
    assert!(
        fitted > 20 && fitted < 40,
        "whole records that fit, got {fitted}"
    );

    let tcp = client::send_tcp(ns.addr, &q).await.unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(answer_a(&tcp).len(), 40);

    // An EDNS client with room for it gets everything over UDP.
    let edns = client::query_udp(ns.addr, "big.example.test", RecordType::A, Some(1232))
        .await
        .unwrap();
    assert!(!edns.metadata.truncation);
    assert_eq!(answer_a(&edns).len(), 40);
}

#[tokio::test]
async fn spoofed_replies_are_ignored_and_the_genuine_answer_served() {
    for (i, spoof) in [
        Behavior::WrongIdFirst,
        Behavior::WrongQuestionFirst,
        Behavior::OtherSourceFirst,
    ]
    .into_iter()
    .enumerate()
    {
        let up = FakeUpstream::start().await;
        let name = format!("spoof{i}.example.test.");
        up.add_a(&name, REGISTRY, 300);
        up.set_behavior(spoof.clone());
        let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
        let r = client::query_udp(ns.addr, &name, RecordType::A, None)
            .await
            .unwrap();
        assert_eq!(answer_a(&r), vec![REGISTRY], "{spoof:?}");
        assert!(!answer_a(&r).contains(&POISON_A), "{spoof:?}");
        let mismatches = ns
            .stats()
            .spoof_mismatches
            .load(std::sync::atomic::Ordering::Relaxed);
        // A datagram from another source never reaches a connected socket; the others are
        // seen and counted.
        if spoof != Behavior::OtherSourceFirst {
            assert_eq!(mismatches, 1, "{spoof:?}");
        }
    }
}

/// A primary and a secondary upstream behaving as told, nodedns asking them in that order
/// with a 100 ms first attempt timeout, two attempts and a 3 s deadline, and how long a first query for the
/// registry took and what it got. The two are far apart, so a bound between them can have 5x
/// headroom on a busy machine.
async fn sequential_pair(
    primary: Behavior,
    secondary: Behavior,
) -> (FakeUpstream, FakeUpstream, Nodedns, Duration, Message) {
    let (p, s) = (
        upstream_with_registry().await,
        upstream_with_registry().await,
    );
    p.set_behavior(primary);
    s.set_behavior(secondary);
    let toml = config(&format!(
        "[forward]\nattempts = 2\ninitial_attempt_timeout = \"100ms\"\ndeadline = \"3s\"\n{}",
        zone(".", &[p.addr(), s.addr()], "policy = \"sequential\"")
    ));
    let ns = Nodedns::start(&toml).await;
    let started = Instant::now();
    let r = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    (p, s, ns, started.elapsed(), r)
}

#[tokio::test]
async fn failover_answers_from_secondary_within_one_attempt_timeout() {
    let (primary, secondary, ns, took, r) = sequential_pair(Behavior::Drop, Behavior::Answer).await;
    assert_eq!(answer_a(&r), vec![REGISTRY]);
    assert_eq!(primary.queries_for("registry.example.test."), 1);
    assert_eq!(secondary.queries_for("registry.example.test."), 1);
    // Moved on at the 100 ms attempt timeout, not at the 3 s deadline.
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_eq!(ns.stats().failovers.load(Relaxed), 1);
}

/// The attempt timeout moves on to the next upstream without giving up on the slow one: its
/// answer, arriving after the timeout, is served when nothing better comes.
#[tokio::test]
async fn a_slow_primary_still_answers_after_failover_to_a_silent_secondary() {
    let slow = Behavior::Delay(Duration::from_millis(300));
    let (primary, secondary, ns, took, r) = sequential_pair(slow, Behavior::Drop).await;
    assert_eq!(answer_a(&r), vec![REGISTRY]);
    assert_eq!(
        primary.queries_for("registry.example.test."),
        1,
        "asked once"
    );
    assert_eq!(
        secondary.queries_for("registry.example.test."),
        1,
        "failed over"
    );
    // The slow answer itself (an answer, not the deadline's SERVFAIL), after the secondary
    // was asked at the 100 ms attempt timeout.
    assert!(took >= Duration::from_millis(290), "took {took:?}");
    assert_eq!(ns.stats().failovers.load(Relaxed), 1);
    // Cached: the next client is answered without asking anyone.
    let r = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![REGISTRY]);
    assert_eq!(primary.queries_for("registry.example.test."), 1);
    assert_eq!(secondary.queries_for("registry.example.test."), 1);
    assert_eq!(
        ns.handler
            .stats()
            .inflight
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn down_primary_gets_no_queries_until_its_probe_succeeds() {
    let mut primary = FakeUpstream::start().await;
    let secondary = FakeUpstream::start().await;
    for i in 0..40 {
        primary.add_a(&format!("n{i}.example.test."), REGISTRY, 300);
        secondary.add_a(&format!("n{i}.example.test."), REGISTRY, 300);
    }
    primary.stop().await;
    let extra = "policy = \"sequential\"";
    let toml = config(&format!(
        "[forward]\ninitial_attempt_timeout = \"100ms\"\nprobe_interval = \"200ms\"\n{}",
        zone(".", &[primary.addr(), secondary.addr()], extra)
    ));
    let ns = Nodedns::start(&toml).await;
    // Three failures mark the primary down.
    for i in 0..3 {
        let r = client::query_udp(ns.addr, &format!("n{i}.example.test"), RecordType::A, None)
            .await
            .unwrap();
        assert_eq!(answer_a(&r), vec![REGISTRY]);
    }
    primary.resume().await;
    eprintln!(
        "direct: {:?}",
        client::query_udp(primary.addr(), "n1.example.test", RecordType::A, None)
            .await
            .map(|m| m.metadata.response_code)
    );
    primary.set_behavior(Behavior::Drop);
    primary.reset_counts();
    // Down: queries go straight to the secondary, without waiting for the primary's
    // timeout (counted: a wait would be a failover and a timeout charged to the primary).
    let failovers = ns.stats().failovers.load(Relaxed);
    for i in 3..8 {
        let r = client::query_udp(ns.addr, &format!("n{i}.example.test"), RecordType::A, None)
            .await
            .unwrap();
        assert_eq!(answer_a(&r), vec![REGISTRY]);
    }
    assert_eq!(ns.stats().failovers.load(Relaxed), failovers);
    let names: Vec<String> = primary.queries().into_iter().map(|s| s.name).collect();
    assert!(
        names.is_empty(),
        "only probes may reach a down upstream, saw {names:?}"
    );
    // Once the primary answers its probe, it is first again.
    primary.set_behavior(Behavior::Answer);
    let mut back = false;
    for i in 8..40 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let name = format!("n{i}.example.test");
        client::query_udp(ns.addr, &name, RecordType::A, None)
            .await
            .unwrap();
        if primary.queries_for(&format!("{name}.")) == 1 {
            back = true;
            break;
        }
    }
    assert!(
        back,
        "the primary never came back after answering its probe ({} probes)",
        primary.probes()
    );
}

#[tokio::test]
async fn all_upstreams_down_gives_servfail_within_the_deadline() {
    let mut a = FakeUpstream::start().await;
    let b = FakeUpstream::start().await;
    a.stop().await;
    b.set_behavior(Behavior::Drop);
    let toml = config(&format!(
        "[forward]\ndeadline = \"400ms\"\ninitial_attempt_timeout = \"100ms\"\n\
         [cache]\nstale_max = \"0s\"\n{}",
        zone(".", &[a.addr(), b.addr()], "")
    ));
    let ns = Nodedns::start(&toml).await;
    let started = Instant::now();
    let r = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // The 400 ms deadline, with 5x headroom for a busy machine.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn refused_upstream_fails_over_and_servfail_is_retried_once() {
    let refusing = upstream_with_registry().await;
    refusing.set_behavior(Behavior::Rcode(ResponseCode::Refused));
    let good = upstream_with_registry().await;
    let ns = Nodedns::forwarding_to(&[refusing.addr(), good.addr()], "").await;
    let r = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![REGISTRY]);

    let failing = upstream_with_registry().await;
    failing.set_behavior(Behavior::Rcode(ResponseCode::ServFail));
    let good2 = upstream_with_registry().await;
    let ns2 = Nodedns::forwarding_to(&[failing.addr(), good2.addr()], "").await;
    let r = client::query_udp(ns2.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![REGISTRY]);
    assert_eq!(failing.queries_for("registry.example.test."), 1);
}

#[tokio::test]
async fn tcp_clients_get_pipelined_answers_out_of_order() {
    let up = FakeUpstream::start().await;
    up.add_a("slow.example.test.", Ipv4Addr::new(198, 18, 0, 1), 300);
    up.add_a("fast.example.test.", Ipv4Addr::new(198, 18, 0, 2), 300);
    up.set_behavior_for(
        "slow.example.test.",
        Behavior::Delay(Duration::from_millis(300)),
    );
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let slow = QueryBuilder::new("slow.example.test", RecordType::A)
        .id(1)
        .build();
    let fast = QueryBuilder::new("fast.example.test", RecordType::A)
        .id(2)
        .build();
    let replies = client::exchange_tcp_raw(ns.addr, &[slow, fast])
        .await
        .unwrap();
    let ids: Vec<u16> = replies
        .iter()
        .map(|r| Message::from_vec(r).unwrap().metadata.id)
        .collect();
    assert_eq!(
        ids,
        vec![2, 1],
        "the fast answer must not wait behind the slow one"
    );
}

#[tokio::test]
async fn upstream_sees_our_own_opt_not_the_clients_cookie() {
    let up = upstream_with_registry().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let q = QueryBuilder::new("registry.example.test", RecordType::A)
        .edns(4096)
        .cookie();
    client::send_udp(ns.addr, &q).await.unwrap();
    let seen = &up.queries()[0];
    assert!(seen.had_opt);
    assert_eq!(seen.opt_payload, Some(1232));
    assert!(!seen.had_cookie, "client cookies are never forwarded");
    assert_eq!(seen.proto, Proto::Udp);
}

/// Asks `count` distinct names so that every query is a miss.
async fn ask_distinct(ns: &Nodedns, prefix: &str, count: usize) {
    for i in 0..count {
        let r = client::query_udp(
            ns.addr,
            &format!("{prefix}{i}.example.test"),
            RecordType::A,
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
}

#[tokio::test]
async fn round_robin_and_random_spread_misses_over_upstreams() {
    for policy in ["round_robin", "random"] {
        let a = FakeUpstream::start().await;
        let b = FakeUpstream::start().await;
        let extra = format!("policy = \"{policy}\"");
        let ns = Nodedns::forwarding_to(&[a.addr(), b.addr()], &extra).await;
        ask_distinct(&ns, "spread", 20).await;
        let (na, nb) = (a.udp_queries(), b.udp_queries());
        assert_eq!(na + nb, 20, "{policy}");
        if policy == "round_robin" {
            assert_eq!((na, nb), (10, 10), "{policy}");
        } else {
            // All 20 on one side has a probability of 2 in a million.
            assert!(na > 0 && nb > 0, "{policy}: {na}/{nb}");
        }
    }
}

#[tokio::test]
async fn fastest_policy_prefers_the_upstream_with_the_lowest_rtt() {
    let slow = FakeUpstream::start().await;
    slow.set_behavior(Behavior::Delay(Duration::from_millis(40)));
    let fast = FakeUpstream::start().await;
    let toml = config(&format!(
        "[forward]\nmin_attempt_timeout = \"500ms\"\n{}",
        zone(".", &[slow.addr(), fast.addr()], "policy = \"fastest\"")
    ));
    let ns = Nodedns::start(&toml).await;
    // Both get measured first (an upstream with no RTT yet is tried before known ones).
    ask_distinct(&ns, "warm", 2).await;
    slow.reset_counts();
    fast.reset_counts();
    ask_distinct(&ns, "fast", 10).await;
    assert_eq!(fast.udp_queries(), 10);
    assert_eq!(slow.udp_queries(), 0);
}

#[tokio::test]
async fn serves_ipv6_clients_and_forwards_to_ipv6_upstreams() {
    let up = FakeUpstream::start_on("::1".parse().unwrap()).await;
    up.add_a("registry.example.test.", REGISTRY, 300);
    let toml = config(&zone(".", &[up.addr()], "")).replace("127.0.0.1:0", "[::1]:0");
    let ns = Nodedns::start(&toml).await;
    assert!(ns.addr.is_ipv6());
    let udp = client::query_udp(ns.addr, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&udp), vec![REGISTRY]);
    let tcp = client::query_tcp(ns.addr, "registry.example.test", RecordType::A)
        .await
        .unwrap();
    assert_eq!(answer_a(&tcp), vec![REGISTRY]);
}
