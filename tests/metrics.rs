//! The admin endpoint end to end on loopback: `/metrics` after a scripted mix of traffic,
//! `/health`, and `/ready` across start-up and shutdown. Real clock: HTTP and DNS both go
//! through real sockets, and the waits are short.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::{self, answer_a};
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config_with_admin, zone};
use support::scrape::{self, Scrape, get};

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

async fn a(ns: &Nodedns, name: &str) -> hickory_proto::op::Message {
    client::query_udp(ns.addr, name, RecordType::A, None)
        .await
        .unwrap()
}

/// Upstreams: `main`/`backup` for `.`, `stale` for `stale.test.`, `dead` for `down.test.`.
struct Mix {
    main: FakeUpstream,
    backup: FakeUpstream,
    stale: FakeUpstream,
    dead: FakeUpstream,
    ns: Nodedns,
}

async fn start_mix() -> Mix {
    let (main, backup) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let (stale, dead) = (FakeUpstream::start().await, FakeUpstream::start().await);
    for up in [&main, &backup] {
        up.add_a("hit.example.test.", ADDR, 300);
        up.add_a("fail.example.test.", ADDR, 300);
    }
    stale.add_a("old.stale.test.", ADDR, 1);
    dead.set_behavior(Behavior::Drop);
    let zones = [
        zone(".", &[main.addr(), backup.addr()], ""),
        zone("stale.test.", &[stale.addr()], ""),
        zone("down.test.", &[dead.addr()], ""),
    ];
    let toml = config_with_admin(&format!(
        "[cache]\nprefetch = false\nstale_client_timeout = \"200ms\"\n\
         [forward]\nattempts = 2\ndeadline = \"1s\"\ndown_after = 3\nprobe_interval = \"30s\"\n{}",
        zones.concat()
    ));
    let ns = Nodedns::start(&toml).await;
    // Every upstream gets its start-up probe before the mix; `dead` never answers it.
    for up in [&main, &backup, &stale, &dead] {
        wait_for(|| up.probes() == 1).await;
    }
    Mix {
        main,
        backup,
        stale,
        dead,
        ns,
    }
}

/// 12 client queries: 4 cache hits (2 success, 1 denial, 1 stale), 7 misses (1 failed over,
/// 3 to a dead upstream that ends up marked down), 1 too short to answer.
async fn run_mix(m: &Mix) {
    let ns = &m.ns;
    assert_eq!(answer_a(&a(ns, "hit.example.test").await), vec![ADDR]);
    assert_eq!(answer_a(&a(ns, "hit.example.test").await), vec![ADDR]);
    let tcp = client::query_tcp(ns.addr, "hit.example.test", RecordType::A);
    assert_eq!(answer_a(&tcp.await.unwrap()), vec![ADDR]);
    for _ in 0..2 {
        let r = a(ns, "missing.example.test").await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    }
    m.main
        .set_behavior_for("fail.example.test.", Behavior::Drop);
    assert_eq!(answer_a(&a(ns, "fail.example.test").await), vec![ADDR]);
    // Expire the 1 s entry, then make its upstream silent: the answer comes stale.
    a(ns, "old.stale.test").await;
    m.stale.set_behavior(Behavior::Drop);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(answer_a(&a(ns, "old.stale.test").await), vec![ADDR]);
    // Two queries mark `dead` down (two timed-out attempts each); the third finds it down.
    for name in ["d1.down.test", "d2.down.test", "d3.down.test"] {
        let r = a(ns, name).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail, "{name}");
    }
    let short = client::exchange_udp_raw_timeout(ns.addr, &[0, 1, 2], Duration::from_millis(200));
    assert!(short.await.is_none());
    // Let the stale entry's background flight reach its deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_after_a_scripted_mix_shows_what_happened() {
    let m = start_mix().await;
    run_mix(&m).await;
    let admin = m.ns.admin.unwrap();
    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let s = Scrape::parse(&body);
    let (main, backup) = (m.main.addr().to_string(), m.backup.addr().to_string());
    let (stale, dead) = (m.stale.addr().to_string(), m.dead.addr().to_string());

    let req = "nodedns_requests_total";
    assert_eq!(s.sum(req, &[]), 12.0);
    // Hits count under the zone whose query stored the entry: the TCP one under `.`.
    assert_eq!(s.get(req, &[("proto", "tcp"), ("zone", "-")]), 0.0);
    assert_eq!(s.get(req, &[("proto", "tcp"), ("zone", ".")]), 1.0);
    // Only the short packet was answered before routing; `.` had 3 misses and 2 hits.
    assert_eq!(s.get(req, &[("proto", "udp"), ("zone", "-")]), 1.0);
    assert_eq!(s.get(req, &[("proto", "udp"), ("zone", ".")]), 5.0);
    assert_eq!(
        s.get(req, &[("proto", "udp"), ("zone", "stale.test.")]),
        2.0
    );
    assert_eq!(s.get(req, &[("proto", "udp"), ("zone", "down.test.")]), 3.0);

    let rc = "nodedns_responses_total";
    assert_eq!(s.get(rc, &[("rcode", "NOERROR")]), 6.0);
    assert_eq!(s.get(rc, &[("rcode", "NXDOMAIN")]), 2.0);
    assert_eq!(s.get(rc, &[("rcode", "SERVFAIL")]), 3.0);
    for zero in ["FORMERR", "NOTIMP", "REFUSED", "other"] {
        assert_eq!(s.get(rc, &[("rcode", zero)]), 0.0, "{zero}");
    }
    let hits = "nodedns_cache_hits_total";
    assert_eq!(s.sum(hits, &[("type", "success")]), 2.0);
    assert_eq!(s.get(hits, &[("type", "success"), ("zone", ".")]), 2.0);
    assert_eq!(s.get(hits, &[("type", "denial"), ("zone", ".")]), 1.0);
    assert_eq!(s.sum(hits, &[("type", "denial")]), 1.0);
    assert_eq!(
        s.get(hits, &[("type", "stale"), ("zone", "stale.test.")]),
        1.0
    );
    assert_eq!(s.sum(hits, &[("type", "stale")]), 1.0);
    let misses = "nodedns_cache_misses_total";
    assert_eq!(s.sum(misses, &[]), 7.0);
    assert_eq!(s.get(misses, &[("zone", ".")]), 3.0);
    assert_eq!(s.get(misses, &[("zone", "stale.test.")]), 1.0);
    assert_eq!(s.get(misses, &[("zone", "down.test.")]), 3.0);
    assert_eq!(s.get(misses, &[("zone", "-")]), 0.0);
    // The documented hit rate: 4 hits out of 12 queries.
    assert_eq!(s.sum(hits, &[]) / s.sum(req, &[]), 4.0 / 12.0);

    assert!(s.get("nodedns_cache_entries", &[]) >= 4.0);
    assert!(s.get("nodedns_cache_bytes", &[]) > 0.0);
    for zero in [
        "nodedns_cache_evictions_total",
        "nodedns_cache_prefetch_total",
        "nodedns_coalesced_total",
        "nodedns_overload_total",
        "nodedns_spoof_mismatch_total",
        "nodedns_inflight",
    ] {
        assert_eq!(s.get(zero, &[]), 0.0, "{zero}");
    }
    assert!(s.get("nodedns_tcp_connections", &[]) <= 1.0);
    assert_eq!(s.get("nodedns_dropped_total", &[("reason", "short")]), 1.0);
    assert_eq!(s.sum("nodedns_dropped_total", &[]), 1.0);

    let ureq = "nodedns_upstream_requests_total";
    // The start-up probe; hit, missing, fail (dropped); then backup got fail.
    assert_eq!(s.get(ureq, &[("upstream", &main), ("proto", "udp")]), 4.0);
    assert_eq!(s.get(ureq, &[("upstream", &backup), ("proto", "udp")]), 2.0);
    assert_eq!(s.get(ureq, &[("upstream", &main), ("proto", "tcp")]), 0.0);
    let err = "nodedns_upstream_errors_total";
    assert_eq!(s.get(err, &[("upstream", &main), ("kind", "timeout")]), 1.0);
    assert_eq!(
        s.get(err, &[("upstream", &backup), ("kind", "timeout")]),
        0.0
    );
    assert!(s.get(err, &[("upstream", &dead), ("kind", "timeout")]) >= 3.0);
    assert_eq!(
        s.get(err, &[("upstream", &main), ("kind", "servfail")]),
        0.0
    );
    assert!(s.get("nodedns_upstream_failovers_total", &[]) >= 1.0);
    assert_eq!(s.get("nodedns_all_upstreams_down_total", &[]), 1.0);

    let up = "nodedns_upstream_up";
    assert_eq!(s.get(up, &[("upstream", &main)]), 1.0);
    assert_eq!(s.get(up, &[("upstream", &backup)]), 1.0);
    // `stale` timed out twice (one flight, two attempts): not yet `down_after`; `dead` four
    // times.
    assert_eq!(s.get(up, &[("upstream", &stale)]), 1.0);
    assert_eq!(s.get(up, &[("upstream", &dead)]), 0.0);

    // Replies that arrived: main answered hit and missing, backup fail, stale its first miss.
    let count = "nodedns_upstream_duration_seconds_count";
    assert_eq!(s.get(count, &[("upstream", &main)]), 2.0);
    assert_eq!(s.get(count, &[("upstream", &backup)]), 1.0);
    assert_eq!(s.get(count, &[("upstream", &stale)]), 1.0);
    assert_eq!(s.get(count, &[("upstream", &dead)]), 0.0, "registered at 0");
    let bucket = "nodedns_upstream_duration_seconds_bucket";
    assert_eq!(s.get(bucket, &[("upstream", &main), ("le", "2")]), 2.0);
    assert!(
        s.get(
            "nodedns_upstream_duration_seconds_sum",
            &[("upstream", &main)]
        ) < 2.0
    );

    let reloads = "nodedns_config_reloads_total";
    assert_eq!(s.get(reloads, &[("result", "success")]), 0.0);
    assert_eq!(s.get(reloads, &[("result", "failure")]), 0.0);
    let loaded = s.get("nodedns_config_last_reload_success_timestamp_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(loaded > now - 60.0 && loaded <= now, "{loaded} vs {now}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(s.get("nodedns_build_info", &[("version", version)]), 1.0);

    // Every exported metric has HELP text and is documented (and the other way round).
    scrape::assert_matches_docs(&s);
    m.ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_outcomes_are_counted() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodedns.toml");
    let good = config_with_admin(&zone(".", &[up.addr()], ""));
    std::fs::write(&path, &good).unwrap();
    let ns = Nodedns::start_file(&path, Duration::from_secs(3600)).await;
    let admin = ns.admin.unwrap();
    let stamp = "nodedns_config_last_reload_success_timestamp_seconds";
    let first = Scrape::parse(&get(admin, "/metrics").await.1).get(stamp, &[]);
    assert!(first > 0.0);
    std::fs::write(&path, format!("{good}\n[cache]\ncapacity = \"many\"\n")).unwrap();
    assert!(ns.control.reload().await.is_err());
    // The timestamp has whole-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&path, &good).unwrap();
    ns.control.reload().await.unwrap();
    ns.control.reload().await.unwrap();
    let s = Scrape::parse(&get(admin, "/metrics").await.1);
    let reloads = "nodedns_config_reloads_total";
    assert_eq!(s.get(reloads, &[("result", "success")]), 2.0);
    assert_eq!(s.get(reloads, &[("result", "failure")]), 1.0);
    assert!(s.get(stamp, &[]) > first);
    ns.shutdown().await;
}

/// Polls `done` every 10 ms for up to 10 s of real time.
async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_drops_at_shutdown_while_queries_drain() {
    let up = FakeUpstream::start().await;
    up.add_a("ok.example.test.", ADDR, 300);
    up.add_a("slow.example.test.", ADDR, 300);
    let toml = config_with_admin(&zone(".", &[up.addr()], ""));
    let mut ns = Nodedns::start(&toml).await;
    let admin: SocketAddr = ns.admin.unwrap();
    assert_eq!(get(admin, "/health").await.0, 200);
    ns.probed().await;
    assert_eq!(get(admin, "/ready").await.0, 200);
    assert_eq!(answer_a(&a(&ns, "ok.example.test").await), vec![ADDR]);
    assert_eq!(get(admin, "/nope").await.0, 404);

    // A query in flight keeps the drain (2 s grace) going while /ready is asked.
    up.set_behavior_for(
        "slow.example.test.",
        Behavior::Delay(Duration::from_millis(700)),
    );
    let addr = ns.addr;
    let slow = tokio::spawn(async move {
        client::query_udp(addr, "slow.example.test", RecordType::A, None).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    ns.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(admin, "/ready").await;
    assert_eq!((status, body.as_str()), (503, "shutting down\n"));
    assert_eq!(get(admin, "/health").await.0, 200, "alive while draining");
    assert_eq!(answer_a(&slow.await.unwrap().unwrap()), vec![ADDR]);
    ns.shutdown().await;
}
