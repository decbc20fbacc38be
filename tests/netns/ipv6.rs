//! An IPv6-only pod on a dual-stack node: nodedns listens on an IPv6 address next to
//! 169.254.20.10 (it puts both on the node's link itself, `manage = true`), and the pod,
//! with no IPv4 address at all, resolves through it with glibc and musl.
//!
//! IPv6 addresses in the namespaces are in 2001:2::/48, the IPv6 benchmarking range
//! (RFC 5180), as IPv4 ones are in 198.18.0.0/15; a real cluster uses a ULA such as
//! `fd00::a9fe:140a` (docs/kubernetes.md). The upstreams stay IPv4: only the pod's side is
//! IPv6-only, as in a dual-stack cluster whose nodes reach IPv4 resolvers.

use std::fs;
use std::net::IpAddr;
use std::path::Path;

use crate::clients::{build_musl_client, getent, musl_client};
use crate::process::ip;
use crate::topology::Topology;
use crate::underlay::{REGISTRY_V4, REGISTRY_V6};
use crate::{CONFIG, report, root_or_skip};

/// The node's IPv6 DNS address (the ULA of a real cluster's config).
const NODE_DNS_V6: &str = "2001:2::a9fe:140a";

#[test]
fn ipv6_only_pod_resolves_through_glibc_and_musl() {
    if !root_or_skip("ipv6_only_pod_resolves_through_glibc_and_musl") {
        return;
    }
    let config = CONFIG.replace(
        "addresses = [\"169.254.20.10:53\"]",
        &format!(
            "addresses = [\"169.254.20.10:53\", \"[{NODE_DNS_V6}]:53\"]\n\
             [interface]\nmanage = true"
        ),
    );
    assert!(config.contains(NODE_DNS_V6));
    let net = Topology::build(5, env!("CARGO_BIN_EXE_nodedns"), &config);
    // The pod's link loses IPv4 and gains IPv6 (no duplicate address detection, so the
    // addresses are usable at once); its only route is to the node's IPv6 DNS address.
    ip(&["-n", &net.pod, "-4", "addr", "flush", "dev", "eth0"]);
    ip(&[
        "-n",
        &net.node,
        "addr",
        "add",
        "2001:2:0:19::1/64",
        "dev",
        "pod0",
        "nodad",
    ]);
    ip(&[
        "-n",
        &net.pod,
        "addr",
        "add",
        "2001:2:0:19::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    let host = format!("{NODE_DNS_V6}/128");
    ip(&[
        "-n",
        &net.pod,
        "route",
        "add",
        &host,
        "via",
        "2001:2:0:19::1",
    ]);
    let resolv = Path::new("/etc/netns").join(&net.pod).join("resolv.conf");
    fs::write(
        &resolv,
        format!("nameserver {NODE_DNS_V6}\noptions ndots:1\n"),
    )
    .unwrap();
    let v4 = ip_out(&net.pod, &["-4", "-o", "addr", "show", "scope", "global"]);
    assert!(v4.trim().is_empty(), "the pod still has IPv4: {v4}");

    let v6: IpAddr = REGISTRY_V6.parse().unwrap();
    let both = [IpAddr::from(REGISTRY_V4), v6];
    let glibc = getent(&net.pod, "registry.example.test");
    let musl = musl_client(
        &net.pod,
        &build_musl_client(net.dir.path()),
        "registry.example.test",
    );
    report(&format!(
        "netns ipv6: IPv6-only pod via [{NODE_DNS_V6}]:53: glibc {} addresses in {:?}, musl {} in {:?}",
        glibc.addresses.len(),
        glibc.outcome.elapsed,
        musl.addresses.len(),
        musl.outcome.elapsed
    ));
    // glibc's getaddrinfo (AI_ADDRCONFIG) asks no A where the pod has no IPv4 address: the
    // AAAA is what it must get. The musl client asks both and gets both over IPv6.
    for (client, lookup, want) in [("glibc", &glibc, &both[1..]), ("musl", &musl, &both[..])] {
        assert!(lookup.resolved(), "{client}: {lookup:?}\n{}", net.logs());
        for a in want {
            assert!(
                lookup.addresses.contains(a),
                "{client} lacks {a}: {lookup:?}"
            );
        }
    }
}

fn ip_out(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["-n", ns];
    all.extend(args);
    crate::process::run_host("ip", &all, std::time::Duration::from_secs(10)).stdout
}
