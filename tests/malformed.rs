//! Bad input from clients: every malformed packet gets its documented treatment (a
//! well-formed error reply, or a counted drop) and the server keeps answering.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nodedns::DropReason;
use support::client::{self, answer_a};
use support::fake_upstream::FakeUpstream;
use support::nodedns::Nodedns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ID: [u8; 2] = [0xAB, 0xCD];

/// A header with RD set and the given flags byte 2 (QR/opcode) and counts.
fn header(flags_hi: u8, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = ID.to_vec();
    h.extend_from_slice(&[flags_hi | 0x01, 0x00]);
    for c in [qd, an, ns, ar] {
        h.extend_from_slice(&c.to_be_bytes());
    }
    h
}

/// `registry.test. A IN` in wire form.
fn question() -> Vec<u8> {
    let mut q = vec![8];
    q.extend_from_slice(b"registry");
    q.push(4);
    q.extend_from_slice(b"test");
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn packet(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// An OPT record with the given EDNS version.
fn opt(version: u8) -> Vec<u8> {
    vec![0, 0, 41, 0x04, 0xD0, 0, version, 0, 0, 0, 0]
}

enum Expect {
    Reply(ResponseCode),
    Drop(DropReason),
}

async fn assert_still_serving(addr: SocketAddr) {
    let r = client::query_udp(addr, "registry.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![Ipv4Addr::new(198, 18, 0, 10)]);
}

#[tokio::test]
async fn malformed_udp_queries_get_their_documented_treatment() {
    let up = FakeUpstream::start().await;
    up.add_a("registry.test.", Ipv4Addr::new(198, 18, 0, 10), 300);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let q = question();
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "truncated header",
            ID.to_vec(),
            Expect::Drop(DropReason::Short),
        ),
        (
            "11-byte header",
            header(0, 1, 0, 0, 0)[..11].to_vec(),
            Expect::Drop(DropReason::Short),
        ),
        (
            "QR=1",
            packet(&[&header(0x80, 1, 0, 0, 0), &q]),
            Expect::Drop(DropReason::Response),
        ),
        (
            "label length past the end",
            packet(&[&header(0, 1, 0, 0, 0), &[40, b'a', b'b', 0, 0, 1, 0, 1]]),
            Expect::Reply(ResponseCode::FormErr),
        ),
        (
            "label longer than 63",
            packet(&[&header(0, 1, 0, 0, 0), &[64], &[b'a'; 64], &[0, 0, 1, 0, 1]]),
            Expect::Reply(ResponseCode::FormErr),
        ),
        (
            "compression loop in qname",
            packet(&[&header(0, 1, 0, 0, 0), &[0xC0, 12, 0, 1, 0, 1]]),
            Expect::Reply(ResponseCode::FormErr),
        ),
        (
            "QDCOUNT 0",
            header(0, 0, 0, 0, 0),
            Expect::Reply(ResponseCode::FormErr),
        ),
        (
            "QDCOUNT 2",
            packet(&[&header(0, 2, 0, 0, 0), &q, &q]),
            Expect::Reply(ResponseCode::FormErr),
        ),
        (
            "garbage after the question",
            packet(&[&header(0, 1, 0, 0, 0), &q, b"garbage"]),
            Expect::Reply(ResponseCode::FormErr),
        ),
        (
            "opcode STATUS",
            packet(&[&header(2 << 3, 1, 0, 0, 0), &q]),
            Expect::Reply(ResponseCode::NotImp),
        ),
        (
            "EDNS version 1",
            packet(&[&header(0, 1, 0, 0, 1), &q, &opt(1)]),
            Expect::Reply(ResponseCode::BADVERS),
        ),
        (
            "two OPT records",
            packet(&[&header(0, 1, 0, 0, 2), &q, &opt(0), &opt(0)]),
            Expect::Reply(ResponseCode::FormErr),
        ),
    ];
    for (what, pkt, expect) in cases {
        let reply =
            client::exchange_udp_raw_timeout(ns.addr, &pkt, Duration::from_millis(300)).await;
        match expect {
            Expect::Drop(reason) => {
                assert!(reply.is_none(), "{what}: expected no reply");
                assert!(ns.stats().dropped(reason) > 0, "{what}: drop not counted");
            }
            Expect::Reply(rcode) => {
                let raw = reply.unwrap_or_else(|| panic!("{what}: no reply"));
                let msg = Message::from_vec(&raw).unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(msg.metadata.id, 0xABCD, "{what}");
                // Compared as numbers: BADVERS and BADSIG share code 16 (RFC 6891, RFC 8945).
                assert_eq!(
                    u16::from(msg.metadata.response_code),
                    u16::from(rcode),
                    "{what}"
                );
            }
        }
        assert_still_serving(ns.addr).await;
    }
    // Nothing malformed was forwarded.
    assert_eq!(up.udp_queries() + up.tcp_queries(), 1);
}

/// Sends raw bytes on a fresh TCP connection and reports whether the server closed it.
async fn tcp_closed_after(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 512];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn bad_tcp_frames_close_only_that_connection() {
    let up = FakeUpstream::start().await;
    up.add_a("registry.test.", Ipv4Addr::new(198, 18, 0, 10), 300);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;

    // A length prefix of 65535 announces more than any query can be.
    assert!(tcp_closed_after(ns.addr, &[0xFF, 0xFF, 0, 0, 0, 0]).await);
    // A frame shorter than a DNS header.
    assert!(tcp_closed_after(ns.addr, &[0, 4, 1, 2, 3, 4]).await);
    assert_eq!(ns.stats().dropped(DropReason::TcpFrame), 2);

    // A malformed query inside a good frame gets FORMERR and the connection stays usable.
    let bad = packet(&[&header(0, 2, 0, 0, 0), &question(), &question()]);
    let good = client::QueryBuilder::new("registry.test", RecordType::A).build();
    let replies = client::exchange_tcp_raw(ns.addr, &[bad, good])
        .await
        .unwrap();
    let first = Message::from_vec(&replies[0]).unwrap();
    assert_eq!(first.metadata.response_code, ResponseCode::FormErr);
    let second = Message::from_vec(&replies[1]).unwrap();
    assert_eq!(answer_a(&second), vec![Ipv4Addr::new(198, 18, 0, 10)]);
    assert_still_serving(ns.addr).await;
}

#[tokio::test]
async fn tcp_connections_beyond_the_cap_are_closed_and_idle_ones_time_out() {
    let up = FakeUpstream::start().await;
    up.add_a("registry.test.", Ipv4Addr::new(198, 18, 0, 10), 300);
    let toml = support::nodedns::config(&format!(
        "{}\n",
        support::nodedns::zone(".", &[up.addr()], "")
    ))
    .replace(
        "workers = 1",
        "workers = 1\ntcp_max_connections = 2\ntcp_idle_timeout = \"300ms\"",
    );
    let ns = Nodedns::start(&toml).await;
    let _a = TcpStream::connect(ns.addr).await.unwrap();
    let _b = TcpStream::connect(ns.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The third is accepted by the kernel, then closed by nodedns.
    assert!(tcp_closed_after(ns.addr, &[]).await);
    assert!(ns.stats().dropped(DropReason::TcpConnections) >= 1);
    // After the idle timeout the first two are gone and a new client gets in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = client::query_tcp(ns.addr, "registry.test", RecordType::A)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![Ipv4Addr::new(198, 18, 0, 10)]);
}
