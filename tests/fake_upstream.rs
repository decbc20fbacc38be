//! Self-tests of the fake upstream the other integration tests rely on: if it misbehaved in a
//! way it was not asked to, their results would mean nothing. Loopback only.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use support::client::{
    QueryBuilder, answer_a, answer_aaaa, exchange_tcp_frames, exchange_tcp_raw,
    exchange_udp_collect, exchange_udp_raw_timeout, query_tcp, query_udp, send_tcp, send_udp,
};
use support::fake_upstream::{Behavior, FORGED_QNAME, FakeUpstream, POISON_A, Proto};

const SHORT: Duration = Duration::from_millis(300);

fn soa_ttl_and_minimum(reply: &Message) -> Option<(u32, u32)> {
    reply.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some((r.ttl, soa.minimum)),
        _ => None,
    })
}

#[tokio::test]
async fn answers_a_and_echoes_question_case_id_and_rd() {
    let fake = FakeUpstream::start().await;
    fake.add_a("www.test.", Ipv4Addr::new(10, 1, 2, 3), 300);
    let query = QueryBuilder::new("wWw.TeSt.", RecordType::A).id(4242);
    let reply = send_udp(fake.addr(), &query).await.unwrap();

    assert_eq!(reply.metadata.id, 4242);
    assert!(reply.metadata.authoritative);
    assert!(reply.metadata.recursion_desired);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.queries[0].name.to_ascii(), "wWw.TeSt.");
    assert_eq!(answer_a(&reply), vec![Ipv4Addr::new(10, 1, 2, 3)]);
    assert_eq!(reply.answers[0].ttl, 300);
    assert!(
        reply.edns.is_none(),
        "no OPT in the reply to a query without one"
    );

    let seen = fake.queries();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].name, "wWw.TeSt.");
    assert_eq!((seen[0].id, seen[0].proto), (4242, Proto::Udp));
    assert!(!seen[0].had_opt);
    assert_eq!((fake.udp_queries(), fake.tcp_queries()), (1, 0));
}

#[tokio::test]
async fn echoes_opt_and_records_cookie_and_payload() {
    let fake = FakeUpstream::start().await;
    fake.add_aaaa("v6.test.", Ipv6Addr::LOCALHOST, 60);
    let query = QueryBuilder::new("v6.test.", RecordType::AAAA)
        .edns(4096)
        .cookie();
    let reply = send_udp(fake.addr(), &query).await.unwrap();
    assert_eq!(reply.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    assert_eq!(answer_aaaa(&reply), vec![Ipv6Addr::LOCALHOST]);

    let seen = &fake.queries()[0];
    assert!(seen.had_opt && seen.had_cookie);
    assert_eq!(seen.opt_payload, Some(4096));

    query_udp(fake.addr(), "v6.test.", RecordType::AAAA, Some(1232))
        .await
        .unwrap();
    assert!(!fake.queries()[1].had_cookie);
}

#[tokio::test]
async fn unknown_name_is_nxdomain_with_configurable_soa() {
    let fake = FakeUpstream::start().await;
    let reply = query_udp(fake.addr(), "nope.test.", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.answers.is_empty());
    assert_eq!(soa_ttl_and_minimum(&reply), Some((60, 30)));

    fake.set_soa(7, 5);
    let reply = query_udp(fake.addr(), "nope.test.", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(soa_ttl_and_minimum(&reply), Some((7, 5)));

    fake.set_negative_soa(false);
    let reply = query_udp(fake.addr(), "nope.test.", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.authorities.is_empty());
}

#[tokio::test]
async fn known_name_without_the_type_is_nodata_with_soa() {
    let fake = FakeUpstream::start().await;
    fake.set_zone("example.");
    fake.add_a("host.example.", Ipv4Addr::new(10, 0, 0, 9), 60);
    let reply = query_udp(fake.addr(), "host.example.", RecordType::TXT, None)
        .await
        .unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authorities[0].name.to_ascii(), "example.");
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn cname_is_followed_inside_the_data() {
    let fake = FakeUpstream::start().await;
    fake.add_cname("alias.test.", "real.test.", 120);
    fake.add_a("real.test.", Ipv4Addr::new(10, 9, 9, 9), 30);
    let reply = query_udp(fake.addr(), "alias.test.", RecordType::A, None)
        .await
        .unwrap();
    let types: Vec<_> = reply.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, vec![RecordType::CNAME, RecordType::A]);
    assert_eq!(answer_a(&reply), vec![Ipv4Addr::new(10, 9, 9, 9)]);
}

#[tokio::test]
async fn large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let fake = FakeUpstream::start().await;
    fake.add_many_a("big.test.", 40, 60);
    fake.add_txt("txt.test.", "hello", 60);

    let udp = query_udp(fake.addr(), "big.test.", RecordType::A, None)
        .await
        .unwrap();
    assert!(udp.metadata.truncation);
    assert!(udp.answers.is_empty());
    assert_eq!(udp.queries[0].name.to_ascii(), "big.test.");

    let udp_edns = query_udp(fake.addr(), "big.test.", RecordType::A, Some(1232))
        .await
        .unwrap();
    assert!(!udp_edns.metadata.truncation);
    assert_eq!(udp_edns.answers.len(), 40);

    let tcp = query_tcp(fake.addr(), "big.test.", RecordType::A)
        .await
        .unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(answer_a(&tcp).len(), 40);
    assert_eq!(answer_a(&tcp)[0], Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!((fake.tcp_queries(), fake.tcp_connections()), (1, 1));
}

#[tokio::test]
async fn tcp_serves_pipelined_queries_in_order_on_one_connection() {
    let fake = FakeUpstream::start().await;
    let names = ["a.test.", "b.test.", "c.test."];
    for (i, name) in (1u8..).zip(names) {
        fake.add_a(name, Ipv4Addr::new(10, 0, 0, i), 60);
    }
    let queries: Vec<Vec<u8>> = (100u16..)
        .zip(names)
        .map(|(id, name)| QueryBuilder::new(name, RecordType::A).id(id).build())
        .collect();
    let replies = exchange_tcp_raw(fake.addr(), &queries).await.unwrap();
    assert_eq!(replies.len(), 3);
    for (i, raw) in (1u8..).zip(&replies) {
        let reply = Message::from_vec(raw).unwrap();
        assert_eq!(reply.metadata.id, 99 + u16::from(i));
        assert_eq!(answer_a(&reply), vec![Ipv4Addr::new(10, 0, 0, i)]);
    }
    assert_eq!((fake.tcp_queries(), fake.tcp_connections()), (3, 1));
}

#[tokio::test]
async fn delay_holds_the_answer_back() {
    let fake = FakeUpstream::start().await;
    fake.add_a("slow.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    fake.set_behavior(Behavior::Delay(Duration::from_millis(250)));
    let started = Instant::now();
    let reply = query_udp(fake.addr(), "slow.test.", RecordType::A, None)
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(answer_a(&reply).len(), 1);
}

#[tokio::test]
async fn drop_never_answers_but_counts_and_per_name_wins() {
    let fake = FakeUpstream::start().await;
    fake.add_a("kept.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    fake.set_behavior(Behavior::Drop);
    fake.set_behavior_for("KEPT.test", Behavior::Answer);
    let query = QueryBuilder::new("lost.test.", RecordType::A).build();
    assert!(
        exchange_udp_raw_timeout(fake.addr(), &query, SHORT)
            .await
            .is_none()
    );
    assert_eq!(fake.udp_queries(), 1);
    let reply = query_udp(fake.addr(), "kept.test.", RecordType::A, None).await;
    assert_eq!(answer_a(&reply.unwrap()).len(), 1);
}

#[tokio::test]
async fn rcode_behaviour_answers_with_that_rcode_and_no_records() {
    let fake = FakeUpstream::start().await;
    fake.add_a("x.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    for rcode in [
        ResponseCode::ServFail,
        ResponseCode::Refused,
        ResponseCode::FormErr,
        ResponseCode::NotImp,
    ] {
        fake.set_behavior(Behavior::Rcode(rcode));
        let reply = query_udp(fake.addr(), "x.test.", RecordType::A, None)
            .await
            .unwrap();
        assert_eq!(reply.metadata.response_code, rcode);
        assert!(reply.answers.is_empty() && reply.authorities.is_empty());
    }
}

#[tokio::test]
async fn truncate_udp_sets_tc_over_udp_only() {
    let fake = FakeUpstream::start().await;
    fake.add_a("tc.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    fake.set_behavior(Behavior::TruncateUdp);
    let udp = query_udp(fake.addr(), "tc.test.", RecordType::A, Some(1232))
        .await
        .unwrap();
    assert!(udp.metadata.truncation && udp.answers.is_empty());
    let tcp = query_tcp(fake.addr(), "tc.test.", RecordType::A)
        .await
        .unwrap();
    assert!(!tcp.metadata.truncation);
    assert_eq!(answer_a(&tcp), vec![Ipv4Addr::new(10, 0, 0, 1)]);
}

/// Sends one UDP query under `behavior` and returns every datagram seen within 300 ms.
async fn datagrams_under(behavior: Behavior) -> (FakeUpstream, Vec<(IpAddr, u16, Message)>) {
    let fake = FakeUpstream::start().await;
    fake.add_a("f.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    fake.set_behavior(behavior);
    let query = QueryBuilder::new("f.test.", RecordType::A).id(7).build();
    let got = exchange_udp_collect(fake.addr(), &query, SHORT).await;
    let parsed = got
        .into_iter()
        .map(|(from, raw)| (from.ip(), from.port(), Message::from_vec(&raw).unwrap()))
        .collect();
    (fake, parsed)
}

#[tokio::test]
async fn wrong_id_first_sends_a_forgery_then_the_answer() {
    let (fake, got) = datagrams_under(Behavior::WrongIdFirst).await;
    assert_eq!(got.len(), 2);
    assert_ne!(got[0].2.metadata.id, 7);
    assert_eq!(answer_a(&got[0].2), vec![POISON_A]);
    assert_eq!(got[1].2.metadata.id, 7);
    assert_eq!(answer_a(&got[1].2), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    assert_eq!(got[1].1, fake.addr().port());
}

#[tokio::test]
async fn wrong_question_first_sends_a_forgery_then_the_answer() {
    let (_fake, got) = datagrams_under(Behavior::WrongQuestionFirst).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].2.metadata.id, 7);
    assert_eq!(got[0].2.queries[0].name.to_ascii(), FORGED_QNAME);
    assert_eq!(got[1].2.queries[0].name.to_ascii(), "f.test.");
    assert_eq!(answer_a(&got[1].2), vec![Ipv4Addr::new(10, 0, 0, 1)]);
}

#[tokio::test]
async fn other_source_first_sends_a_forgery_from_another_port() {
    let (fake, got) = datagrams_under(Behavior::OtherSourceFirst).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, fake.addr().ip());
    assert_ne!(got[0].1, fake.addr().port());
    assert_eq!(got[0].2.metadata.id, 7);
    assert_eq!(answer_a(&got[0].2), vec![POISON_A]);
    assert_eq!(got[1].1, fake.addr().port());
    assert_eq!(answer_a(&got[1].2), vec![Ipv4Addr::new(10, 0, 0, 1)]);
}

#[tokio::test]
async fn wrong_id_first_over_tcp_sends_two_frames() {
    let fake = FakeUpstream::start().await;
    fake.add_a("f.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    fake.set_behavior(Behavior::WrongIdFirst);
    let query = QueryBuilder::new("f.test.", RecordType::A).id(9).build();
    let frames = exchange_tcp_frames(fake.addr(), &[query], 2, SHORT)
        .await
        .unwrap();
    let ids: Vec<u16> = frames
        .iter()
        .map(|f| Message::from_vec(f).unwrap().metadata.id)
        .collect();
    assert_eq!(ids, vec![10, 9]);
}

#[tokio::test]
async fn garbage_replies_are_unparseable() {
    let fake = FakeUpstream::start().await;
    fake.set_behavior(Behavior::Garbage);
    let query = QueryBuilder::new("g.test.", RecordType::A).build();
    let raw = exchange_udp_raw_timeout(fake.addr(), &query, SHORT)
        .await
        .unwrap();
    assert!(!raw.is_empty() && raw.len() < 12);
    assert!(Message::from_vec(&raw).is_err());
}

#[tokio::test]
async fn fail_first_fails_n_times_then_answers() {
    let fake = FakeUpstream::start().await;
    fake.add_a("ff.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    let servfail = Box::new(Behavior::Rcode(ResponseCode::ServFail));
    fake.set_behavior_for("ff.test.", Behavior::FailFirst(2, servfail));
    let mut rcodes = Vec::new();
    for _ in 0..3 {
        let reply = query_udp(fake.addr(), "ff.test.", RecordType::A, None)
            .await
            .unwrap();
        rcodes.push(reply.metadata.response_code);
    }
    use ResponseCode::{NoError, ServFail};
    assert_eq!(rcodes, vec![ServFail, ServFail, NoError]);
}

#[tokio::test]
async fn unparseable_query_gets_formerr() {
    let fake = FakeUpstream::start().await;
    let mut raw = QueryBuilder::new("x.test.", RecordType::A).id(55).build();
    raw.truncate(15); // header intact, question cut short
    let reply = exchange_udp_raw_timeout(fake.addr(), &raw, SHORT)
        .await
        .unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id, 55);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(fake.udp_queries(), 1);
    assert!(fake.queries().is_empty());
}

#[tokio::test]
async fn stop_silences_both_transports_and_resume_restores_them() {
    let mut fake = FakeUpstream::start().await;
    fake.add_a("s.test.", Ipv4Addr::new(10, 0, 0, 1), 60);
    let query = QueryBuilder::new("s.test.", RecordType::A).build();
    assert!(
        exchange_udp_raw_timeout(fake.addr(), &query, SHORT)
            .await
            .is_some()
    );

    fake.stop().await;
    assert!(
        exchange_udp_raw_timeout(fake.addr(), &query, SHORT)
            .await
            .is_none()
    );
    let refused = tokio::net::TcpStream::connect(fake.addr()).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    fake.reset_counts();

    fake.resume().await;
    let reply = query_tcp(fake.addr(), "s.test.", RecordType::A).await;
    assert_eq!(answer_a(&reply.unwrap()).len(), 1);
    assert_eq!((fake.udp_queries(), fake.tcp_queries()), (0, 1));
}

#[tokio::test]
async fn dropping_the_fake_closes_its_port() {
    let fake = FakeUpstream::start().await;
    let addr = fake.addr();
    drop(fake);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn serves_on_another_loopback_address() {
    let fake = FakeUpstream::start_on(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))).await;
    fake.add_a("two.test.", Ipv4Addr::new(10, 0, 0, 2), 60);
    assert_eq!(fake.addr().ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let query = QueryBuilder::new("TWO.test.", RecordType::A).random_case();
    let udp = send_udp(fake.addr(), &query).await.unwrap();
    assert_eq!(udp.queries[0].name.to_ascii(), query.name().to_ascii());
    let tcp = send_tcp(fake.addr(), &query).await.unwrap();
    assert_eq!(answer_a(&tcp), vec![Ipv4Addr::new(10, 0, 0, 2)]);
}
