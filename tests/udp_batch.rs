//! The batched UDP loop, end to end on loopback: queries that queue up while the loop is busy
//! are read many per system call, and every client still gets exactly its own answers (ID,
//! question case), with hits, misses and junk mixed in one batch.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use support::client::{self, QueryBuilder, answer_a};
use support::fake_upstream::FakeUpstream;
use support::nodedns::Nodedns;

const HOT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const COLD: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Receives on `sock` until `want` datagrams arrived or 3 s passed (blocking: the server runs
/// on another thread).
fn collect(sock: &UdpSocket, want: usize) -> Vec<Message> {
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while got.len() < want {
        let Ok(n) = sock.recv(&mut buf) else { break };
        got.push(Message::from_vec(&buf[..n]).unwrap());
    }
    got
}

/// Many clients, each firing 100 hits without waiting: more than one batch each, all queued
/// in the kernel at once. Each client gets 100 answers, one per ID it used, with its own
/// spelling of the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_hits_is_answered_to_each_client_with_its_own_id_and_case() {
    let up = FakeUpstream::start().await;
    up.add_a("hot.example.test.", HOT, 300);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    client::query_udp(ns.addr, "hot.example.test", RecordType::A, None)
        .await
        .unwrap();
    let (addr, clients) = (ns.addr, 4usize);
    let answers = tokio::task::spawn_blocking(move || {
        let socks: Vec<UdpSocket> = (0..clients)
            .map(|_| {
                let s = UdpSocket::bind("127.0.0.1:0").unwrap();
                s.connect(addr).unwrap();
                s
            })
            .collect();
        let mut sent = HashMap::new();
        for (c, sock) in socks.iter().enumerate() {
            for i in 0..100u16 {
                let q = QueryBuilder::new("hot.example.test", RecordType::A)
                    .id(c as u16 * 1000 + i)
                    .random_case();
                sent.insert(q.message().metadata.id, q.name().to_ascii());
                sock.send(&q.build()).unwrap();
            }
        }
        let got: Vec<Vec<Message>> = socks.iter().map(|s| collect(s, 100)).collect();
        (sent, got)
    });
    let (sent, got) = answers.await.unwrap();
    for (c, replies) in got.iter().enumerate() {
        assert_eq!(replies.len(), 100, "client {c} got every answer");
        let mut ids: Vec<u16> = replies.iter().map(|m| m.metadata.id).collect();
        ids.sort_unstable();
        let want: Vec<u16> = (0..100).map(|i| c as u16 * 1000 + i).collect();
        assert_eq!(ids, want, "client {c} got its own IDs, each once");
        for m in replies {
            assert_eq!(m.queries[0].name().to_ascii(), sent[&m.metadata.id]);
            assert_eq!(answer_a(m), vec![HOT]);
        }
    }
    assert_eq!(up.udp_queries(), 1, "every burst query was a hit");
    ns.shutdown().await;
}

/// One batch holding a hit, a miss, a short packet and another hit: the hits come back at
/// once, the miss when upstream answers, the junk never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_misses_and_junk_in_one_batch_each_get_their_due() {
    let up = FakeUpstream::start().await;
    up.add_a("hot.example.test.", HOT, 300);
    up.add_a("cold.example.test.", COLD, 300);
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    client::query_udp(ns.addr, "hot.example.test", RecordType::A, None)
        .await
        .unwrap();
    let addr = ns.addr;
    let got = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(addr).unwrap();
        let hot = |id| QueryBuilder::new("hot.example.test", RecordType::A).id(id);
        sock.send(&hot(1).build()).unwrap();
        let cold = QueryBuilder::new("cold.example.test", RecordType::A).id(2);
        sock.send(&cold.build()).unwrap();
        sock.send(&[0xab; 5]).unwrap();
        sock.send(&hot(3).build()).unwrap();
        collect(&sock, 4)
    })
    .await
    .unwrap();
    let mut by_id: Vec<(u16, Vec<Ipv4Addr>)> =
        got.iter().map(|m| (m.metadata.id, answer_a(m))).collect();
    by_id.sort();
    assert_eq!(by_id, vec![(1, vec![HOT]), (2, vec![COLD]), (3, vec![HOT])]);
    ns.shutdown().await;
}
