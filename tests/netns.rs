//! nodedns in the seed's network, rebuilt in network namespaces: real pod
//! clients (glibc, musl, dig, kdig) resolve through the node's cache while the
//! underlay resolvers (nsd) fail under them. Topology and clean-up:
//! `netns/topology.rs`; how to run: docs/testing.md.
//!
//! Needs root (namespaces, veths, port 53). Without root the suite prints one
//! skip line and every test passes, unless `NODEDNS_NETNS_REQUIRED=1` makes
//! them fail.
#![allow(clippy::unwrap_used)]

#[path = "netns/admin.rs"]
mod admin;
#[path = "netns/clients.rs"]
mod clients;
#[path = "netns/ipv6.rs"]
mod ipv6;
#[path = "netns/observe.rs"]
mod observe;
#[path = "netns/process.rs"]
mod process;
#[path = "netns/rollout.rs"]
mod rollout;
#[path = "netns/topology.rs"]
mod topology;
#[path = "netns/transparent.rs"]
mod transparent;
#[path = "netns/underlay.rs"]
mod underlay;
#[path = "netns/warm.rs"]
mod warm;

use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Once;
use std::thread;
use std::time::Duration;

use clients::{
    Lookup, Tool, Transport, build_musl_client, dig, getent, lookup_loop, musl_client, query,
};
use topology::{NODE_DNS, RESOLVERS, Topology};
use underlay::{REGISTRY_V4, REGISTRY_V6, SHORT_TTL_SECS, SHORT_V4, WILD_V4, big_addresses};

/// The forwarder's configuration for this suite: the seed's two underlay
/// resolvers, in order, for every name.
const CONFIG: &str = r#"
[listen]
# The test's addresses (benchmarking ranges) are not in the default allow list.
allow = ["127.0.0.0/8", "169.254.0.0/16", "198.18.0.0/15", "2001:2::/48"]
# One test client stands for every pod of the node: no per-client miss rate.
client_miss_rate = 0
addresses = ["169.254.20.10:53"]
[cache]
stale_max = "1h"
[forward]
attempts = 3
deadline = "2s"
[[zones]]
name = "."
upstreams = ["198.18.1.251:53", "198.18.1.252:53"]
policy = "sequential"
[admin]
address = "169.254.20.10:9253"
[log]
level = "info"
"#;

/// Whether this process runs as root (effective uid 0, from /proc: no libc call).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Writes a line past the test harness's output capture (which only takes
/// `print!`/`eprint!`), so skip notices and measured figures show in CI logs.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Builds the topology for one test and proves the split (the pod reaches only
/// the node); `None` (after a skip line) when not root and not required.
fn start(test: &str, ndots: u8) -> Option<Topology> {
    start_with(test, ndots, CONFIG)
}

/// [`start`] with another config.
fn start_with(test: &str, ndots: u8, config: &str) -> Option<Topology> {
    if !root_or_skip(test) {
        return None;
    }
    let net = Topology::build(ndots, env!("CARGO_BIN_EXE_nodedns"), config);
    assert_pod_reaches_only_the_node(&net);
    Some(net)
}

/// The suite's config with short waits for upstreams that do not answer (400 ms before
/// serving stale, a 600 ms deadline), for the tests that time those waits: a bound on them
/// then has 5x headroom on a busy machine. The other tests keep the 2 s deadline, so a
/// slow but answering underlay is not mistaken for a lost query.
fn short_waits() -> String {
    let config = CONFIG
        .replace("deadline = \"2s\"", "deadline = \"600ms\"")
        .replace(
            "stale_max = \"1h\"",
            "stale_max = \"1h\"\nstale_client_timeout = \"400ms\"",
        );
    assert!(config.contains("600ms") && config.contains("400ms"));
    config
}

/// Whether the test can run (root); otherwise prints the skip line once, or
/// fails when `NODEDNS_NETNS_REQUIRED=1`.
fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        let required = std::env::var("NODEDNS_NETNS_REQUIRED").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "{test}: NODEDNS_NETNS_REQUIRED=1 but not running as root"
        );
        static SKIP_NOTICE: Once = Once::new();
        SKIP_NOTICE.call_once(|| {
            report("SKIP netns: not root, network namespace tests not run (see docs/testing.md)");
        });
        return false;
    }
    true
}

/// From the pod a query straight to either underlay resolver fails; from the
/// node the same query succeeds.
fn assert_pod_reaches_only_the_node(net: &Topology) {
    for resolver in RESOLVERS.map(|r| r.to_string()) {
        let direct = dig(
            &net.pod,
            Some(&resolver),
            "registry.example.test",
            "A",
            Transport::Udp,
        );
        assert!(
            direct.status.is_none() && direct.records.is_empty(),
            "pod reached underlay {resolver} directly: {direct:?}"
        );
        let from_node = dig(
            &net.node,
            Some(&resolver),
            "registry.example.test",
            "A",
            Transport::Udp,
        );
        assert!(
            from_node.is("NOERROR") && from_node.addresses().contains(&REGISTRY_V4.into()),
            "node cannot reach underlay {resolver}: {from_node:?}"
        );
    }
}

fn addrs(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

fn assert_resolves(lookup: &Lookup, name: &str, expected: &[IpAddr]) {
    assert!(lookup.resolved(), "{name} did not resolve: {lookup:?}");
    for address in expected {
        assert!(
            lookup.addresses.contains(address),
            "{name} lacks {address}: {lookup:?}"
        );
    }
}

#[test]
fn pod_cannot_reach_underlay_directly() {
    let Some(net) = start("pod_cannot_reach_underlay_directly", 5) else {
        return;
    };
    // Beyond the split every test proves: the pod's own resolv.conf points at the node.
    let via_resolv_conf = dig(&net.pod, None, "registry.example.test", "A", Transport::Udp);
    assert!(via_resolv_conf.is("NOERROR"), "{via_resolv_conf:?}");
    assert!(
        via_resolv_conf
            .outcome
            .stdout
            .contains(&format!("SERVER: {NODE_DNS}#53"))
    );
}

#[test]
fn pod_resolves_registry_through_node_cache() {
    let Some(mut net) = start("pod_resolves_registry_through_node_cache", 5) else {
        return;
    };
    let registry = addrs(&[&REGISTRY_V4.to_string(), REGISTRY_V6]);
    // ndots:5 puts the three search domains first (three NXDOMAINs from the
    // underlay); glibc asks A and AAAA in parallel from one socket for each.
    let glibc = getent(&net.pod, "registry.example.test");
    assert_resolves(&glibc, "registry.example.test (glibc)", &registry);
    // With both underlay resolvers gone, the answer (TTL 60 s) still comes from
    // the node. The trailing dot skips the search list, whose NXDOMAINs (2 s
    // negative TTL) could expire meanwhile: that case is the stale test's.
    net.kill_resolver(0);
    net.kill_resolver(1);
    let cached = getent(&net.pod, "registry.example.test.");
    assert_resolves(&cached, "registry.example.test (cached)", &registry);
    assert!(
        cached.outcome.elapsed < Duration::from_secs(1),
        "{cached:?}"
    );
}

#[test]
fn pod_resolves_registry_with_ndots_2() {
    let Some(net) = start("pod_resolves_registry_with_ndots_2", 2) else {
        return;
    };
    let registry = addrs(&[&REGISTRY_V4.to_string(), REGISTRY_V6]);
    let glibc = getent(&net.pod, "registry.example.test");
    assert_resolves(&glibc, "registry.example.test (glibc, ndots:2)", &registry);
    let musl = musl_client(
        &net.pod,
        &build_musl_client(net.dir.path()),
        "registry.example.test",
    );
    assert_resolves(&musl, "registry.example.test (musl, ndots:2)", &registry);
}

#[test]
fn missing_name_fails_fast_instead_of_hanging() {
    let Some(net) = start("missing_name_fails_fast_instead_of_hanging", 5) else {
        return;
    };
    let missing = getent(&net.pod, "nothere.example.test");
    // getent exits 2 when the name does not exist (NXDOMAIN for all four candidates).
    assert_eq!(missing.outcome.code, Some(2), "{missing:?}");
    assert!(
        missing.outcome.elapsed < Duration::from_secs(3),
        "{missing:?}"
    );
    let answer = dig(&net.pod, None, "nothere.example.test", "A", Transport::Udp);
    assert!(answer.is("NXDOMAIN"), "{answer:?}");
}

#[test]
fn glibc_gets_all_40_records_by_retrying_over_tcp() {
    let Some(net) = start("glibc_gets_all_40_records_by_retrying_over_tcp", 5) else {
        return;
    };
    // glibc sends no EDNS, so 40 A records (~680 bytes) do not fit its 512-byte
    // UDP limit: it only gets them all by retrying over TCP after TC=1.
    let big = getent(&net.pod, "big.example.test");
    let expected: Vec<IpAddr> = big_addresses().into_iter().map(IpAddr::from).collect();
    assert_resolves(&big, "big.example.test (glibc)", &expected);
    assert_eq!(big.addresses.len(), expected.len(), "{big:?}");
}

#[test]
fn dig_and_kdig_resolve_over_udp_and_tcp() {
    let Some(net) = start("dig_and_kdig_resolve_over_udp_and_tcp", 5) else {
        return;
    };
    let big: Vec<IpAddr> = big_addresses().into_iter().map(IpAddr::from).collect();
    for tool in [Tool::Dig, Tool::Kdig] {
        for transport in [Transport::Udp, Transport::Tcp] {
            let what = format!("{tool:?} over {transport:?}");
            let a = query(
                tool,
                &net.pod,
                None,
                "registry.example.test",
                "A",
                transport,
            );
            assert!(a.is("NOERROR"), "{what}: {a:?}");
            assert_eq!(
                a.addresses(),
                [IpAddr::from(REGISTRY_V4)].into(),
                "{what}: {a:?}"
            );
            let aaaa = query(
                tool,
                &net.pod,
                None,
                "registry.example.test",
                "AAAA",
                transport,
            );
            assert_eq!(
                aaaa.addresses(),
                addrs(&[REGISTRY_V6]).into_iter().collect(),
                "{what}: {aaaa:?}"
            );
            // With EDNS (1232 bytes) all 40 records fit in one UDP answer.
            let many = query(tool, &net.pod, None, "big.example.test", "A", transport);
            assert_eq!(
                many.addresses(),
                big.iter().copied().collect(),
                "{what}: {many:?}"
            );
        }
    }
}

#[test]
fn musl_resolves_a_and_aaaa_through_the_search_list() {
    let Some(net) = start("musl_resolves_a_and_aaaa_through_the_search_list", 5) else {
        return;
    };
    let musl = build_musl_client(net.dir.path());
    let registry = addrs(&[&REGISTRY_V4.to_string(), REGISTRY_V6]);
    let lookup = musl_client(&net.pod, &musl, "registry.example.test");
    assert_resolves(&lookup, "registry.example.test (musl)", &registry);
    let missing = musl_client(&net.pod, &musl, "nothere.example.test");
    assert_eq!(missing.outcome.code, Some(2), "{missing:?}");
    assert!(
        missing.outcome.elapsed < Duration::from_secs(3),
        "{missing:?}"
    );
}

#[test]
fn musl_gets_whole_records_when_answer_is_truncated() {
    let Some(net) = start("musl_gets_whole_records_when_answer_is_truncated", 5) else {
        return;
    };
    // musl asks without EDNS and ignores TC=1 (no TCP retry), so it keeps what
    // fits in 512 bytes: ~29 whole A records, or nothing if the answer is emptied.
    let musl = build_musl_client(net.dir.path());
    let lookup = musl_client(&net.pod, &musl, "big.example.test");
    let big: Vec<IpAddr> = big_addresses().into_iter().map(IpAddr::from).collect();
    report(&format!(
        "netns musl: {} of {} addresses from a truncated answer",
        lookup.addresses.len(),
        big.len()
    ));
    assert!(lookup.resolved(), "big.example.test (musl): {lookup:?}");
    assert!(
        lookup.addresses.len() >= 20,
        "only {} addresses: {lookup:?}",
        lookup.addresses.len()
    );
    assert!(
        lookup.addresses.iter().all(|a| big.contains(a)),
        "{lookup:?}"
    );
}

#[test]
fn failover_loses_no_lookup_when_primary_dies() {
    let Some(mut net) = start("failover_loses_no_lookup_when_primary_dies", 5) else {
        return;
    };
    let warm = getent(&net.pod, "warm.wild.example.test");
    assert_resolves(&warm, "warm.wild.example.test", &[WILD_V4.into()]);
    net.kill_resolver(0);
    let loop_report = lookup_loop(&net.pod, "n", 200);
    let first = loop_report.latencies.first().copied().unwrap_or_default();
    let worst = loop_report.worst_after_first();
    report(&format!(
        "netns failover: {} lookups, {} lost, first {first:?}, median {:?}, worst after first {worst:?}",
        loop_report.latencies.len(),
        loop_report.lost.len(),
        loop_report.median()
    ));
    assert!(
        loop_report.lost.is_empty(),
        "lost lookups: {:?}",
        loop_report.lost
    );
    // Well under glibc's own 5 s retry timer (a lookup that needed it would show), and 5x
    // the few hundred milliseconds failover takes on a busy machine.
    assert!(
        worst < Duration::from_secs(2),
        "a lookup after the first took {worst:?}\n{}",
        net.logs()
    );
    assert!(net.forwarder_running(), "nodedns exited");
}

#[test]
fn serves_stale_when_all_underlay_resolvers_are_down() {
    let config = short_waits();
    let Some(mut net) = start_with(
        "serves_stale_when_all_underlay_resolvers_are_down",
        5,
        &config,
    ) else {
        return;
    };
    // The trailing dot skips the search list: only short.example.test is cached.
    let fresh = getent(&net.pod, "short.example.test.");
    assert_resolves(&fresh, "short.example.test (fresh)", &[SHORT_V4.into()]);
    // Let its 2 s TTL run out, so what comes back below is served stale (RFC 8767).
    thread::sleep(Duration::from_secs(SHORT_TTL_SECS + 1));
    net.kill_resolver(0);
    net.kill_resolver(1);
    let stale = getent(&net.pod, "short.example.test.");
    assert_resolves(&stale, "short.example.test (stale)", &[SHORT_V4.into()]);
    // Served after the 400 ms `stale_client_timeout`: 5x headroom, and under glibc's 5 s retry.
    assert!(stale.outcome.elapsed < Duration::from_secs(3), "{stale:?}");
    let answer = dig(&net.pod, None, "short.example.test", "A", Transport::Udp);
    assert!(answer.is("NOERROR"), "{answer:?}");
    assert_eq!(
        answer.addresses(),
        [IpAddr::from(SHORT_V4)].into(),
        "{answer:?}"
    );
    assert!(
        answer.records.iter().all(|r| r.ttl > 0),
        "stale answer with TTL 0: {answer:?}"
    );
}

#[test]
fn new_names_fail_fast_with_servfail_when_all_underlay_resolvers_are_down() {
    let config = short_waits();
    let Some(mut net) = start_with(
        "new_names_fail_fast_with_servfail_when_all_underlay_resolvers_are_down",
        5,
        &config,
    ) else {
        return;
    };
    net.kill_resolver(0);
    net.kill_resolver(1);
    for i in 0..3 {
        let name = format!("gone{i}.wild.example.test");
        let answer = dig(&net.pod, None, &name, "A", Transport::Udp);
        assert!(answer.is("SERVFAIL"), "{name}: {answer:?}");
        // The 600 ms deadline, with 5x headroom; a client would otherwise wait for its own.
        assert!(
            answer.outcome.elapsed < Duration::from_secs(3),
            "{name}: {answer:?}"
        );
    }
    assert!(net.forwarder_running(), "nodedns exited");
}

/// Runs `nodedns --config <the suite's config> doctor args` in namespace `ns`.
fn doctor_in(net: &Topology, ns: &str, args: &[&str]) -> process::Outcome {
    let config = net.dir.path().join("nodedns.toml");
    let config = config.to_string_lossy();
    let mut all = vec!["--config", &config, "doctor"];
    all.extend_from_slice(args);
    process::run_in(
        ns,
        env!("CARGO_BIN_EXE_nodedns"),
        &all,
        Duration::from_secs(15),
    )
}

/// The verdict line of `check` with `status`, if there is one.
fn verdict_line<'a>(stdout: &'a str, status: &str, check: &str) -> Option<&'a str> {
    let prefix = format!("{status:<4} {check}");
    stdout.lines().find(|l| l.starts_with(&prefix))
}

#[test]
fn doctor_on_the_node_finds_the_underlay_and_the_pod_config_sound() {
    let Some(net) = start(
        "doctor_on_the_node_finds_the_underlay_and_the_pod_config_sound",
        2,
    ) else {
        return;
    };
    let pod_resolv = format!("/etc/netns/{}/resolv.conf", net.pod);
    let node = doctor_in(
        &net,
        &net.node,
        &[
            "--name",
            "registry.example.test",
            "--resolv-conf",
            &pod_resolv,
        ],
    );
    let out = &node.stdout;
    assert!(
        node.success(),
        "doctor on the node failed:\n{out}{}",
        node.stderr
    );
    for resolver in RESOLVERS {
        for proto in ["udp", "tcp"] {
            let check = format!("upstream {proto} {resolver}:53 (zone .)");
            assert!(verdict_line(out, "ok", &check).is_some(), "{check}:\n{out}");
        }
        let answer = verdict_line(out, "ok", &format!("upstream {resolver}:53 answers")).unwrap();
        assert!(answer.contains(&REGISTRY_V4.to_string()), "{answer}");
    }
    let listener = verdict_line(out, "ok", &format!("listener udp {NODE_DNS}:53")).unwrap();
    assert!(listener.contains("nodedns"), "{listener}");
    assert!(
        verdict_line(out, "ok", "through nodedns").is_some(),
        "{out}"
    );
    let nameserver = verdict_line(out, "ok", "resolv.conf").unwrap();
    assert!(nameserver.contains("first is nodedns"), "{nameserver}");
    let cost = verdict_line(out, "ok", "resolv.conf lookup cost").unwrap();
    assert!(
        cost.contains("ndots:2") && cost.contains("costs 2 queries"),
        "{cost}"
    );

    // From the pod the same checks name the seed's third failure mode: the node's resolvers
    // are out of the pod's reach, while nodedns answers it.
    let pod = doctor_in(&net, &net.pod, &["--resolv-conf", "/etc/resolv.conf"]);
    assert_eq!(pod.code, Some(1), "{}", pod.stdout);
    for resolver in RESOLVERS {
        let check = format!("upstream udp {resolver}:53");
        assert!(
            verdict_line(&pod.stdout, "fail", &check).is_some(),
            "{}",
            pod.stdout
        );
    }
    let check = format!("listener udp {NODE_DNS}:53");
    assert!(
        verdict_line(&pod.stdout, "ok", &check).is_some(),
        "{}",
        pod.stdout
    );
    assert!(verdict_line(&pod.stdout, "ok", "resolv.conf /etc/resolv.conf nameserver").is_some());
}
