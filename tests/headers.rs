//! Reply headers, end to end on loopback (RFC 1035 §4.1.1): whatever the upstream's header
//! said, every reply carries the client's ID and RD, RA=1, AA=0, the client's CD, TC only when
//! it is cut, and AD only for a client that asked for it (RFC 6840 §5.8). An unknown opcode
//! gets NOTIMP with only the ID, opcode and RD echoed.
//!
//! The upstream here is an authoritative server that echoes neither RD nor CD and offers no
//! recursion (AA=1, RA=0), the header a forwarder must not pass on. Each case runs for a
//! client with RD=1 and one with RD=0, which are different cache keys.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use hickory_proto::op::Message;
use support::client::{exchange_tcp_raw, exchange_udp_raw};
use support::fake_upstream::{Behavior, FakeUpstream, HeaderFlags};
use support::nodedns::{Nodedns, config, zone};
use tokio::time::advance;

const QR: u16 = 0x8000;
const OPCODE: u16 = 0x7800;
const AA: u16 = 0x0400;
const TC: u16 = 0x0200;
const RD: u16 = 0x0100;
const RA: u16 = 0x0080;
const AD: u16 = 0x0020;
const CD: u16 = 0x0010;

const A: u16 = 1;
const TXT: u16 = 16;
const AXFR: u16 = 252;
const IN: u16 = 1;
const CH: u16 = 3;

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const SERVFAIL: u16 = 2;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;

/// What an authoritative server that ignores RD and CD sets, and a forwarder must not pass on.
const AUTHORITATIVE: HeaderFlags = HeaderFlags {
    aa: Some(true),
    ra: Some(false),
    rd: Some(false),
    ad: None,
    cd: Some(false),
};

/// A client query in wire form.
#[derive(Clone, Copy)]
struct Ask<'a> {
    name: &'a str,
    qtype: u16,
    qclass: u16,
    /// Header flags: RD, CD, AD, opcode.
    flags: u16,
    /// An OPT record, with this DO bit.
    dnssec_ok: Option<bool>,
}

impl<'a> Ask<'a> {
    fn a(name: &'a str, flags: u16) -> Self {
        Ask {
            name,
            qtype: A,
            qclass: IN,
            flags,
            dnssec_ok: None,
        }
    }

    fn build(&self, id: u16) -> Vec<u8> {
        let arcount = u16::from(self.dnssec_ok.is_some());
        let mut q = Vec::new();
        for v in [id, self.flags, 1, 0, 0, arcount] {
            q.extend_from_slice(&v.to_be_bytes());
        }
        for label in self.name.split('.').filter(|l| !l.is_empty()) {
            q.push(u8::try_from(label.len()).unwrap());
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&self.qtype.to_be_bytes());
        q.extend_from_slice(&self.qclass.to_be_bytes());
        if let Some(dnssec_ok) = self.dnssec_ok {
            let do_bit: u8 = if dnssec_ok { 0x80 } else { 0 };
            q.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, do_bit, 0, 0, 0]);
        }
        q
    }
}

/// What a reply must say besides what every reply says (QR=1, the client's ID, opcode, RD and
/// CD, RA=1, AA=0).
#[derive(Clone, Copy, Debug)]
struct Want {
    rcode: u16,
    tc: bool,
    ad: bool,
}

const ANSWER: Want = Want {
    rcode: NOERROR,
    tc: false,
    ad: false,
};

fn rcode(rcode: u16) -> Want {
    Want { rcode, ..ANSWER }
}

fn check(what: &str, query: &[u8], reply: &[u8], want: Want) {
    let id = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let flags = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    assert!(reply.len() >= 12, "{what}: reply of {} bytes", reply.len());
    assert_eq!(id(reply), id(query), "{what}: ID");
    let asked = flags(query);
    let mut expected = QR | (asked & (OPCODE | RD | CD)) | RA | want.rcode;
    if want.tc {
        expected |= TC;
    }
    if want.ad {
        expected |= AD;
    }
    assert_eq!(flags(reply) & AA, 0, "{what}: AA set");
    assert_eq!(
        flags(reply),
        expected,
        "{what}: header flags {:#06x}, expected {expected:#06x}",
        flags(reply)
    );
}

async fn udp(ns: &Nodedns, ask: Ask<'_>, id: u16) -> (Vec<u8>, Vec<u8>) {
    let query = ask.build(id);
    let reply = exchange_udp_raw(ns.addr, &query)
        .await
        .expect("no UDP reply");
    (query, reply)
}

async fn tcp(ns: &Nodedns, ask: Ask<'_>, id: u16) -> (Vec<u8>, Vec<u8>) {
    let query = ask.build(id);
    let mut replies = exchange_tcp_raw(ns.addr, std::slice::from_ref(&query))
        .await
        .unwrap();
    (query, replies.pop().expect("no TCP reply"))
}

/// An upstream with the [`AUTHORITATIVE`] header and nodedns forwarding everything to it.
async fn setup(extra_config: &str) -> (FakeUpstream, Nodedns) {
    let up = FakeUpstream::start().await;
    up.set_header_flags(AUTHORITATIVE);
    up.add_a("registry.example.test.", Ipv4Addr::new(198, 18, 0, 10), 60);
    let ns = Nodedns::start(&config(&format!(
        "{extra_config}\n{}",
        zone(".", &[up.addr()], "")
    )))
    .await;
    (up, ns)
}

#[tokio::test]
async fn forwarded_answers_and_their_hits_have_honest_headers() {
    let (up, ns) = setup("").await;
    for rd in [RD, 0] {
        for cd in [0, CD] {
            let ask = Ask::a("registry.example.test", rd | cd);
            let (q, r) = udp(&ns, ask, 0x1000 | rd | cd).await;
            check(&format!("miss rd={rd:#x} cd={cd:#x}"), &q, &r, ANSWER);
            let (q, r) = udp(&ns, ask, 0x2000 | rd | cd).await;
            check(&format!("hit rd={rd:#x} cd={cd:#x}"), &q, &r, ANSWER);
        }
    }
    assert_eq!(up.udp_queries(), 4, "one miss per (RD, CD) key");
}

#[tokio::test]
async fn tcp_answers_and_their_hits_have_honest_headers() {
    let (up, ns) = setup("").await;
    for rd in [RD, 0] {
        let ask = Ask::a("registry.example.test", rd);
        let (q, r) = tcp(&ns, ask, 0x3000).await;
        check(&format!("TCP miss rd={rd:#x}"), &q, &r, ANSWER);
        let (q, r) = tcp(&ns, ask, 0x3001).await;
        check(&format!("TCP hit rd={rd:#x}"), &q, &r, ANSWER);
    }
    assert_eq!(up.udp_queries() + up.tcp_queries(), 2);
}

#[tokio::test]
async fn nxdomain_and_its_hit_have_honest_headers() {
    let (up, ns) = setup("").await;
    for rd in [RD, 0] {
        let ask = Ask::a("missing.example.test", rd);
        let (q, r) = udp(&ns, ask, 0x4000).await;
        check(&format!("NXDOMAIN rd={rd:#x}"), &q, &r, rcode(NXDOMAIN));
        let (q, r) = udp(&ns, ask, 0x4001).await;
        check(&format!("NXDOMAIN hit rd={rd:#x}"), &q, &r, rcode(NXDOMAIN));
    }
    assert_eq!(up.queries_for("missing.example.test."), 2, "cached (SOA)");
}

#[tokio::test]
async fn truncated_answers_set_tc_and_keep_the_rest_honest() {
    let (up, ns) = setup("").await;
    up.add_many_a("big.example.test.", 40, 300);
    let cut = Want { tc: true, ..ANSWER };
    for rd in [RD, 0] {
        let plain = Ask::a("big.example.test", rd);
        let (q, r) = udp(&ns, plain, 0x5000).await;
        check(&format!("cut miss rd={rd:#x}"), &q, &r, cut);
        let (q, r) = udp(&ns, plain, 0x5001).await;
        check(&format!("cut hit rd={rd:#x}"), &q, &r, cut);
        let edns = Ask {
            dnssec_ok: Some(false),
            ..plain
        };
        let (q, r) = udp(&ns, edns, 0x5002).await;
        check(&format!("EDNS hit rd={rd:#x}"), &q, &r, ANSWER);
        assert_eq!(Message::from_vec(&r).unwrap().answers.len(), 40);
    }
}

#[tokio::test(start_paused = true)]
async fn stale_answers_have_honest_headers() {
    let (up, ns) = setup("[cache]\nstale_max = \"1h\"\nstale_client_timeout = \"1800ms\"").await;
    for rd in [RD, 0] {
        udp(&ns, Ask::a("registry.example.test", rd), 1).await;
    }
    up.set_behavior(Behavior::Drop);
    advance(Duration::from_secs(61)).await;
    for rd in [RD, 0] {
        let (q, r) = udp(&ns, Ask::a("registry.example.test", rd), 0x6000).await;
        check(&format!("stale rd={rd:#x}"), &q, &r, ANSWER);
        let ttl = Message::from_vec(&r).unwrap().answers[0].ttl;
        assert_eq!(ttl, 30, "served stale (RFC 8767)");
    }
}

#[tokio::test(start_paused = true)]
async fn servfail_from_upstream_and_our_own_have_honest_headers() {
    let (mut up, ns) = setup("[cache]\nstale_max = \"0s\"").await;
    up.set_behavior(Behavior::Rcode(hickory_proto::op::ResponseCode::ServFail));
    for rd in [RD, 0] {
        let (q, r) = udp(&ns, Ask::a("registry.example.test", rd), 0x7000).await;
        check(
            &format!("upstream SERVFAIL rd={rd:#x}"),
            &q,
            &r,
            rcode(SERVFAIL),
        );
        let (q, r) = udp(&ns, Ask::a("registry.example.test", rd), 0x7001).await;
        check(
            &format!("cached SERVFAIL rd={rd:#x}"),
            &q,
            &r,
            rcode(SERVFAIL),
        );
    }
    up.stop().await;
    for rd in [RD, 0] {
        let ask = Ask::a("other.example.test", rd | CD);
        let (q, r) = udp(&ns, ask, 0x7002).await;
        check(&format!("our SERVFAIL rd={rd:#x}"), &q, &r, rcode(SERVFAIL));
    }
}

#[tokio::test]
async fn chaos_answers_and_refusals_have_honest_headers() {
    let (_up, ns) = setup("").await;
    for rd in [RD, 0] {
        for cd in [0, CD] {
            let version = Ask {
                name: "version.bind",
                qtype: TXT,
                qclass: CH,
                flags: rd | cd,
                dnssec_ok: None,
            };
            let (q, r) = udp(&ns, version, 0x8000).await;
            check(
                &format!("version.bind rd={rd:#x} cd={cd:#x}"),
                &q,
                &r,
                ANSWER,
            );
            let (q, r) = tcp(&ns, version, 0x8001).await;
            check(&format!("TCP version.bind rd={rd:#x}"), &q, &r, ANSWER);
            let other = Ask {
                name: "authors.bind",
                ..version
            };
            let (q, r) = udp(&ns, other, 0x8002).await;
            check(&format!("CHAOS REFUSED rd={rd:#x}"), &q, &r, rcode(REFUSED));
        }
    }
}

#[tokio::test]
async fn formerr_and_refused_echo_the_clients_rd_and_cd() {
    let (_up, ns) = setup("").await;
    for rd in [RD, 0] {
        let axfr = Ask {
            qtype: AXFR,
            ..Ask::a("example.test", rd | CD)
        };
        let (q, r) = udp(&ns, axfr, 0x9000).await;
        check(&format!("AXFR rd={rd:#x}"), &q, &r, rcode(REFUSED));
        // Garbage after the question: FORMERR, with the question echoed.
        let mut q = Ask::a("registry.example.test", rd | CD).build(0x9001);
        q.extend_from_slice(b"garbage");
        let r = exchange_udp_raw(ns.addr, &q).await.expect("no FORMERR");
        check(&format!("FORMERR rd={rd:#x}"), &q, &r, rcode(FORMERR));
    }
}

#[tokio::test]
async fn unknown_opcode_gets_notimp_with_only_id_opcode_and_rd() {
    let (_up, ns) = setup("").await;
    for rd in [RD, 0] {
        // Opcode 2 (STATUS), with CD and AD set: neither is echoed.
        let ask = Ask::a("registry.example.test", (2 << 11) | rd | CD | AD);
        let (q, r) = udp(&ns, ask, 0xA000).await;
        let flags = u16::from_be_bytes([r[2], r[3]]);
        assert_eq!([r[0], r[1]], [q[0], q[1]], "ID");
        assert_eq!(
            flags,
            QR | (2 << 11) | rd | NOTIMP,
            "rd={rd:#x}: {flags:#06x}"
        );
    }
}

#[tokio::test]
async fn ad_reaches_only_clients_that_set_do_or_ad() {
    let up = FakeUpstream::start().await;
    up.set_header_flags(HeaderFlags {
        ad: Some(true),
        ..AUTHORITATIVE
    });
    up.add_a("signed.example.test.", Ipv4Addr::new(198, 18, 0, 11), 60);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let plain = Ask::a("signed.example.test", RD);
    let with_do = Ask {
        dnssec_ok: Some(true),
        ..plain
    };
    let with_ad = Ask::a("signed.example.test", RD | AD);
    let validated = Want { ad: true, ..ANSWER };
    for (what, ask, want) in [
        ("plain miss", plain, ANSWER),
        ("AD=1 hit of the plain entry", with_ad, validated),
        ("plain hit", plain, ANSWER),
        ("DO=1 miss", with_do, validated),
        ("DO=1 hit", with_do, validated),
    ] {
        let (q, r) = udp(&ns, ask, 0xB000).await;
        check(what, &q, &r, want);
    }
    assert_eq!(up.udp_queries(), 2, "one miss per DO key");
}
