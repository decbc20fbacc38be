//! The validation and scope rules of `normalize_for_zone` on hand-built messages: each kind
//! of malformed answer, valid compression at its limits, the chain rule, the zone rule, and
//! the options of our OPT giving way to the client's size limit.

use super::*;
use hickory_proto::op::Message;

const QR: u16 = flag::QR | flag::RD | flag::RA;
/// Where the first record starts after the question `q()` (12 + 13 + 4).
const FIRST_RR: u8 = 29;

fn q() -> Vec<u8> {
    question("example.com", rtype::A, class::IN)
}

fn a(owner: &[u8], last: u8) -> Vec<u8> {
    rr(owner, rtype::A, class::IN, 300, &[192, 0, 2, last])
}

fn normalize_in(zone: &str, resp: &[u8]) -> Result<(Vec<u8>, Analysis, Layout), WireError> {
    let mut out = Vec::new();
    let (analysis, layout) = normalize_for_zone(resp, &name(zone), &mut out)?;
    Ok((out, analysis, layout))
}

/// The records of a normalised answer as hickory decodes them: (owner, type) per section.
fn sections(stored: &[u8], layout: &Layout) -> [Vec<(String, u16)>; 3] {
    let m = Message::from_vec(layout.message(stored)).unwrap();
    let list = |rs: &[hickory_proto::rr::Record]| {
        rs.iter()
            .map(|r| (r.name.to_ascii().to_lowercase(), u16::from(r.record_type())))
            .collect()
    };
    [list(&m.answers), list(&m.authorities), list(&m.additionals)]
}

#[test]
fn malformed_answers_are_rejected() {
    let ptr = |at: u8| [0xC0, at];
    let mut long_q = Vec::new();
    for _ in 0..4 {
        long_q.push(61);
        long_q.extend_from_slice(&[b'x'; 61]);
    }
    long_q.extend_from_slice(&[0, 0, 1, 0, 1]); // 249 bytes of name: the longest that fits is 255
    let over_255 = [&[6u8, b'a', b'b', b'c', b'd', b'e', b'f'][..], &ptr(12)].concat();
    let cname_off_end = rr(&ptr(12), rtype::CNAME, class::IN, 60, &[3, b'w', b'w']);
    let cases: Vec<(&str, Vec<u8>, WireError)> = vec![
        (
            "owner pointing to itself",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&ptr(FIRST_RR), 1)]),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "owner pointing past the end",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&[0xFF, 0xFF], 1)]),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "forward pointer (into its own RDATA)",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&ptr(FIRST_RR + 12), 1)]),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "pointer into the header",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&ptr(4), 1)]),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "pointer into the middle of a label (0x40 type: a letter)",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&ptr(13), 1)]),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "pointer into a TTL (its last byte, 0, read as the root)",
            msg(
                1,
                QR,
                [1, 2, 0, 0],
                &[
                    &q(),
                    &rr(&ptr(12), rtype::A, class::IN, 256, &[192, 0, 2, 1]),
                    &rr(&ptr(12), rtype::NS, class::IN, 60, &ptr(FIRST_RR + 9)),
                ],
            ),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "pointer into TXT text that looks like a name",
            msg(
                1,
                QR,
                [1, 2, 0, 0],
                &[
                    &q(),
                    &rr(&ptr(12), rtype::TXT, class::IN, 60, &[4, 3, b'c', b'o', 0]),
                    &a(&[1, b'x', 0xC0, FIRST_RR + 2 + 10 + 1], 2),
                ],
            ),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "label type 0x80",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &a(&[0x80, 0], 1)]),
            WireError::BadName("reserved label type"),
        ),
        (
            "CNAME target running off the end",
            msg(1, QR, [1, 1, 0, 0], &[&q(), &cname_off_end]),
            WireError::Truncated("RDATA"),
        ),
        (
            "CNAME target pointer past the end",
            msg(
                1,
                QR,
                [1, 1, 0, 0],
                &[
                    &q(),
                    &rr(&ptr(12), rtype::CNAME, class::IN, 60, &[0xC3, 0xFF]),
                ],
            ),
            WireError::BadName("compression pointer not to an earlier name"),
        ),
        (
            "AAAA with 4 bytes",
            msg(
                1,
                QR,
                [1, 1, 0, 0],
                &[
                    &q(),
                    &rr(&ptr(12), rtype::AAAA, class::IN, 60, &[1, 2, 3, 4]),
                ],
            ),
            WireError::BadRdata,
        ),
        (
            "A with 5 bytes",
            msg(
                1,
                QR,
                [1, 1, 0, 0],
                &[
                    &q(),
                    &rr(&ptr(12), rtype::A, class::IN, 60, &[1, 2, 3, 4, 5]),
                ],
            ),
            WireError::BadRdata,
        ),
        (
            "NAPTR with 1 byte",
            msg(
                1,
                QR,
                [1, 1, 0, 0],
                &[&q(), &rr(&ptr(12), 35, class::IN, 60, &[0])],
            ),
            WireError::BadRdata,
        ),
        (
            "SOA without its 20 bytes",
            msg(
                1,
                QR,
                [1, 0, 1, 0],
                &[
                    &q(),
                    &rr(&ptr(12), rtype::SOA, class::IN, 60, &[0, 0, 1, 2, 3]),
                ],
            ),
            WireError::BadRdata,
        ),
        (
            "MX whose name runs into the next record",
            msg(
                1,
                QR,
                [1, 2, 0, 0],
                &[
                    &q(),
                    &rr(&ptr(12), 15, class::IN, 60, &[0, 10, 1]),
                    &a(&[b'x', 0], 1),
                ],
            ),
            WireError::BadRdata,
        ),
        (
            "more records counted than present",
            msg(1, QR, [1, 2, 0, 0], &[&q(), &a(&ptr(12), 1)]),
            WireError::Truncated("record"),
        ),
        (
            "fewer records counted than present",
            msg(
                1,
                QR,
                [1, 1, 0, 0],
                &[&q(), &a(&ptr(12), 1), &a(&ptr(12), 2)],
            ),
            WireError::Trailing,
        ),
        (
            "name over 255 bytes through a pointer",
            msg(1, QR, [1, 1, 0, 0], &[&long_q, &a(&over_255, 1)]),
            WireError::BadName("longer than 255 bytes"),
        ),
    ];
    for (what, resp, expected) in cases {
        assert_eq!(
            normalize_response(&resp, &mut Vec::new()).map(|_| ()),
            Err(expected),
            "{what}"
        );
    }
}

#[test]
fn valid_compression_at_its_limits_is_accepted() {
    let mut long_q = Vec::new();
    for _ in 0..4 {
        long_q.push(61);
        long_q.extend_from_slice(&[b'x'; 61]);
    }
    long_q.extend_from_slice(&[0, 0, 1, 0, 1]);
    // 249 + a 5-byte label = 254 + ... : `abcde` + pointer makes exactly 255 bytes.
    let exactly_255 = [&[5u8, b'a', b'b', b'c', b'd', b'e'][..], &[0xC0, 12]].concat();
    let resp = msg(
        1,
        QR,
        [1, 0, 1, 0],
        &[
            &long_q,
            &rr(&exactly_255, rtype::NS, class::IN, 60, &[0xC0, 12]),
        ],
    );
    assert!(
        normalize_response(&resp, &mut Vec::new()).is_ok(),
        "a 255-byte name"
    );

    // A pointer to a name that itself ends in a pointer, each strictly backwards, and a
    // CNAME target compressed against the CNAME's own owner.
    let cname = rr(
        &[0xC0, 12],
        rtype::CNAME,
        class::IN,
        60,
        &[3, b'w', b'w', b'w', 0xC0, 12],
    );
    let target_at = FIRST_RR + 12;
    let resp = msg(
        1,
        QR,
        [1, 2, 0, 0],
        &[&q(), &cname, &a(&[0xC0, target_at], 7)],
    );
    let (stored, analysis, layout) = normalize_in(".", &resp).unwrap();
    assert_eq!(analysis.dropped, 0);
    let [an, ..] = sections(&stored, &layout);
    assert_eq!(
        an,
        vec![
            ("example.com.".to_string(), rtype::CNAME),
            ("www.example.com.".to_string(), rtype::A)
        ]
    );

    // A pointer to a place where a name begins with a pointer: the owner of the second
    // record (at 29, itself a pointer to the question) is a name read earlier.
    let resp = msg(
        1,
        QR,
        [1, 2, 0, 0],
        &[&q(), &a(&[0xC0, 12], 1), &a(&[0xC0, FIRST_RR], 2)],
    );
    let (stored, _, layout) = normalize_in(".", &resp).unwrap();
    let [an, ..] = sections(&stored, &layout);
    assert_eq!(
        an,
        vec![
            ("example.com.".to_string(), rtype::A),
            ("example.com.".to_string(), rtype::A)
        ]
    );
}

#[test]
fn answer_section_keeps_only_the_question_chain() {
    // The qname's A (16 bytes at 29), an unrelated record owned by x.www.example.com (at 45),
    // the CNAME to www.example.com, and www.example.com's A, whose owner is compressed into
    // the unrelated record: it must be re-encoded once that one is dropped.
    let unrelated_at = FIRST_RR + 16;
    let cname = rr(
        &[0xC0, 12],
        rtype::CNAME,
        class::IN,
        60,
        &[3, b'w', b'w', b'w', 0xC0, 12],
    );
    let resp = msg(
        1,
        QR,
        [1, 4, 0, 0],
        &[
            &q(),
            &a(&[0xC0, 12], 1),
            &a(&name("x.www.example.com"), 66),
            &cname,
            &a(&[0xC0, unrelated_at + 2], 7),
        ],
    );
    let (stored, analysis, layout) = normalize_in(".", &resp).unwrap();
    assert_eq!(analysis.dropped, 1);
    let [an, ..] = sections(&stored, &layout);
    assert_eq!(
        an,
        vec![
            ("example.com.".to_string(), rtype::A),
            ("example.com.".to_string(), rtype::CNAME),
            ("www.example.com.".to_string(), rtype::A)
        ]
    );
    let unrelated = name("evil.example.org");

    // Out of order: the target's record first, then the CNAME; kept after a second walk,
    // and the record after the dropped one re-encoded so its pointer does not dangle.
    let cname = rr(
        &[0xC0, 12],
        rtype::CNAME,
        class::IN,
        60,
        &name("cdn.example.net"),
    );
    let resp = msg(
        1,
        QR,
        [1, 3, 0, 0],
        &[
            &q(),
            &a(&name("cdn.example.net"), 5),
            &a(&unrelated, 66),
            &cname,
        ],
    );
    let (stored, analysis, layout) = normalize_in(".", &resp).unwrap();
    assert_eq!(analysis.dropped, 1);
    let [an, ..] = sections(&stored, &layout);
    assert_eq!(
        an,
        vec![
            ("cdn.example.net.".to_string(), rtype::A),
            ("example.com.".to_string(), rtype::CNAME)
        ]
    );
}

#[test]
fn a_dname_on_the_chain_is_kept_with_its_synthesised_cname() {
    let qn = question("www.example.com", rtype::A, class::IN);
    let dname = rr(
        &name("example.com"),
        39,
        class::IN,
        60,
        &name("example.net"),
    );
    let cname = rr(
        &[0xC0, 12],
        rtype::CNAME,
        class::IN,
        60,
        &name("www.example.net"),
    );
    let resp = msg(
        1,
        QR,
        [1, 4, 0, 0],
        &[
            &qn,
            &dname,
            &cname,
            &a(&name("www.example.net"), 1),
            &a(&name("other.example.net"), 2),
        ],
    );
    let (stored, analysis, layout) = normalize_in(".", &resp).unwrap();
    assert_eq!(analysis.dropped, 1);
    let [an, ..] = sections(&stored, &layout);
    assert_eq!(an.len(), 3);
    assert!(an.iter().all(|(n, _)| n != "other.example.net."));
}

#[test]
fn other_sections_keep_only_names_in_the_zone() {
    let ns = rr(
        &[0xC0, 12],
        rtype::NS,
        class::IN,
        60,
        &name("ns.example.com"),
    );
    let ns_at = FIRST_RR + 16 + 12;
    let resp = msg(
        1,
        QR,
        [1, 1, 2, 3],
        &[
            &q(),
            &a(&[0xC0, 12], 1),
            &ns,
            &rr(&name("org"), rtype::NS, class::IN, 60, &name("a.org")),
            &a(&name("a.org"), 9),
            &a(&[0xC0, ns_at], 8),
            &opt(1232, 0, &[]),
        ],
    );
    let (stored, analysis, layout) = normalize_in("example.com", &resp).unwrap();
    assert_eq!(analysis.dropped, 2);
    let [an, ns_section, ar] = sections(&stored, &layout);
    assert_eq!(an.len(), 1);
    assert_eq!(ns_section, vec![("example.com.".to_string(), rtype::NS)]);
    assert_eq!(ar, vec![("ns.example.com.".to_string(), rtype::A)]);
    // The root zone keeps them all.
    let (_, analysis, _) = normalize_in(".", &resp).unwrap();
    assert_eq!(analysis.dropped, 0);
}

#[test]
fn ede_options_give_way_before_any_record() {
    let text = vec![b'x'; 3000];
    let ede = option(15, &[&[0u8, 22][..], &text].concat());
    let answers: Vec<Vec<u8>> = (1..=3).map(|i| a(&[0xC0, 12], i)).collect();
    let resp = msg(
        1,
        QR,
        [1, 3, 0, 1],
        &[
            &q(),
            &answers[0],
            &answers[1],
            &answers[2],
            &opt(1232, 0, &ede),
        ],
    );
    let mut stored = Vec::new();
    let (_, layout) = normalize_response(&resp, &mut stored).unwrap();
    let question = q();
    for (has_edns, max_len) in [(true, 512), (true, 1232), (false, 512), (true, 65535)] {
        let client = Client {
            header: ClientHeader {
                id: 7,
                flags: flag::RD,
                dnssec_ok: false,
            },
            question: &question,
            has_edns,
            max_len,
        };
        let mut out = Vec::new();
        write_reply(&stored, &layout, &client, TtlRewrite::Fixed(5), &mut out);
        assert!(out.len() <= max_len, "{} > {max_len}", out.len());
        let m = Message::from_vec(&out).unwrap();
        assert_eq!(m.answers.len(), 3, "answers kept at {max_len}");
        assert!(!m.metadata.truncation);
        assert_eq!(m.edns.is_some(), has_edns);
        if max_len == 65535 {
            assert!(out.len() > 3000, "the EDE is kept when it fits");
        }
    }
}
