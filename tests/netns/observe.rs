//! What a glibc pod's search list costs, as `/metrics` counts it: the expansions of one
//! lookup through `search gitlab.svc.cluster.local svc.cluster.local cluster.local` and
//! `options ndots:5`, each an NXDOMAIN from the underlay's root zone.

use std::collections::BTreeSet;

use nodedns::prometheus_text::Exposition;

use crate::admin::{unix_get, with_socket};
use crate::clients::getent_in;
use crate::topology::Topology;
use crate::underlay::{REGISTRY_V4, SHORT_V4};
use crate::{CONFIG, root_or_skip};

/// `name`'s sum over `labels` in the scrape of the admin socket at `socket`.
fn scraped(socket: &std::path::Path, name: &str, labels: &[(&str, &str)]) -> f64 {
    let body = unix_get(socket, "/metrics").expect("/metrics over the admin socket");
    let s = Exposition::parse(&body).unwrap_or_else(|e| panic!("/metrics: {e}"));
    s.sum(name, labels)
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
}

#[test]
fn a_glibc_pod_s_search_list_expansions_are_counted() {
    if !root_or_skip("a_glibc_pod_s_search_list_expansions_are_counted") {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("admin.sock");
    let bin = env!("CARGO_BIN_EXE_nodedns");
    let net = Topology::build(5, bin, &with_socket(CONFIG, &socket));
    let expansions = "nodedns_search_expansions_total";
    let nxdomain = [("rcode", "NXDOMAIN")];
    let before = scraped(&socket, expansions, &[]);

    // `registry.example.test` has 2 dots, fewer than ndots:5: glibc tries the three search
    // domains first. `ahostsv4` asks A only: 3 expansions, each NXDOMAIN (the root zone
    // holds no such name), then the name itself, which is no expansion.
    let v4 = getent_in(&net.pod, "ahostsv4", "registry.example.test");
    let want: BTreeSet<_> = [REGISTRY_V4.into()].into();
    assert_eq!(v4.addresses, want, "{v4:?}\n{}", net.logs());
    assert_eq!(scraped(&socket, expansions, &[]) - before, 3.0);
    assert_eq!(scraped(&socket, expansions, &nxdomain) - before, 3.0);

    // `ahosts` asks A and AAAA in parallel for every candidate name: 6 expansions of
    // `short.example.test`, every one NXDOMAIN.
    let both = getent_in(&net.pod, "ahosts", "short.example.test");
    assert!(both.addresses.contains(&SHORT_V4.into()), "{both:?}");
    assert_eq!(scraped(&socket, expansions, &[]) - before, 9.0);
    assert_eq!(scraped(&socket, expansions, &nxdomain) - before, 9.0);
    // Every one was answered at once: no client asked again.
    let retransmits = "nodedns_client_retransmits_total";
    assert_eq!(scraped(&socket, retransmits, &[]), 0.0);
}
