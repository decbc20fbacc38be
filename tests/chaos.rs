//! CHAOS identity queries on loopback: nodedns says what it is (`version.bind`) and where it
//! runs (`id.server`) itself, over UDP and TCP, and forwards no CHAOS query upstream.
#![allow(clippy::unwrap_used)]

mod support;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use support::client::{exchange_tcp_raw, exchange_udp_raw};
use support::fake_upstream::FakeUpstream;
use support::nodedns::Nodedns;

fn chaos_query(name: &str, qtype: RecordType, edns: bool) -> Message {
    let mut message = Message::new(0x5EED, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    let mut query = Query::query(Name::from_ascii(name).unwrap(), qtype);
    query.set_query_class(DNSClass::CH);
    message.add_query(query);
    if edns {
        message.set_edns(Edns::new());
    }
    message
}

fn txt(reply: &Message) -> String {
    match &reply.answers[0].data {
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
        other => panic!("not TXT: {other:?}"),
    }
}

async fn udp(ns: &Nodedns, query: &Message) -> Message {
    let raw = exchange_udp_raw(ns.addr, &query.to_vec().unwrap())
        .await
        .expect("no UDP reply");
    Message::from_vec(&raw).unwrap()
}

#[tokio::test]
async fn version_bind_says_nodedns_over_udp_and_tcp() {
    let up = FakeUpstream::start().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let query = chaos_query("version.bind.", RecordType::TXT, false);

    let reply = udp(&ns, &query).await;
    assert_eq!(reply.metadata.id, 0x5EED);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    // One header rule for every reply: a cache is no authority, even for its own name.
    assert!(!reply.metadata.authoritative, "AA must be clear");
    assert!(reply.metadata.recursion_available && reply.metadata.recursion_desired);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].dns_class, DNSClass::CH);
    assert_eq!(
        reply.answers[0].ttl, 0,
        "identity answers must not be cached"
    );
    let expected = format!("nodedns {}", env!("CARGO_PKG_VERSION"));
    assert_eq!(txt(&reply), expected);
    assert!(reply.edns.is_none(), "no OPT when the client sent none");

    let raw = exchange_tcp_raw(ns.addr, &[query.to_vec().unwrap()])
        .await
        .unwrap();
    let over_tcp = Message::from_vec(&raw[0]).unwrap();
    assert_eq!(txt(&over_tcp), expected);
    assert_eq!(
        up.udp_queries() + up.tcp_queries(),
        0,
        "CHAOS went upstream"
    );
}

#[tokio::test]
async fn id_server_names_the_host_and_echoes_the_clients_opt() {
    let up = FakeUpstream::start().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let reply = udp(&ns, &chaos_query("ID.Server.", RecordType::TXT, true)).await;
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(txt(&reply), hostname.trim());
    // The client's question case comes back as sent.
    assert_eq!(reply.queries[0].name().to_ascii(), "ID.Server.");
    assert!(
        reply.edns.is_some(),
        "the client's OPT must be answered with one"
    );
}

#[tokio::test]
async fn other_chaos_queries_are_refused_and_not_forwarded() {
    let up = FakeUpstream::start().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    for (name, qtype) in [
        ("authors.bind.", RecordType::TXT),
        ("version.bind.", RecordType::A),
        ("example.test.", RecordType::TXT),
    ] {
        let reply = udp(&ns, &chaos_query(name, qtype, false)).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::Refused,
            "{name} {qtype}"
        );
        assert!(reply.answers.is_empty());
    }
    assert_eq!(
        up.udp_queries() + up.tcp_queries(),
        0,
        "CHAOS went upstream"
    );
}
