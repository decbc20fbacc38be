//! Error replies, the upstream query and the upstream reply check (RFC 5452).

use super::*;
use hickory_proto::op::{Message, ResponseCode};

fn reply_to(query: &[u8], rcode: u16) -> Vec<u8> {
    let mut out = Vec::new();
    assert!(error_reply(query, rcode, &mut out));
    out
}

#[test]
fn error_reply_echoes_id_opcode_rd_and_question() {
    let q = question("Example.COM", rtype::AXFR, class::IN);
    let query = msg(0xBEEF, flag::RD | flag::CD | (2 << 11), [1, 0, 0, 0], &[&q]);
    let out = reply_to(&query, rcode::NOTIMP);
    let h = Header::parse(&out).unwrap();
    assert_eq!(h.id, 0xBEEF);
    // An unknown opcode: ID, opcode and RD echoed, nothing else set (not RA, not CD).
    assert_eq!(h.flags, flag::QR | (2 << 11) | flag::RD | rcode::NOTIMP);
    assert_eq!((h.qdcount, h.ancount, h.nscount, h.arcount), (1, 0, 0, 0));
    assert_eq!(&out[HEADER_LEN..], &q[..]);
}

#[test]
fn error_reply_to_a_query_has_the_header_every_reply_has() {
    let q = question("Example.COM", rtype::AXFR, class::IN);
    let query = msg(0xBEEF, flag::RD | flag::CD, [1, 0, 0, 0], &[&q]);
    let out = reply_to(&query, rcode::REFUSED);
    let h = Header::parse(&out).unwrap();
    let want = flag::QR | flag::RD | flag::RA | flag::CD | rcode::REFUSED;
    assert_eq!(h.flags, want, "{:#06x}", h.flags);
}

#[test]
fn error_reply_without_a_readable_question_has_qdcount_0() {
    let query = msg(9, 0, [1, 0, 0, 0], &[&[5, b'a']]);
    let out = reply_to(&query, rcode::FORMERR);
    assert_eq!(out.len(), HEADER_LEN);
    let parsed = Message::from_vec(&out).unwrap();
    assert_eq!(parsed.metadata.response_code, ResponseCode::FormErr);
    assert!(parsed.queries.is_empty());
    assert_eq!(parsed.metadata.id, 9);
}

#[test]
fn error_reply_needs_a_header() {
    let mut out = vec![1, 2, 3];
    assert!(!error_reply(&[0; 11], rcode::FORMERR, &mut out));
    assert!(out.is_empty());
}

#[test]
fn badvers_reply_carries_the_upper_rcode_bits_in_its_opt() {
    let q = question("example.com", rtype::A, class::IN);
    let query = msg(
        5,
        0,
        [1, 0, 0, 1],
        &[&q, &opt(1232, (1 << 16) | 0x8000, &[])],
    );
    assert_eq!(
        parse_query(&query).unwrap_err(),
        QueryError::Reply(rcode::BADVERS)
    );
    let out = reply_to(&query, rcode::BADVERS);
    let h = Header::parse(&out).unwrap();
    assert_eq!((h.rcode(), h.arcount), (0, 1));
    let opt_at = HEADER_LEN + q.len();
    assert_eq!(&out[opt_at..opt_at + 5], &[0, 0, 41, 0x04, 0xD0]);
    assert_eq!(out[opt_at + 5], 1, "upper rcode byte");
    let parsed = Message::from_vec(&out).unwrap();
    // 16 is both BADVERS and BADSIG in the IANA table; hickory names it BADSIG.
    assert_eq!(u16::from(parsed.metadata.response_code), rcode::BADVERS);
    assert!(parsed.edns.unwrap().flags().dnssec_ok);
}

#[test]
fn error_reply_has_an_opt_only_when_the_client_sent_one() {
    let q = question("example.com", rtype::AXFR, class::IN);
    let plain = msg(5, 0, [1, 0, 0, 0], &[&q]);
    assert!(
        Message::from_vec(&reply_to(&plain, rcode::REFUSED))
            .unwrap()
            .edns
            .is_none()
    );
    let with_opt = msg(
        5,
        0,
        [1, 0, 0, 1],
        &[&q, &opt(4096, 0, &option(10, &[1; 8]))],
    );
    let parsed = Message::from_vec(&reply_to(&with_opt, rcode::REFUSED)).unwrap();
    assert_eq!(parsed.metadata.response_code, ResponseCode::Refused);
    let edns = parsed.edns.unwrap();
    assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
    assert!(
        edns.options().options.is_empty(),
        "the client's cookie is not echoed"
    );
}

fn upstream_query_for(client: &[u8], id: u16) -> (Vec<u8>, usize) {
    let query = parse_query(client).unwrap();
    let mut out = Vec::new();
    let qend = build_upstream_query(&query, id, &mut out);
    (out, qend)
}

#[test]
fn upstream_query_is_lowercased_with_our_opt_and_no_client_options() {
    let q = question("WWW.Example.com", rtype::AAAA, class::IN);
    let client = msg(
        1,
        flag::RD | flag::CD,
        [1, 0, 0, 1],
        &[&q, &opt(4096, 0x8000, &option(10, &[7; 8]))],
    );
    let (out, qend) = upstream_query_for(&client, 0x1234);
    assert_eq!(qend, HEADER_LEN + q.len());
    assert_eq!(
        &out[HEADER_LEN..qend],
        &question("www.example.com", rtype::AAAA, class::IN)[..]
    );
    let parsed = Message::from_vec(&out).unwrap();
    assert_eq!(parsed.metadata.id, 0x1234);
    assert!(parsed.metadata.recursion_desired && parsed.metadata.checking_disabled);
    let edns = parsed.edns.unwrap();
    assert_eq!(edns.max_payload(), EDNS_UDP_SIZE);
    assert!(edns.flags().dnssec_ok);
    assert!(edns.options().options.is_empty());
}

#[test]
fn upstream_query_without_client_do_has_do_clear() {
    let (out, _) = upstream_query_for(&msg(1, 0, [1, 0, 0, 0], &[&question("a.b", 1, 1)]), 1);
    let parsed = Message::from_vec(&out).unwrap();
    assert!(!parsed.metadata.recursion_desired);
    assert!(!parsed.edns.unwrap().flags().dnssec_ok);
}

/// A reply to `sent` from an upstream that echoes the question with `qname` and `qtype`.
fn reply(sent: &[u8], qname: &str, qtype: u16) -> Vec<u8> {
    let a = rr(&[0xC0, 12], rtype::A, class::IN, 60, &[192, 0, 2, 1]);
    msg(
        Header::parse(sent).unwrap().id,
        flag::QR | flag::RD,
        [1, 1, 0, 0],
        &[&question(qname, qtype, class::IN), &a],
    )
}

#[test]
fn check_reply_accepts_a_matching_reply_in_any_case() {
    let client = msg(
        1,
        flag::RD,
        [1, 0, 0, 0],
        &[&question("www.example.com", rtype::A, class::IN)],
    );
    let (sent, qend) = upstream_query_for(&client, 77);
    assert_eq!(
        check_reply(&sent[..qend], &reply(&sent, "www.example.com", rtype::A)),
        Ok(())
    );
    assert_eq!(
        check_reply(&sent, &reply(&sent, "WWW.eXample.COM", rtype::A)),
        Ok(())
    );
}

#[test]
fn check_reply_rejects_what_was_not_asked() {
    let client = msg(
        1,
        flag::RD,
        [1, 0, 0, 0],
        &[&question("www.example.com", rtype::A, class::IN)],
    );
    let (sent, qend) = upstream_query_for(&client, 77);
    let sent = &sent[..qend];
    let good = reply(sent, "www.example.com", rtype::A);
    let mut wrong_id = good.clone();
    wrong_id[1] ^= 1;
    let mut not_qr = good.clone();
    not_qr[2] &= 0x7F;
    let mut other_opcode = good.clone();
    other_opcode[2] |= 2 << 3;
    let mut two_questions = good.clone();
    two_questions[5] = 2;
    let mut other_class = good.clone();
    other_class[qend - 1] = 3;
    let cases: &[(&str, Vec<u8>, Mismatch)] = &[
        ("wrong ID", wrong_id, Mismatch::Id),
        ("QR clear", not_qr, Mismatch::NotAResponse),
        ("other opcode", other_opcode, Mismatch::NotAResponse),
        ("QDCOUNT 2", two_questions, Mismatch::Question),
        (
            "other name",
            reply(sent, "www.example.net", rtype::A),
            Mismatch::Question,
        ),
        (
            "longer name",
            reply(sent, "www.example.com.evil", rtype::A),
            Mismatch::Question,
        ),
        (
            "other qtype",
            reply(sent, "www.example.com", rtype::AAAA),
            Mismatch::Question,
        ),
        ("other qclass", other_class, Mismatch::Question),
        (
            "header only",
            good[..HEADER_LEN].to_vec(),
            Mismatch::Malformed,
        ),
        (
            "cut in the question",
            good[..qend - 1].to_vec(),
            Mismatch::Malformed,
        ),
        ("11 bytes", good[..11].to_vec(), Mismatch::Malformed),
    ];
    for (what, bad, expected) in cases {
        assert_eq!(check_reply(sent, bad), Err(*expected), "{what}");
    }
}
