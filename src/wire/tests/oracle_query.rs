//! Property tests of the query side with hickory-proto as the oracle: random valid queries
//! emitted by hickory, parsed here, and what we build decoded by hickory again.

use super::strategy::*;
use super::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as HQuery};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use proptest::prelude::*;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
struct QueryCase {
    id: u16,
    name: Name,
    qtype: RecordType,
    qclass: DNSClass,
    rd: bool,
    cd: bool,
    edns: Option<Edns>,
    additionals: Vec<Record>,
}

fn query_case() -> impl Strategy<Value = QueryCase> {
    let classes = prop::sample::select(vec![DNSClass::IN, DNSClass::CH]);
    (
        any::<u16>(),
        domain(),
        qtype(),
        classes,
        any::<bool>(),
        any::<bool>(),
        prop::option::of(edns()),
        prop::collection::vec(record(), 0..3),
    )
        .prop_map(
            |(id, name, qtype, qclass, rd, cd, edns, additionals)| QueryCase {
                id,
                name,
                qtype,
                qclass,
                rd,
                cd,
                edns,
                additionals,
            },
        )
}

fn emit_query(c: &QueryCase) -> Vec<u8> {
    let mut m = Message::new(c.id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = c.rd;
    m.metadata.checking_disabled = c.cd;
    let mut q = HQuery::query(c.name.clone(), c.qtype);
    q.set_query_class(c.qclass);
    m.add_query(q);
    m.additionals = c.additionals.clone();
    m.edns = c.edns.clone();
    m.to_vec().unwrap()
}

proptest! {
    #[test]
    fn parse_query_agrees_with_hickory(c in query_case()) {
        let bytes = emit_query(&c);
        let theirs = Message::from_vec(&bytes).unwrap();
        let ours = parse_query(&bytes).unwrap();
        prop_assert_eq!(ours.qname(), &lower_wire(&theirs.queries[0].name)[..]);
        prop_assert_eq!(ours.qname_text(), theirs.queries[0].name.to_lowercase().to_ascii());
        prop_assert_eq!(ours.qtype, u16::from(theirs.queries[0].query_type));
        prop_assert_eq!(ours.qclass, u16::from(theirs.queries[0].query_class));
        prop_assert_eq!(ours.question, &theirs.queries[0].to_bytes().unwrap()[..]);
        prop_assert_eq!((ours.header.rd(), ours.header.cd()), (c.rd, c.cd));
        let size_do = ours.edns.map(|e| (e.udp_size.max(512), e.dnssec_ok, e.version));
        let expected = theirs.edns.as_ref().map(|e| (e.max_payload(), e.flags().dnssec_ok, e.version()));
        prop_assert_eq!(size_do, expected);
    }

    #[test]
    fn upstream_query_round_trips_and_the_reply_check_ignores_case(c in query_case(), id in any::<u16>(), mask in prop::collection::vec(any::<bool>(), 1..8)) {
        let bytes = emit_query(&c);
        let query = parse_query(&bytes).unwrap();
        let mut sent = Vec::new();
        let qend = build_upstream_query(&query, id, &mut sent);
        let parsed = Message::from_vec(&sent).unwrap();
        prop_assert_eq!(parsed.metadata.id, id);
        prop_assert!(parsed.queries[0].name.eq_case(&c.name.to_lowercase()));
        prop_assert_eq!(parsed.edns.as_ref().map(|e| e.flags().dnssec_ok), Some(c.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)));
        // The upstream answers with the question in another case and a compressed record.
        let mut reply = Message::response(id, OpCode::Query);
        let mut name = sent[HEADER_LEN..qend - 4].to_vec();
        flip_case(&mut name, &mask);
        let mut echoed = parsed.queries[0].clone();
        echoed.name = Name::from_labels(wire_labels(&name)).unwrap();
        reply.add_query(echoed);
        reply.add_answer(Record::from_rdata(c.name.clone(), 60, RData::A(A(Ipv4Addr::LOCALHOST))));
        let reply = reply.to_vec().unwrap();
        prop_assert_eq!(check_reply(&sent[..qend], &reply), Ok(()));
        prop_assert_eq!(check_reply(&sent, &reply), Ok(()));
    }
}
