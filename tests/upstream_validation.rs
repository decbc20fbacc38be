//! Hostile upstream answers, end to end: a malformed answer is never cached or served (the
//! client gets SERVFAIL, or the next upstream's valid answer), records off the question's
//! chain or outside the zone never reach a client or the cache, and an upstream's long
//! Extended DNS Error never pushes a reply past the client's size limit.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::client::{self, QueryBuilder, answer_a};
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config_with_admin, zone};
use support::scrape::{Scrape, get};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Udp,
    Tcp,
}

/// Wire form of a dotted (lowercase) name.
fn wire(dotted: &str) -> Vec<u8> {
    nodedns::name_to_wire(dotted).unwrap()
}

/// A scripted answer to `qname A`: header (QR, RD, RA; the counts given), the question, and
/// `body`. Returns the bytes and the offset where `body` starts.
fn script(qname: &str, counts: [u16; 3], body: &[&[u8]]) -> (Vec<u8>, usize) {
    let mut m = vec![0, 0, 0x81, 0x80, 0, 1];
    for c in counts {
        m.extend_from_slice(&c.to_be_bytes());
    }
    m.extend_from_slice(&wire(qname));
    m.extend_from_slice(&[0, 1, 0, 1]);
    let first = m.len();
    for part in body {
        m.extend_from_slice(part);
    }
    (m, first)
}

fn rr(owner: &[u8], rtype: u16, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, 0, 0x0e, 0x10]);
    r.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// An A record for the question's name (compressed to it).
fn a_at_qname(last: u8) -> Vec<u8> {
    rr(&[0xC0, 12], 1, &[192, 0, 2, last])
}

/// An OPT with one Extended DNS Error (RFC 8914): info code 22, `text_len` bytes of text.
fn opt_with_ede(text_len: usize) -> Vec<u8> {
    let mut ede = vec![0, 15];
    ede.extend_from_slice(&u16::try_from(text_len + 2).unwrap().to_be_bytes());
    ede.extend_from_slice(&[0, 22]);
    ede.extend(std::iter::repeat_n(b'x', text_len));
    let mut opt = vec![0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0];
    opt.extend_from_slice(&u16::try_from(ede.len()).unwrap().to_be_bytes());
    opt.extend_from_slice(&ede);
    opt
}

/// The malformed answers, each scripted for its own name under `test.`.
fn malformed_cases() -> Vec<(String, Vec<u8>)> {
    // Names of the same length, so every script's first record starts at the same offset.
    let first = 12 + wire("m00.test").len() + 4;
    let first = u8::try_from(first).unwrap();
    let long = format!(
        "{}.{}.{}.test",
        "a".repeat(61),
        "b".repeat(61),
        "c".repeat(61)
    );
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |qname: &str, counts: [u16; 3], body: &[&[u8]]| {
        cases.push((qname.to_string(), script(qname, counts, body).0));
    };
    let a = |owner: &[u8]| rr(owner, 1, &[192, 0, 2, 66]);
    add("m01.test", [1, 0, 0], &[&a(&[0xC0, first])]);
    add("m02.test", [1, 0, 0], &[&a(&[0xFF, 0xFF])]);
    add("m03.test", [1, 0, 0], &[&a(&[0xC0, first + 12])]);
    add("m04.test", [1, 0, 0], &[&a(&[0xC0, 13])]);
    add("m05.test", [1, 0, 0], &[&a(&[0x40, 0])]);
    add("m06.test", [1, 0, 0], &[&a(&[0x80, 0])]);
    add("m07.test", [1, 0, 0], &[&rr(&[0xC0, 12], 5, &[0xC3, 0xFF])]);
    add(
        "m08.test",
        [1, 0, 0],
        &[&rr(&[0xC0, 12], 28, &[192, 0, 2, 66])],
    );
    add("m09.test", [1, 0, 0], &[&rr(&[0xC0, 12], 35, &[0])]);
    add("m10.test", [2, 0, 0], &[&a(&[0xC0, 12])]);
    add("m11.test", [1, 0, 0], &[&a(&[0xC0, 12]), &a(&[0xC0, 12])]);
    // A 64-byte label (63 characters) before a pointer to a 192-byte qname: 256 bytes.
    let over = [&[63u8][..], &[b'x'; 63], &[0xC0, 12]].concat();
    add(&long, [1, 0, 0], &[&a(&over)]);
    cases
}

async fn ask(ns: SocketAddr, name: &str, via: Via) -> anyhow::Result<Message> {
    let q = QueryBuilder::new(name, RecordType::A).edns(1232);
    match via {
        Via::Udp => client::send_udp(ns, &q).await,
        Via::Tcp => client::send_tcp(ns, &q).await,
    }
}

async fn scrape(ns: &Nodedns) -> Scrape {
    Scrape::parse(&get(ns.admin.unwrap(), "/metrics").await.1)
}

#[tokio::test]
async fn malformed_answers_get_servfail_and_are_never_cached() {
    let up = FakeUpstream::start().await;
    let cases = malformed_cases();
    for (name, bytes) in &cases {
        up.set_behavior_for(name, Behavior::Raw(bytes.clone()));
    }
    // Upstream over UDP and over TCP; clients over UDP and over TCP.
    for (transport, label) in [
        ("udp", up.addr().to_string()),
        ("tcp", format!("tcp://{}", up.addr())),
    ] {
        let extra = format!("transport = \"{transport}\"");
        let ns = Nodedns::start(&config_with_admin(&zone("test.", &[up.addr()], &extra))).await;
        let mut served = Vec::new();
        for via in [Via::Udp, Via::Tcp] {
            for (name, _) in &cases {
                for round in 0..2 {
                    match ask(ns.addr, name, via).await {
                        Ok(m) if m.metadata.response_code == ResponseCode::ServFail => {}
                        other => served.push(format!(
                            "{name} upstream {transport} client {via:?} round {round}: {other:?}"
                        )),
                    }
                }
            }
        }
        assert!(
            served.is_empty(),
            "malformed answers served:\n{}",
            served.join("\n")
        );
        let s = scrape(&ns).await;
        let malformed = s.get("nodedns_upstream_malformed_total", &[("upstream", &label)]);
        // Every case, from both kinds of client, twice: each ask reached the upstream.
        assert!(malformed >= (cases.len() * 4) as f64, "counted {malformed}");
        assert_eq!(s.get("nodedns_upstream_up", &[("upstream", &label)]), 1.0);
    }
}

#[tokio::test]
async fn a_valid_answer_from_the_next_upstream_wins_and_is_cached() {
    let bad = FakeUpstream::start().await;
    let good = FakeUpstream::start().await;
    let cases = malformed_cases();
    for (name, bytes) in &cases {
        bad.set_behavior_for(name, Behavior::Raw(bytes.clone()));
        good.add_a(name, Ipv4Addr::new(198, 18, 0, 7), 300);
    }
    let zones = zone(
        "test.",
        &[bad.addr(), good.addr()],
        "policy = \"sequential\"",
    );
    let ns = Nodedns::start(&config_with_admin(&zones)).await;
    ns.probed().await;
    let mut wrong = Vec::new();
    for (i, (name, _)) in cases.iter().enumerate() {
        let via = if i % 2 == 0 { Via::Udp } else { Via::Tcp };
        let first = ask(ns.addr, name, via).await;
        let asked = good.queries_for(name);
        let second = ask(ns.addr, name, via).await;
        for (round, reply) in [(0, first), (1, second)] {
            match reply {
                Ok(m) if answer_a(&m) == vec![Ipv4Addr::new(198, 18, 0, 7)] => {}
                other => wrong.push(format!("{name} {via:?} round {round}: {other:?}")),
            }
        }
        if good.queries_for(name) != asked {
            wrong.push(format!("{name}: the second ask was not a cache hit"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let s = scrape(&ns).await;
    let label = bad.addr().to_string();
    let malformed = s.get("nodedns_upstream_malformed_total", &[("upstream", &label)]);
    assert!(malformed >= cases.len() as f64, "counted {malformed}");
    assert_eq!(s.get("nodedns_upstream_up", &[("upstream", &label)]), 1.0);
}

#[tokio::test]
async fn records_off_the_chain_or_outside_the_zone_are_dropped() {
    let up = FakeUpstream::start().await;
    let qname = "www.svc.test";
    let evil = wire("evil.example");
    let (bytes, _) = script(
        qname,
        [2, 1, 1],
        &[
            &a_at_qname(1),
            &rr(&evil, 1, &[192, 0, 2, 66]),
            &rr(&wire("example"), 2, &wire("ns.evil.example")),
            &rr(&wire("ns.evil.example"), 1, &[192, 0, 2, 67]),
        ],
    );
    up.set_behavior_for(qname, Behavior::Raw(bytes));
    let ns = Nodedns::start(&config_with_admin(&zone("test.", &[up.addr()], ""))).await;
    for via in [Via::Udp, Via::Tcp] {
        let m = ask(ns.addr, qname, via).await.unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(answer_a(&m), vec![Ipv4Addr::new(192, 0, 2, 1)], "{via:?}");
        let names: Vec<String> = m
            .answers
            .iter()
            .chain(&m.authorities)
            .chain(&m.additionals)
            .map(|r| r.name.to_ascii())
            .collect();
        assert!(
            names.iter().all(|n| n == "www.svc.test."),
            "{via:?}: {names:?}"
        );
    }
    assert_eq!(up.queries_for(qname), 1, "the second ask is a cache hit");
    let label = up.addr().to_string();
    let s = scrape(&ns).await;
    assert_eq!(
        s.get(
            "nodedns_upstream_dropped_records_total",
            &[("upstream", &label)]
        ),
        3.0
    );
}

/// The EDE texts of a reply.
fn ede_len(m: &Message) -> usize {
    m.edns.as_ref().map_or(0, |e| {
        e.options()
            .options
            .iter()
            .filter(|(code, _)| u16::from(*code) == 15)
            .count()
    })
}

#[tokio::test]
async fn a_long_extended_dns_error_never_exceeds_the_client_size() {
    let up = FakeUpstream::start().await;
    // 3,000 bytes of EDE on an answer of three records (over UDP the fake answers TC=1, so
    // nodedns fetches it over TCP), and 1,100 bytes on an ordinary answer over UDP.
    let answers = [a_at_qname(1), a_at_qname(2), a_at_qname(3)];
    for (name, text) in [("big-ede.test", 3000usize), ("mid-ede.test", 1100)] {
        let (bytes, _) = script(
            name,
            [3, 0, 1],
            &[&answers[0], &answers[1], &answers[2], &opt_with_ede(text)],
        );
        up.set_behavior_for(name, Behavior::Raw(bytes));
    }
    let ns = Nodedns::start(&config_with_admin(&zone("test.", &[up.addr()], ""))).await;
    for name in ["big-ede.test", "mid-ede.test"] {
        for edns in [Some(512u16), Some(1232), None] {
            let mut q = QueryBuilder::new(name, RecordType::A);
            if let Some(payload) = edns {
                q = q.edns(payload);
            }
            let raw = client::exchange_udp_raw(ns.addr, &q.message().to_vec().unwrap())
                .await
                .unwrap();
            let limit = usize::from(edns.unwrap_or(512));
            assert!(raw.len() <= limit, "{name} {edns:?}: {} bytes", raw.len());
            let m = Message::from_vec(&raw).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(!m.metadata.truncation, "{name} {edns:?}");
            assert_eq!(m.answers.len(), 3, "{name} {edns:?}: answers intact");
            assert!(
                m.answers.iter().all(|r| matches!(r.data, RData::A(_))),
                "{name}"
            );
        }
        // Over TCP the whole EDE fits and is kept.
        let m = ask(ns.addr, name, Via::Tcp).await.unwrap();
        assert_eq!(ede_len(&m), 1, "{name} over TCP keeps its EDE");
    }
}
