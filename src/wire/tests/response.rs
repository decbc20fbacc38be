//! normalize_response and write_reply on hand-built messages: the cases a generator rarely
//! hits (OPT in the middle, odd TTLs, malformed input) and each truncation step.

use super::*;
use hickory_proto::op::Message;

const QR: u16 = flag::QR | flag::RD | flag::RA;

fn a(owner: &[u8], ttl: u32, last: u8) -> Vec<u8> {
    rr(owner, rtype::A, class::IN, ttl, &[192, 0, 2, last])
}

/// An SOA for example.com with compressed names and the given MINIMUM.
fn soa(ttl: u32, minimum: u32) -> Vec<u8> {
    let mut rdata = vec![2, b'n', b's', 0xC0, 12, 0xC0, 12];
    for v in [1u32, 7200, 3600, 1_209_600, minimum] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    rr(&[0xC0, 12], rtype::SOA, class::IN, ttl, &rdata)
}

/// The stored form (message, then TTL offset table), analysis and layout of `resp`.
fn normalize(resp: &[u8]) -> (Vec<u8>, Analysis, Layout) {
    let mut out = Vec::new();
    let (analysis, layout) = normalize_response(resp, &mut out).unwrap();
    (out, analysis, layout)
}

fn q() -> Vec<u8> {
    question("example.com", rtype::A, class::IN)
}

#[test]
fn our_opt_replaces_theirs_keeping_do_ext_rcode_and_ede_only() {
    let options = [
        option(10, &[1; 16]),
        option(15, &[0, 22]),
        option(12, &[0; 5]),
        option(8, &[0, 1, 24, 0, 10, 0, 0]),
    ]
    .concat();
    let theirs = opt(4096, (1 << 24) | 0x8000, &options);
    let resp = msg(1, QR | 7, [1, 0, 0, 1], &[&q(), &theirs]);
    let (out, analysis, layout) = normalize(&resp);
    assert_eq!(analysis.rcode, (1 << 4) | 7);
    assert_eq!(analysis.kind, Kind::Other(23));
    let opt_at = layout.opt_offset().unwrap();
    let message = layout.message(&out);
    assert_eq!(
        &message[opt_at..],
        &opt(EDNS_UDP_SIZE, (1 << 24) | 0x8000, &option(15, &[0, 22]))[..]
    );
    let parsed = Message::from_vec(message).unwrap();
    assert_eq!(u16::from(parsed.metadata.response_code), 23);
}

#[test]
fn records_after_a_mid_section_opt_are_dropped_and_counts_follow() {
    let owner = [0xC0, 12];
    let extra = a(&owner, 60, 9);
    let resp = msg(
        1,
        QR,
        [1, 1, 0, 3],
        &[&q(), &a(&owner, 60, 1), &extra, &opt(1232, 0, &[]), &extra],
    );
    let (out, _, layout) = normalize(&resp);
    let h = Header::parse(&out).unwrap();
    assert_eq!((h.ancount, h.nscount, h.arcount), (1, 0, 2));
    assert_eq!(layout.ttl_offsets(&out).count(), 2);
    let parsed = Message::from_vec(layout.message(&out)).unwrap();
    assert_eq!((parsed.answers.len(), parsed.additionals.len()), (1, 1));
    assert!(parsed.edns.is_some());
}

#[test]
fn no_opt_is_added_when_upstream_sent_none() {
    let resp = msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&[0xC0, 12], 300, 1)]);
    let (out, analysis, layout) = normalize(&resp);
    assert_eq!(layout.message(&out), resp);
    assert_eq!(layout.opt_offset(), None);
    assert_eq!(
        (analysis.kind, analysis.min_ttl),
        (Kind::Positive, Some(300))
    );
}

#[test]
fn negative_answers_take_the_lesser_of_soa_ttl_and_minimum() {
    let nx = msg(1, QR | 3, [1, 0, 1, 0], &[&q(), &soa(300, 60)]);
    assert_eq!(normalize(&nx).1.kind, Kind::NxDomain { soa_ttl: Some(60) });
    let nodata = msg(1, QR, [1, 0, 1, 0], &[&q(), &soa(30, 3600)]);
    let (_, analysis, _) = normalize(&nodata);
    assert_eq!(
        (analysis.kind, analysis.min_ttl),
        (Kind::NoData { soa_ttl: Some(30) }, Some(30))
    );
    let bare = msg(1, QR, [1, 0, 0, 0], &[&q()]);
    assert_eq!(
        normalize(&bare).1,
        Analysis {
            kind: Kind::NoData { soa_ttl: None },
            rcode: 0,
            truncated: false,
            min_ttl: None,
            dropped: 0
        }
    );
    let servfail = msg(1, QR | flag::TC | 2, [1, 0, 0, 0], &[&q()]);
    let (_, analysis, _) = normalize(&servfail);
    assert_eq!((analysis.kind, analysis.truncated), (Kind::ServFail, true));
}

#[test]
fn ttls_with_the_top_bit_set_are_stored_as_zero() {
    let resp = msg(
        1,
        QR,
        [1, 2, 0, 0],
        &[
            &q(),
            &a(&[0xC0, 12], 0x8000_0001, 1),
            &a(&[0xC0, 12], 50, 2),
        ],
    );
    let (out, analysis, layout) = normalize(&resp);
    assert_eq!(analysis.min_ttl, Some(0));
    let first = layout.ttl_offsets(&out).next().unwrap();
    assert_eq!(&out[first..first + 4], &[0, 0, 0, 0]);
}

#[test]
fn malformed_responses_are_errors() {
    let ans = a(&[0xC0, 12], 60, 1);
    let o = opt(1232, 0, &[]);
    let cases: &[(&str, Vec<u8>, WireError)] = &[
        ("short header", vec![0; 11], WireError::Truncated("header")),
        (
            "cut question",
            msg(1, QR, [1, 0, 0, 0], &[&q()[..5]]),
            WireError::Truncated("question"),
        ),
        (
            "cut record",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &ans[..ans.len() - 1]]),
            WireError::Truncated("record"),
        ),
        (
            "trailing byte",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &ans, &[0]]),
            WireError::Trailing,
        ),
        (
            "two OPTs",
            msg(1, QR, [1, 0, 0, 2], &[&q(), &o, &o]),
            WireError::DuplicateOpt,
        ),
        (
            "OPT in answer",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &o]),
            WireError::MisplacedOpt,
        ),
        (
            "label type 01",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&[0x41, 0], 1, 1)]),
            WireError::BadName("reserved label type"),
        ),
        (
            "bad option",
            msg(1, QR, [1, 0, 0, 1], &[&q(), &opt(1232, 0, &[0, 15, 0, 9])]),
            WireError::Truncated("OPT option"),
        ),
    ];
    for (what, resp, expected) in cases {
        assert_eq!(
            normalize_response(resp, &mut Vec::new()),
            Err(*expected),
            "{what}"
        );
    }
}

/// A stored response with 3 answers, 1 authority, 1 additional record and our OPT.
fn stored() -> (Vec<u8>, Layout) {
    let o = [0xC0, 12];
    let ns = rr(&o, rtype::NS, class::IN, 900, &[2, b'n', b's', 0xC0, 12]);
    let resp = msg(
        1,
        QR,
        [1, 3, 1, 2],
        &[
            &q(),
            &a(&o, 300, 1),
            &a(&o, 200, 2),
            &a(&o, 100, 3),
            &ns,
            &a(&[2, b'n', b's', 0xC0, 12], 900, 4),
            &opt(1232, 0, &[]),
        ],
    );
    let (out, _, layout) = normalize(&resp);
    (out, layout)
}

fn serve(
    stored: &[u8],
    layout: &Layout,
    has_edns: bool,
    max_len: usize,
    ttl: TtlRewrite,
) -> Message {
    let client_q = question("ExAmple.cOM", rtype::A, class::IN);
    let client = Client {
        header: ClientHeader {
            id: 0xABCD,
            flags: flag::RD,
            dnssec_ok: false,
        },
        question: &client_q,
        has_edns,
        max_len,
    };
    let mut out = Vec::new();
    write_reply(stored, layout, &client, ttl, &mut out);
    assert!(
        out.len() <= max_len.max(HEADER_LEN + client_q.len() + 11),
        "{} > {max_len}",
        out.len()
    );
    assert_eq!(&out[HEADER_LEN..HEADER_LEN + client_q.len()], &client_q[..]);
    Message::from_vec(&out).unwrap()
}

const KEEP: TtlRewrite = TtlRewrite::Aged {
    cap: u32::MAX,
    age: 0,
};

#[test]
fn served_copy_has_client_id_case_and_aged_ttls() {
    let (s, layout) = stored();
    let m = serve(
        &s,
        &layout,
        true,
        65535,
        TtlRewrite::Aged { cap: 250, age: 150 },
    );
    assert_eq!(m.metadata.id, 0xABCD);
    let ttls: Vec<u32> = m.answers.iter().map(|r| r.ttl).collect();
    assert_eq!(
        ttls,
        [100, 50, 0],
        "capped at 250, aged 150, never below zero"
    );
    let m = serve(&s, &layout, true, 65535, TtlRewrite::Fixed(30));
    assert!(m.all_sections().all(|r| r.ttl == 30));
    assert_eq!(m.additionals.len(), 1);
    assert!(m.edns.is_some());
}

#[test]
fn opt_is_stripped_for_clients_without_edns() {
    let (s, layout) = stored();
    let m = serve(&s, &layout, false, 65535, KEEP);
    assert!(m.edns.is_none());
    assert_eq!(
        (m.answers.len(), m.authorities.len(), m.additionals.len()),
        (3, 1, 1)
    );
}

/// Length of the stored response without its additional A record.
fn len_without_additional(s: &[u8], layout: &Layout) -> usize {
    let opt_at = layout.opt_offset().unwrap();
    let extra_len = rr(&[2, b'n', b's', 0xC0, 12], rtype::A, class::IN, 0, &[0; 4]).len();
    opt_at - extra_len + (layout.message(s).len() - opt_at)
}

#[test]
fn cutting_drops_additional_then_authority_then_sets_tc() {
    let (s, layout) = stored();
    let no_additional = len_without_additional(&s, &layout);
    let m = serve(&s, &layout, true, no_additional, KEEP);
    assert!(!m.metadata.truncation);
    assert_eq!(
        (m.answers.len(), m.authorities.len(), m.additionals.len()),
        (3, 1, 0)
    );
    assert!(m.edns.is_some(), "OPT survives the cut");
    let m = serve(&s, &layout, true, no_additional - 1, KEEP);
    assert!(!m.metadata.truncation);
    assert_eq!((m.answers.len(), m.authorities.len()), (3, 0));
    let answer_len = a(&[0xC0, 12], 0, 0).len();
    let three_answers = no_additional
        - rr(
            &[0xC0, 12],
            rtype::NS,
            class::IN,
            0,
            &[2, b'n', b's', 0xC0, 12],
        )
        .len();
    for (max_len, kept) in [
        (three_answers - 1, 2),
        (three_answers - answer_len, 2),
        (three_answers - answer_len - 1, 1),
        (0, 0),
    ] {
        let m = serve(&s, &layout, true, max_len, KEEP);
        assert!(m.metadata.truncation, "max_len {max_len}");
        assert_eq!(m.answers.len(), kept, "max_len {max_len}");
        assert_eq!((m.authorities.len(), m.additionals.len()), (0, 0));
        assert!(m.edns.is_some());
    }
}

#[test]
fn negative_answer_too_big_keeps_opt_and_sets_tc() {
    let resp = msg(
        1,
        QR | 3,
        [1, 0, 1, 1],
        &[&q(), &soa(300, 60), &opt(1232, 0, &[])],
    );
    let (s, _, layout) = normalize(&resp);
    let len = layout.message(&s).len();
    let m = serve(&s, &layout, true, len - 1, KEEP);
    assert!(m.metadata.truncation);
    assert_eq!((m.answers.len(), m.authorities.len()), (0, 0));
    assert!(m.edns.is_some());
    let m = serve(&s, &layout, false, len - 11, KEEP);
    assert!(!m.metadata.truncation, "stripping the OPT made it fit");
    assert_eq!(m.authorities.len(), 1);
}

/// Found by the `reply` fuzz target: an owner name that is a compression pointer into the
/// header (offset 0) reads the upstream's ID and flags as labels: `\x03a\x81\x80` then the
/// root (QDCOUNT's high byte). The served copy carries the client's ID instead, so the same
/// pointer there reads 0x42 as a label length byte of the reserved type 01: the reply cannot
/// be decoded. RFC 1035 §4.1.4 pointers name a prior occurrence of a name, which the header
/// never holds; the upstream answer validator refuses pointers that do not aim after the
/// header and before the name, so this holds.
#[test]
fn an_owner_pointing_into_the_header_is_refused_or_served_decodable() {
    let resp = msg(
        0x0361,
        QR,
        [1, 1, 0, 0],
        &[&question("a", rtype::A, class::IN), &a(&[0xC0, 0], 60, 1)],
    );
    assert!(
        Message::from_vec(&resp).is_ok(),
        "the upstream answer itself decodes"
    );
    let mut stored = Vec::new();
    let Ok((_, layout)) = normalize_response(&resp, &mut stored) else {
        return;
    };
    let client = Client {
        header: ClientHeader {
            id: 0x4242,
            flags: flag::RD,
            dnssec_ok: false,
        },
        question: &question("a", rtype::A, class::IN),
        has_edns: false,
        max_len: PLAIN_UDP_SIZE,
    };
    let mut out = Vec::new();
    write_reply(&stored, &layout, &client, TtlRewrite::Fixed(30), &mut out);
    Message::from_vec(&out).unwrap();
}

/// Found by the `response` fuzz target: a CNAME target that ends in a pointer to the last
/// byte of its own record's TTL (0x3c, read as a 60-byte label). The pointer aims backwards
/// and after the header, but the bytes it aims at are not a name: once the TTLs are rewritten
/// the message no longer parses. Pointers must aim where an earlier name begins.
#[test]
fn a_pointer_into_a_ttl_is_refused_or_normalises_to_a_message_that_parses() {
    let resp = hex(
        "42428180000100020001000303777777076578616d706c6504746573740000010001c00c000500010000\
         003c000b087265676973747279c02bc02e00010001800000010004c612010ac0100002000100000e1000\
         06036e7331c010c0550001000100000e100004c61201fb0000291000000000000000c00c000100010000\
         003c0004c6120909",
    );
    let mut stored = Vec::new();
    let Ok((_, layout)) = normalize_response(&resp, &mut stored) else {
        return;
    };
    let mut again = Vec::new();
    let message = layout.message(&stored).to_vec();
    assert!(
        normalize_response(&message, &mut again).is_ok(),
        "a normalised message does not parse again"
    );
}

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("00"), 16).unwrap_or(0))
        .collect()
}
