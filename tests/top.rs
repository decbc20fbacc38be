//! `nodedns top` as an operator runs it: the built binary reads the admin endpoint of an
//! in-process nodedns after a scripted mix of queries from three loopback sources.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::QueryBuilder;
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config_with_admin, zone};
use tokio::net::UdpSocket;

/// A client socket on `ip`, talking to `server` only.
async fn client_on(last: u8, server: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, last), 0))
        .await
        .unwrap();
    sock.connect(server).await.unwrap();
    sock
}

/// Sends a query for `name` from `sock` and waits (at most 5 s) for its reply's rcode.
async fn ask(sock: &UdpSocket, name: &str, id: u16) -> u16 {
    let query = QueryBuilder::new(name, RecordType::A).id(id).build();
    sock.send(&query).await.unwrap();
    let mut buf = [0u8; 1500];
    let len = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    assert!(len >= 12);
    u16::from(buf[3] & 0x0f)
}

/// What `nodedns top --admin ADDR` with `extra` printed; it must succeed.
async fn top(admin: SocketAddr, extra: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nodedns"));
    command
        .args(["top", "--admin", &admin.to_string()])
        .args(extra);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nodedns top failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The keys of the table titled `title` in `nodedns top`'s text, in order.
fn table_keys(text: &str, title: &str) -> Vec<String> {
    let after = text
        .split_once(&format!("\n{title}"))
        .unwrap_or_else(|| panic!("no table {title:?} in:\n{text}"))
        .1;
    after
        .lines()
        .skip(2)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().last().unwrap().to_owned())
        .collect()
}

fn json_keys(report: &serde_json::Value, board: &str) -> Vec<String> {
    report[board]
        .as_array()
        .unwrap_or_else(|| panic!("no {board} in {report}"))
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn top_names_the_heaviest_source_and_the_most_nxdomain_name_first() {
    let upstream = FakeUpstream::start().await;
    upstream.add_a("app.example.", Ipv4Addr::new(198, 18, 0, 1), 300);
    let expansion = "registry.example.com.gitlab.svc.cluster.local.";
    for name in ["gone.example.", "missing.example.", expansion] {
        upstream.set_behavior_for(name, Behavior::Rcode(ResponseCode::NXDomain));
    }
    let n = Nodedns::start(&config_with_admin(&zone(".", &[upstream.addr()], ""))).await;
    let admin = n.admin.unwrap();
    let clients = [
        client_on(2, n.addr).await,
        client_on(3, n.addr).await,
        client_on(4, n.addr).await,
    ];
    // Rounds in which .3 asks three times and .2 and .4 once each: 2400 queries, about 150
    // of them sampled (1 in 16), so .3's share is far beyond sampling's spread.
    let mut id = 0u16;
    for _ in 0..400 {
        for who in [1, 0, 1, 2, 1] {
            id = id.wrapping_add(1);
            assert_eq!(ask(&clients[who], "app.example.", id).await, 0);
        }
    }
    // NXDOMAIN replies, sampled 1 in 16 as well: gone.example 900 times (from .3 and .2),
    // the search-list expansion of registry.example.com 400 (from .4), missing.example 150
    // (from .2). In all, .3 sends 1700 queries, .2 950 and .4 800.
    for (name, who, times) in [
        ("gone.example.", 1, 500),
        ("gone.example.", 0, 400),
        ("missing.example.", 0, 150),
        (expansion, 2, 400),
    ] {
        for _ in 0..times {
            id = id.wrapping_add(1);
            assert_eq!(ask(&clients[who], name, id).await, 3, "{name}");
        }
    }

    let text = top(admin, &["--seconds", "60"]).await;
    let by_queries = table_keys(&text, "Clients by queries");
    assert_eq!(
        by_queries.first().map(String::as_str),
        Some("127.0.0.3"),
        "{text}"
    );
    assert_eq!(by_queries.len(), 3, "{text}");
    let nxdomain = table_keys(&text, "Names by NXDOMAIN");
    assert_eq!(
        nxdomain.first().map(String::as_str),
        Some("gone.example"),
        "{text}"
    );
    let bases = table_keys(&text, "NXDOMAIN search-list expansions by base name");
    assert_eq!(bases, ["registry.example.com"], "{text}");
    assert!(text.contains("sampled 1 in 16"), "{text}");

    let json = top(admin, &["--seconds", "60", "--limit", "5", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json_keys(&report, "clients_by_queries"), by_queries);
    assert_eq!(json_keys(&report, "names_by_nxdomain"), nxdomain);
    assert_eq!(json_keys(&report, "search_bases"), bases);
    let gone = report["names_by_nxdomain"][0]["count"].as_u64().unwrap();
    assert!(gone.abs_diff(900) < 300, "{json}");
    assert_eq!(report["query_sample"], 16);
    assert!(report["covered_seconds"].as_u64().unwrap() <= 60, "{json}");
    // Misses: the first query of each name (app, gone, missing) and whatever the negative
    // cache did not answer; every client that missed is named, none that did not.
    let missed = json_keys(&report, "clients_by_misses");
    assert!(missed.iter().all(|k| k.starts_with("127.0.0.")), "{json}");
    assert!(missed.contains(&"127.0.0.3".to_owned()), "{json}");
    // No client IP in the metrics.
    let (status, metrics) = support::scrape::get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(!metrics.contains("127.0.0.3"), "{metrics}");
}

#[tokio::test]
async fn bad_windows_and_an_absent_daemon_are_told() {
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns"))
        .args(["top", "--seconds", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap's usage error");
    // A port nothing listens on: exit 2 and say where it looked.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns"))
        .args(["top", "--admin", &addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&addr.to_string()), "{stderr}");
}
