//! parse_query at every length boundary and for every error, the cache key and the UDP limit.

use super::*;

const RD: u16 = flag::RD;
const FORMERR: Result<(), QueryError> = Err(QueryError::Reply(rcode::FORMERR));

fn plain_query(dotted: &str) -> Vec<u8> {
    msg(
        7,
        RD,
        [1, 0, 0, 0],
        &[&question(dotted, rtype::A, class::IN)],
    )
}

fn edns_query(dotted: &str, ttl: u32) -> Vec<u8> {
    let cookie = option(10, &[1, 2, 3, 4, 5, 6, 7, 8]);
    msg(
        7,
        RD,
        [1, 0, 0, 1],
        &[
            &question(dotted, rtype::AAAA, class::IN),
            &opt(4096, ttl, &cookie),
        ],
    )
}

fn status(buf: &[u8]) -> Result<(), QueryError> {
    parse_query(buf).map(|_| ())
}

#[test]
fn every_prefix_of_a_query_is_rejected_with_the_right_error() {
    let full = edns_query("www.example.com", 0x8000);
    assert!(parse_query(&full).is_ok());
    for len in 0..full.len() {
        let expected = if len < HEADER_LEN {
            Err(QueryError::TooShort)
        } else {
            FORMERR
        };
        assert_eq!(status(&full[..len]), expected, "prefix of {len} bytes");
    }
}

#[test]
fn header_errors_map_to_the_documented_answers() {
    let q = question("example.com", rtype::A, class::IN);
    let cases: &[(u16, [u16; 4], Result<(), QueryError>)] = &[
        (flag::QR, [1, 0, 0, 0], Err(QueryError::IsResponse)),
        (1 << 11, [1, 0, 0, 0], Err(QueryError::Reply(rcode::NOTIMP))), // IQUERY
        (2 << 11, [1, 0, 0, 0], Err(QueryError::Reply(rcode::NOTIMP))), // STATUS
        (5 << 11, [1, 0, 0, 0], Err(QueryError::Reply(rcode::NOTIMP))), // UPDATE
        (RD, [0, 0, 0, 0], FORMERR),
        (RD, [2, 0, 0, 0], FORMERR),
        (RD, [1, 1, 0, 0], FORMERR),
        (RD, [1, 0, 1, 0], FORMERR),
        (RD, [1, 0, 0, 1], FORMERR), // promises a record that is not there
        (RD, [1, 0, 0, 0], Ok(())),
    ];
    for (flags, counts, expected) in cases {
        let buf = msg(1, *flags, *counts, &[&q]);
        assert_eq!(
            status(&buf),
            *expected,
            "flags {flags:#x} counts {counts:?}"
        );
    }
    // Two questions really present are still FORMERR.
    let two = msg(1, RD, [2, 0, 0, 0], &[&q, &q]);
    assert_eq!(status(&two), FORMERR);
}

#[test]
fn bad_qnames_are_formerr() {
    let tail = [0, 1, 0, 1];
    let label64 = [&[64u8][..], &[b'a'; 64], &[0]].concat();
    let cases: &[(&str, Vec<u8>)] = &[
        ("label of 64 bytes", label64),
        ("extended label type 01", vec![0x41, b'a', 0]),
        ("reserved label type 10", vec![0x81, b'a', 0]),
        ("pointer to itself (a loop)", vec![0xC0, 0x0C]),
        ("pointer after a label", vec![1, b'a', 0xC0, 0x0C]),
        ("label runs past the end", vec![5, b'a', b'b']),
    ];
    for (what, qname) in cases {
        let buf = msg(1, 0, [1, 0, 0, 0], &[qname, &tail]);
        assert_eq!(status(&buf), FORMERR, "{what}");
    }
}

#[test]
fn qname_length_limit_is_255_bytes_on_the_wire() {
    // Four labels of 63 bytes and one of `last` bytes: 4*64 + 1 + last + 1 bytes.
    let long = |last: usize| {
        let mut labels = vec!["x".repeat(63); 3];
        labels.push("y".repeat(last));
        labels.join(".")
    };
    let ok = question(&long(61), rtype::A, class::IN);
    assert_eq!(ok.len() - 4, 255);
    assert!(parse_query(&msg(1, 0, [1, 0, 0, 0], &[&ok])).is_ok());
    let too_long = question(&long(62), rtype::A, class::IN);
    assert_eq!(status(&msg(1, 0, [1, 0, 0, 0], &[&too_long])), FORMERR);
}

#[test]
fn garbage_after_the_last_record_is_formerr() {
    let mut buf = plain_query("example.com");
    buf.push(0);
    assert_eq!(status(&buf), FORMERR);
    let mut buf = edns_query("example.com", 0);
    buf.extend_from_slice(&[0, 0]);
    assert_eq!(status(&buf), FORMERR);
}

#[test]
fn opt_problems_get_badvers_or_formerr() {
    let q = question("example.com", rtype::A, class::IN);
    let v0 = opt(1232, 0, &[]);
    let v1 = opt(1232, 1 << 16, &[]);
    let non_root_owner = rr(&name("x"), rtype::OPT, 1232, 0, &[]);
    let bad_option = opt(1232, 0, &[0, 10, 0, 8, 1, 2]);
    type Case = (&'static str, u16, Vec<u8>, Result<(), QueryError>);
    let cases: &[Case] = &[
        (
            "version 1",
            1,
            v1.clone(),
            Err(QueryError::Reply(rcode::BADVERS)),
        ),
        ("two OPTs", 2, [v0.clone(), v0.clone()].concat(), FORMERR),
        ("two OPTs, second v1", 2, [v0.clone(), v1].concat(), FORMERR),
        ("OPT owner not root", 1, non_root_owner, FORMERR),
        ("option overruns the RDATA", 1, bad_option, FORMERR),
        ("version 0", 1, v0, Ok(())),
    ];
    for (what, arcount, additional, expected) in cases {
        let buf = msg(1, 0, [1, 0, 0, *arcount], &[&q, additional]);
        assert_eq!(status(&buf), *expected, "{what}");
    }
}

#[test]
fn zone_transfers_are_refused() {
    for qtype in [rtype::AXFR, rtype::IXFR] {
        let buf = msg(
            1,
            0,
            [1, 0, 0, 0],
            &[&question("example.com", qtype, class::IN)],
        );
        assert_eq!(status(&buf), Err(QueryError::Reply(rcode::REFUSED)));
    }
}

#[test]
fn additional_records_with_compressed_owners_are_skipped_not_followed() {
    let q = question("example.com", rtype::A, class::IN);
    // Owner points at the qname; a second owner points at itself (a loop if followed).
    let to_qname = rr(&[0xC0, 12], rtype::A, class::IN, 60, &[1, 2, 3, 4]);
    let self_loop = rr(&[0xC0, 0xFF], rtype::TXT, class::IN, 60, &[1, b'x']);
    let edns = opt(1400, 0x8000, &[]);
    let buf = msg(1, 0, [1, 0, 0, 3], &[&q, &to_qname, &self_loop, &edns]);
    let query = parse_query(&buf).unwrap();
    let edns = query.edns.unwrap();
    assert_eq!(
        (edns.udp_size, edns.version, edns.dnssec_ok),
        (1400, 0, true)
    );
}

#[test]
fn accepted_query_keeps_client_case_and_lowercases_the_key_name() {
    let buf = edns_query("WwW.ExAmple.COM", 0x8000);
    let query = parse_query(&buf).unwrap();
    assert_eq!(
        query.question,
        &question("WwW.ExAmple.COM", rtype::AAAA, class::IN)[..]
    );
    assert_eq!(query.qname(), &name("www.example.com")[..]);
    assert_eq!(query.qname_text(), "www.example.com.");
    assert_eq!((query.qtype, query.qclass), (rtype::AAAA, class::IN));
    assert_eq!(
        query.edns.map(|e| (e.udp_size, e.dnssec_ok)),
        Some((4096, true))
    );
    let root = msg(1, 0, [1, 0, 0, 0], &[&question("", rtype::NS, class::IN)]);
    assert_eq!(parse_query(&root).unwrap().qname_text(), ".");
}

#[test]
fn qname_text_escapes_dots_and_unprintable_bytes() {
    let qname = [&[4u8, b'a', b'.', b'b', 0x07][..], &[0, 0, 1, 0, 1]].concat();
    let buf = msg(1, 0, [1, 0, 0, 0], &[&qname]);
    assert_eq!(parse_query(&buf).unwrap().qname_text(), "a\\.b\\007.");
}

fn key_of(buf: &[u8]) -> Vec<u8> {
    parse_query(buf).unwrap().cache_key().to_vec()
}

#[test]
fn cache_key_ignores_id_case_bufsize_and_cookies() {
    let base = key_of(&edns_query("www.example.com", 0));
    let mut other_id = edns_query("WWW.example.COM", 0);
    other_id[0] = 0x99;
    assert_eq!(key_of(&other_id), base);
    let q = question("www.example.com", rtype::AAAA, class::IN);
    let other_size = msg(
        3,
        RD,
        [1, 0, 0, 1],
        &[&q, &opt(512, 0, &option(10, &[9; 8]))],
    );
    assert_eq!(key_of(&other_size), base);
    assert_eq!(base.len(), 1 + name("www.example.com").len() + 4);
}

#[test]
fn cache_key_separates_do_rd_cd_and_qtype() {
    let base = key_of(&edns_query("example.com", 0));
    let with_do = key_of(&edns_query("example.com", 0x8000));
    let mut no_rd = edns_query("example.com", 0);
    no_rd[2] &= !0x01;
    let mut with_cd = edns_query("example.com", 0);
    with_cd[3] |= 0x10;
    let a = msg(
        7,
        RD,
        [1, 0, 0, 1],
        &[
            &question("example.com", rtype::A, class::IN),
            &opt(4096, 0, &[]),
        ],
    );
    for (what, key) in [
        ("DO", with_do),
        ("RD", key_of(&no_rd)),
        ("CD", key_of(&with_cd)),
        ("qtype", key_of(&a)),
    ] {
        assert_ne!(key, base, "{what}");
    }
}

#[test]
fn udp_limit_clamps_to_512_and_the_cap() {
    let q = question("example.com", rtype::A, class::IN);
    let with_size = |size| msg(1, 0, [1, 0, 0, 1], &[&q, &opt(size, 0, &[])]);
    assert_eq!(
        parse_query(&plain_query("example.com"))
            .unwrap()
            .udp_limit(1232),
        512
    );
    let cases = [
        (100, 1232, 512),
        (512, 1232, 512),
        (1000, 1232, 1000),
        (4096, 1232, 1232),
        (4096, 100, 512),
    ];
    for (size, cap, limit) in cases {
        let buf = with_size(size);
        assert_eq!(
            parse_query(&buf).unwrap().udp_limit(cap),
            limit,
            "size {size} cap {cap}"
        );
    }
}

#[test]
fn an_error_with_ede_carries_it_when_the_client_sent_an_opt() {
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    let ede = Ede {
        code: ede::PROHIBITED,
        text: "client miss limit",
    };
    let mut out = Vec::new();
    assert!(error_reply_ede(
        &edns_query("a.example", 0),
        rcode::REFUSED,
        Some(ede),
        &mut out
    ));
    let reply = Message::from_vec(&out).expect("hickory parses the reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert_eq!(reply.metadata.id, 7);
    assert_eq!(reply.queries.len(), 1);
    let edns = reply.edns.as_ref().expect("an OPT");
    let opt = edns.options();
    let Some(EdnsOption::Unknown(15, data)) = opt.get(EdnsCode::Unknown(15)) else {
        panic!("no EDE option in {opt:?}");
    };
    assert_eq!(data[..2], ede::PROHIBITED.to_be_bytes());
    assert_eq!(&data[2..], b"client miss limit");

    // Without an OPT from the client there is nowhere to put it: the bare rcode.
    assert!(error_reply_ede(
        &plain_query("a.example"),
        rcode::REFUSED,
        Some(ede),
        &mut out
    ));
    let reply = Message::from_vec(&out).expect("hickory parses the reply");
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(reply.edns.is_none());
}
