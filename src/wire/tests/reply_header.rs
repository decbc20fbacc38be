//! The reply header rule, as a table: what the answer's header said, what the client asked,
//! and what the client gets.

use super::*;

const QR: u16 = flag::QR;
const AA: u16 = flag::AA;
const TC: u16 = flag::TC;
const RD: u16 = flag::RD;
const RA: u16 = flag::RA;
const AD: u16 = flag::AD;
const CD: u16 = flag::CD;
/// The reserved Z bit (RFC 1035 §4.1.1: must be zero).
const Z: u16 = 0x0040;

const fn opcode(n: u16) -> u16 {
    n << 11
}

/// `(case, answer's flags, client's flags, client's DO, flags the client gets)`.
const CASES: &[(&str, u16, u16, bool, u16)] = &[
    (
        "authoritative upstream",
        QR | AA | RD | RA,
        RD,
        false,
        QR | RD | RA,
    ),
    (
        "upstream dropped RD and RA",
        QR | AA,
        RD,
        false,
        QR | RD | RA,
    ),
    (
        "RD=0 client, upstream set RD",
        QR | RD | RA,
        0,
        false,
        QR | RA,
    ),
    (
        "CD copied from the client",
        QR | RA,
        RD | CD,
        false,
        QR | RD | RA | CD,
    ),
    (
        "upstream's CD not passed",
        QR | RA | CD,
        RD,
        false,
        QR | RD | RA,
    ),
    ("TC kept", QR | TC | RA, RD, false, QR | TC | RD | RA),
    (
        "rcode kept",
        QR | AA | rcode::NXDOMAIN,
        RD,
        false,
        QR | RD | RA | rcode::NXDOMAIN,
    ),
    (
        "AD not for a client without DO or AD",
        QR | RA | AD,
        RD,
        false,
        QR | RD | RA,
    ),
    (
        "AD for a DO client",
        QR | RA | AD,
        RD,
        true,
        QR | RD | RA | AD,
    ),
    (
        "AD for an AD client",
        QR | RA | AD,
        RD | AD,
        false,
        QR | RD | RA | AD,
    ),
    ("AD never invented", QR | RA, AD, true, QR | RA),
    ("Z cleared", QR | RA | Z, RD, false, QR | RD | RA),
    (
        "client's own AA and TC ignored",
        QR | RA,
        RD | AA | TC,
        false,
        QR | RD | RA,
    ),
    (
        "error reply from its rcode",
        rcode::FORMERR,
        RD | CD,
        false,
        QR | RD | RA | CD | rcode::FORMERR,
    ),
    (
        "NOTIMP: opcode and RD only",
        rcode::NOTIMP,
        opcode(2) | RD | CD | AD,
        true,
        QR | opcode(2) | RD | rcode::NOTIMP,
    ),
    (
        "NOTIMP, RD=0",
        rcode::NOTIMP,
        opcode(5),
        false,
        QR | opcode(5) | rcode::NOTIMP,
    ),
];

#[test]
fn reply_header_follows_one_rule() {
    for &(case, answer, asked, dnssec_ok, want) in CASES {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&[0xFF, 0xFF, (answer >> 8) as u8, answer as u8]);
        let client = ClientHeader {
            id: 0x1234,
            flags: asked,
            dnssec_ok,
        };
        set_reply_header(&mut out, &client);
        let got = Header::parse(&out).unwrap();
        assert_eq!(got.id, 0x1234, "{case}: ID");
        assert_eq!(
            got.flags, want,
            "{case}: {:#06x}, want {want:#06x}",
            got.flags
        );
    }
}

#[test]
fn reply_header_leaves_a_buffer_shorter_than_a_header_alone() {
    let client = ClientHeader {
        id: 7,
        flags: RD,
        dnssec_ok: false,
    };
    for len in 0..4 {
        let mut out = vec![0xAA; len];
        set_reply_header(&mut out, &client);
        assert_eq!(out, vec![0xAA; len], "{len} bytes");
    }
}
