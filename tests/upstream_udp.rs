//! The UDP side of forwarding as an upstream sees it: source ports and IDs (RFC 5452 §9),
//! and replies that come too late.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::join_all;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use nodedns::LANE_QUERIES;
use support::client;
use support::fake_upstream::{Behavior, FakeUpstream, Proto};
use support::nodedns::{Nodedns, config, zone};

#[tokio::test]
async fn source_ports_keep_changing_and_no_id_repeats_on_a_port() {
    let up = FakeUpstream::start().await;
    // One client asks every name: the per-client miss rate would refuse most.
    let toml = config(&zone(".", &[up.addr()], ""))
        .replace("workers = 1\n", "workers = 1\nclient_miss_rate = 0\n");
    let ns = Nodedns::start(&toml).await;
    // Enough misses that every socket of the pool is used up and replaced at least once.
    let batches = 5 * LANE_QUERIES as usize / 50 + 1;
    let total = batches * 50;
    for batch in 0..batches {
        let asks = (0..50).map(|i| {
            let name = format!("p{batch}-{i}.example.test");
            let addr = ns.addr;
            async move { client::query_udp(addr, &name, RecordType::A, None).await }
        });
        for r in join_all(asks).await {
            assert_eq!(r.unwrap().metadata.response_code, ResponseCode::NXDomain);
        }
    }
    let mut by_port: HashMap<u16, Vec<u16>> = HashMap::new();
    for seen in up.queries().iter().filter(|s| s.proto == Proto::Udp) {
        by_port.entry(seen.from.port()).or_default().push(seen.id);
    }
    assert_eq!(by_port.values().map(Vec::len).sum::<usize>(), total);
    assert!(
        by_port.len() >= 5,
        "{total} queries over only {} source ports",
        by_port.len()
    );
    for (port, ids) in &by_port {
        assert!(
            ids.len() <= LANE_QUERIES as usize,
            "port {port} carried {} queries",
            ids.len()
        );
        let distinct: HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "an ID was reused on port {port}");
    }
}

#[tokio::test]
async fn a_reply_after_the_deadline_is_dropped_without_a_spoof_alarm() {
    let up = FakeUpstream::start().await;
    up.add_a(
        "slow.example.test.",
        std::net::Ipv4Addr::new(198, 18, 0, 7),
        300,
    );
    let late = Duration::from_millis(600);
    up.set_behavior(Behavior::FailFirst(1, Box::new(Behavior::Delay(late))));
    let toml = config(&format!(
        "[forward]\ndeadline = \"200ms\"\nattempts = 1\n[cache]\nstale_max = \"0s\"\nservfail_ttl = \"0s\"\n{}",
        zone(".", &[up.addr()], "")
    ));
    let ns = Nodedns::start(&toml).await;
    let r = client::query_udp(ns.addr, "slow.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    // Let the delayed reply arrive at the socket the query left from.
    tokio::time::sleep(late).await;
    let again = client::query_udp(ns.addr, "slow.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(again.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ns.stats().spoof_mismatches.load(Ordering::Relaxed), 0);
}
