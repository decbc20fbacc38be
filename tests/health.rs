//! Upstream health and readiness end to end on loopback: health is reachability (an rcode
//! never takes an upstream down), probes heal an upstream without client traffic, `/ready`
//! needs no client traffic but does need every zone to have an upstream that answers, and
//! the metrics follow the config across a reload.
//!
//! Real clock, real sockets. Waits are counted polls with generous bounds; where a figure is
//! asserted in time it has at least 5x headroom over what it takes on an idle machine.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::{self, answer_a};
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config_with_admin, zone};
use support::scrape::{Scrape, get};

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);

/// Polls `done` every 10 ms for up to `limit` of real time; how long it took.
async fn wait_for(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    started.elapsed()
}

async fn scrape(ns: &Nodedns) -> Scrape {
    let (status, body) = get(ns.admin.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    Scrape::parse(&body)
}

async fn up_gauge(ns: &Nodedns, up: &FakeUpstream) -> f64 {
    let label = up.addr().to_string();
    scrape(ns)
        .await
        .get("nodedns_upstream_up", &[("upstream", &label)])
}

async fn errors(ns: &Nodedns, up: &FakeUpstream, kind: &str) -> f64 {
    let label = up.addr().to_string();
    scrape(ns).await.get(
        "nodedns_upstream_errors_total",
        &[("upstream", &label), ("kind", kind)],
    )
}

async fn a(ns: &Nodedns, name: &str) -> hickory_proto::op::Message {
    client::query_udp(ns.addr, name, RecordType::A, None)
        .await
        .unwrap()
}

/// An upstream that serves only some names (an authoritative server, a kube-dns without a
/// `.` forwarder, a resolver with a DNS firewall) refuses the rest, its probe included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_answers_never_take_an_upstream_down() {
    let picky = FakeUpstream::start().await;
    let healthy = FakeUpstream::start().await;
    picky.set_behavior_for(".", Behavior::Rcode(ResponseCode::Refused));
    for i in 0..20 {
        let blocked = format!("blocked{i}.example.test.");
        picky.set_behavior_for(&blocked, Behavior::Rcode(ResponseCode::Refused));
        healthy.add_a(&blocked, ADDR, 300);
    }
    for i in 0..5 {
        picky.add_a(&format!("fresh{i}.example.test."), ADDR, 300);
    }
    let zones = zone(
        ".",
        &[picky.addr(), healthy.addr()],
        "policy = \"sequential\"",
    );
    let ns = Nodedns::start(&config_with_admin(&zones)).await;
    // REFUSED to its probe is an answer: the upstream is reachable.
    ns.probed().await;

    for i in 0..20 {
        let r = a(&ns, &format!("blocked{i}.example.test")).await;
        assert_eq!(answer_a(&r), vec![ADDR], "moved on to the next upstream");
    }
    assert_eq!(up_gauge(&ns, &picky).await, 1.0, "REFUSED took it down");
    assert_eq!(errors(&ns, &picky, "refused").await, 20.0);

    // Fresh misses go to it first and take no timeout: no failover, nothing timed out.
    let failovers = ns.stats().failovers.load(Relaxed);
    for i in 0..5 {
        let name = format!("fresh{i}.example.test");
        assert_eq!(answer_a(&a(&ns, &name).await), vec![ADDR]);
        assert_eq!(picky.queries_for(&format!("{name}.")), 1);
    }
    assert_eq!(ns.stats().failovers.load(Relaxed), failovers);
    assert_eq!(errors(&ns, &picky, "timeout").await, 0.0);
    assert_eq!(up_gauge(&ns, &picky).await, 1.0);
}

/// The upstream drops everything for 3 s, then answers again: the first probe after that
/// brings it back, with no client query to do it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blip_heals_at_the_next_probe_without_client_traffic() {
    let up = FakeUpstream::start().await;
    for i in 0..10 {
        up.add_a(&format!("blip{i}.example.test."), ADDR, 300);
    }
    let toml = config_with_admin(&format!(
        "[forward]\ninitial_attempt_timeout = \"100ms\"\ndeadline = \"300ms\"\ndown_after = 2\n\
         probe_interval = \"200ms\"\nprobe_max_interval = \"400ms\"\n[cache]\nstale_max = \"0s\"\n{}",
        zone(".", &[up.addr()], "")
    ));
    let ns = Nodedns::start(&toml).await;
    ns.probed().await;

    let blip = Instant::now();
    up.set_behavior(Behavior::Drop);
    let mut asked = 0;
    while up_gauge(&ns, &up).await == 1.0 {
        asked += 1;
        assert!(asked <= 10, "10 timed-out queries did not mark it down");
        let r = a(&ns, &format!("blip{asked}.example.test")).await;
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(blip.elapsed())).await;
    up.reset_counts();
    up.set_behavior(Behavior::Answer);

    let took = wait_for("up again", Duration::from_secs(10), async || {
        up_gauge(&ns, &up).await == 1.0
    })
    .await;
    assert_eq!(up.udp_queries() + up.tcp_queries(), 0, "no client traffic");
    // Probes back off to 400 ms at most, so one is due within that; 5x headroom.
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(
        (1..=2).contains(&up.probes()),
        "{} probes after the blip",
        up.probes()
    );
}

/// A well-formed answer to a client query brings a down upstream back at once, without
/// waiting for its probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_answer_brings_a_down_upstream_back() {
    let up = FakeUpstream::start().await;
    up.add_a("back.example.test.", ADDR, 300);
    let toml = config_with_admin(&format!(
        "[forward]\ninitial_attempt_timeout = \"100ms\"\ndeadline = \"300ms\"\ndown_after = 1\n\
         probe_interval = \"30s\"\nprobe_max_interval = \"30s\"\n[cache]\nstale_max = \"0s\"\n{}",
        zone(".", &[up.addr()], "")
    ));
    let ns = Nodedns::start(&toml).await;
    ns.probed().await;
    up.set_behavior(Behavior::Drop);
    let r = a(&ns, "gone.example.test").await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(up_gauge(&ns, &up).await, 0.0);

    up.set_behavior(Behavior::Answer);
    // Every upstream of the zone is down: it is asked anyway, and its answer counts.
    assert_eq!(answer_a(&a(&ns, "back.example.test").await), vec![ADDR]);
    assert_eq!(up_gauge(&ns, &up).await, 1.0);
    assert_eq!(up.probes(), 1, "only the start-up probe: the answer did it");
}

/// On an idle node the start-up probes make the pod ready: no client query is needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_without_client_traffic() {
    let (cluster, site) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let zones = [
        zone("cluster.local.", &[cluster.addr()], ""),
        zone(".", &[site.addr()], ""),
    ];
    let ns = Nodedns::start(&config_with_admin(&zones.concat())).await;
    let admin = ns.admin.unwrap();
    // The target is 2 s on a healthy node; 10 s here leaves 5x headroom on a busy one.
    let took = wait_for("ready", Duration::from_secs(10), async || {
        get(admin, "/ready").await.0 == 200
    })
    .await;
    eprintln!("ready after {took:?} with no client traffic");
    for up in [&cluster, &site] {
        assert_eq!(up.udp_queries() + up.tcp_queries(), 0);
        assert!(up.probes() >= 1);
    }
}

/// A zone none of whose upstreams answers keeps the pod not ready (so a rollout with a wrong
/// upstream list stops), while the other zones are served; it turns ready once one answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_without_a_reachable_upstream_keeps_the_pod_unready() {
    let site = FakeUpstream::start().await;
    site.add_a("served.example.test.", ADDR, 300);
    let hole = FakeUpstream::start().await;
    hole.set_behavior(Behavior::Drop);
    let toml = config_with_admin(&format!(
        "[forward]\nmax_attempt_timeout = \"100ms\"\ninitial_attempt_timeout = \"100ms\"\nprobe_interval = \"50ms\"\n\
         probe_max_interval = \"100ms\"\n{}{}",
        zone("cluster.local.", &[hole.addr()], ""),
        zone(".", &[site.addr()], "")
    ));
    let ns = Nodedns::start(&toml).await;
    let admin = ns.admin.unwrap();
    // Counted, not timed: several probes of the black hole have come and gone unanswered.
    wait_for(
        "probes of the black hole",
        Duration::from_secs(10),
        async || hole.probes() >= 4,
    )
    .await;
    let (status, body) = get(admin, "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("zone cluster.local."), "{body}");
    assert!(body.contains(&hole.addr().to_string()), "{body}");
    assert_eq!(
        answer_a(&a(&ns, "served.example.test").await),
        vec![ADDR],
        "the other zones are served meanwhile"
    );
    assert_eq!(get(admin, "/ready").await.0, 503);

    hole.set_behavior(Behavior::Answer);
    wait_for(
        "ready once it answers",
        Duration::from_secs(10),
        async || get(admin, "/ready").await.0 == 200,
    )
    .await;
}

/// The zone's `probe` is what is asked, so an upstream that drops what it does not serve
/// can still be probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zone_probe_is_what_is_asked() {
    let cluster = FakeUpstream::start().await;
    cluster.add_a("kubernetes.default.svc.cluster.local.", ADDR, 30);
    // Drops everything it is not asked by name, the apex SOA included.
    cluster.set_behavior(Behavior::Drop);
    cluster.set_behavior_for("kubernetes.default.svc.cluster.local.", Behavior::Answer);
    let extra = "probe = \"kubernetes.default.svc.cluster.local. A\"";
    let toml = config_with_admin(&zone("cluster.local.", &[cluster.addr()], extra));
    let ns = Nodedns::start(&toml).await;
    ns.probed().await;
    let seen = cluster.queries();
    assert!(
        seen.iter()
            .any(|s| s.name == "kubernetes.default.svc.cluster.local." && s.qtype == RecordType::A),
        "{seen:?}"
    );
}

/// A reload that drops an upstream drops its series; the one kept keeps counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_the_config_across_a_reload() {
    let (kept, removed) = (FakeUpstream::start().await, FakeUpstream::start().await);
    kept.add_a("one.example.test.", ADDR, 300);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodedns.toml");
    let both = config_with_admin(&zone(".", &[kept.addr(), removed.addr()], ""));
    std::fs::write(&path, &both).unwrap();
    let ns = Nodedns::start_file(&path, Duration::from_secs(3600)).await;
    assert_eq!(answer_a(&a(&ns, "one.example.test").await), vec![ADDR]);
    let (kept_l, removed_l): (SocketAddr, SocketAddr) = (kept.addr(), removed.addr());
    let (kept_l, removed_l) = (kept_l.to_string(), removed_l.to_string());
    let series = |s: &Scrape, label: &str| {
        s.samples
            .iter()
            .filter(|x| x.labels.get("upstream").is_some_and(|v| v == label))
            .count()
    };
    let before = scrape(&ns).await;
    assert!(series(&before, &removed_l) > 0);

    std::fs::write(&path, config_with_admin(&zone(".", &[kept.addr()], ""))).unwrap();
    ns.control.reload().await.unwrap();
    let after = scrape(&ns).await;
    assert_eq!(
        series(&after, &removed_l),
        0,
        "series of a removed upstream"
    );
    assert_eq!(series(&after, &kept_l), series(&before, &kept_l));
    let ureq = "nodedns_upstream_requests_total";
    let labels = [("upstream", kept_l.as_str()), ("proto", "udp")];
    assert_eq!(after.get(ureq, &labels), before.get(ureq, &labels));
}
