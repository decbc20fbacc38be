//! Which sources are answered (`listen.allow`): on loopback, 127.0.0.2 and 127.0.0.3 are two
//! different clients, one inside the list and one outside it.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nodedns::Hot;
use support::client::{self, answer_a};
use support::fake_upstream::FakeUpstream;
use support::nodedns::{Nodedns, config, zone};
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(10);

async fn ask_from(source: &str, to: SocketAddr, id: u16) -> UdpSocket {
    let sock = UdpSocket::bind(format!("{source}:0")).await.unwrap();
    let query = client::QueryBuilder::new("registry.test", RecordType::A)
        .id(id)
        .build();
    sock.send_to(&query, to).await.unwrap();
    sock
}

async fn reply(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(WAIT, sock.recv(&mut buf))
        .await
        .expect("a reply")
        .unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn sources_outside_the_allow_list_get_refused_or_nothing() {
    let up = FakeUpstream::start().await;
    up.add_a("registry.test.", Ipv4Addr::new(198, 18, 0, 10), 300);
    for action in ["refuse", "drop"] {
        let toml = config(&zone(".", &[up.addr()], "")).replace(
            "workers = 1\n",
            &format!("workers = 1\nallow = [\"127.0.0.2/32\"]\ndeny_action = \"{action}\"\n"),
        );
        let ns = Nodedns::start(&toml).await;
        let asked_before = up.udp_queries();

        // The source in the list is served as ever.
        let inside = ask_from("127.0.0.2", ns.addr, 7).await;
        let answer = Message::from_vec(&reply(&inside).await).unwrap();
        assert_eq!(answer_a(&answer), vec![Ipv4Addr::new(198, 18, 0, 10)]);

        // The other one: REFUSED from the header alone, or nothing at all.
        let outside = ask_from("127.0.0.3", ns.addr, 0x4242).await;
        if action == "refuse" {
            let refused = reply(&outside).await;
            assert_eq!(refused.len(), 12, "the header alone: {refused:?}");
            let m = Message::from_vec(&refused).unwrap();
            assert_eq!(m.metadata.id, 0x4242);
            assert_eq!(m.metadata.response_code, ResponseCode::Refused);
            assert!(m.queries.is_empty());
            assert_eq!(ns.stats().get(Hot::DeniedRefused), 1);
        } else {
            let until = tokio::time::Instant::now() + WAIT;
            while ns.stats().get(Hot::DeniedDropped) == 0 {
                assert!(
                    tokio::time::Instant::now() < until,
                    "the drop was not counted"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Counted before a reply would have been sent: give one the time to arrive.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut buf = [0u8; 512];
            assert!(
                outside.try_recv(&mut buf).is_err(),
                "a dropped source got bytes"
            );
            assert_eq!(ns.stats().get(Hot::DeniedRefused), 0);
        }
        // Neither cost the upstream a query: only the served source's reached it.
        assert_eq!(up.udp_queries() - asked_before, 1);
        ns.shutdown().await;
    }
}

#[test]
fn a_bad_allow_list_is_refused_with_every_bad_entry_named() {
    let toml = config("[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:53\"]\n").replace(
        "workers = 1\n",
        "workers = 1\nallow = [\"10.1.2.3/8\", \"fc00::/7\", \"nonsense\"]\ndeny_action = \"ignore\"\n",
    );
    let err = nodedns::config::parse_str(&toml, "acl.toml")
        .unwrap_err()
        .to_string();
    assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
    assert!(err.contains("\"nonsense\": not an address block"), "{err}");
    assert!(err.contains("listen.deny_action"), "{err}");
    assert!(
        !err.contains("fc00::/7"),
        "a good entry is not named: {err}"
    );
}
