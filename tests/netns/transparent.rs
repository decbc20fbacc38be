//! Transparent mode: pods that keep asking the kube-dns ClusterIP are served by nodedns,
//! and given back to kube-dns when the last nodedns of the node exits.
//!
//! kube-proxy is stood in for by an nftables DNAT in the node namespace, as its nftables
//! mode programs it: the "kube-dns" ClusterIP `198.19.96.10` (the real-world `10.96.0.10`;
//! an address of 198.18.0.0/15 here, routed from the pod through the node) and the
//! `kube-dns-upstream` ClusterIP `198.19.96.53` both go to the kube-dns pod, played by the
//! underlay nsd at `198.18.1.251`, whose `example.test` zone plays `cluster.local`. nodedns
//! learns `kube-dns-upstream` from `KUBE_DNS_UPSTREAM_SERVICE_HOST`, as from the kubelet.
//! The DNAT rules count packets, which tells which path a query took.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::admin::unix_get;
use crate::clients::{self, Transport};
use crate::process::{Daemon, ip, run_in};
use crate::topology::{RESOLVERS, Topology};
use crate::underlay::{REGISTRY_V4, WILD_V4};
use crate::{CONFIG, report, root_or_skip};

const CLUSTER_IP: &str = "198.19.96.10";
const UPSTREAM_SERVICE_IP: &str = "198.19.96.53";

/// kube-proxy's part: DNAT of both Services to the kube-dns pod, from pods (prerouting)
/// and from the node (output), each rule with a counter.
fn kube_proxy_ruleset() -> String {
    let pod = RESOLVERS[0];
    let mut rules = String::new();
    for ip in [CLUSTER_IP, UPSTREAM_SERVICE_IP] {
        for proto in ["udp", "tcp"] {
            rules.push_str(&format!(
                "\t\tip daddr {ip} {proto} dport 53 counter dnat to {pod}\n"
            ));
        }
    }
    format!(
        "table ip kubeproxy {{\n\
         \tchain pre {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{rules}\t}}\n\
         \tchain out {{\n\t\ttype nat hook output priority -100; policy accept;\n{rules}\t}}\n}}\n"
    )
}

/// Packets DNATed to kube-dns for Service address `ip` so far, both hooks together.
fn dnat_packets(node: &str, ip: &str) -> u64 {
    let out = run_in(
        node,
        "nft",
        &["list", "table", "ip", "kubeproxy"],
        Duration::from_secs(10),
    );
    assert!(out.success(), "nft list: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| l.contains(&format!("daddr {ip} ")))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "packets")?;
            words.get(at + 1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Whether the interception table is loaded in `node`, and the ClusterIP is on a link.
fn intercepting(node: &str) -> (bool, bool) {
    let table = run_in(
        node,
        "nft",
        &["list", "table", "inet", "nodedns-intercept"],
        Duration::from_secs(10),
    );
    let rules = table.success() && table.stdout.contains(&format!("ip daddr {CLUSTER_IP}"));
    let addrs = run_in(node, "ip", &["-o", "addr", "show"], Duration::from_secs(10));
    let address = addrs.stdout.contains(&format!(" {CLUSTER_IP}/32 "));
    (rules, address)
}

/// The node's side of the stand-in: forwarding on, kube-proxy's DNAT, routes for the
/// ClusterIP range (pod and node) and the pod subnet (kube-dns pod's way back), and the pod's
/// resolv.conf naming the ClusterIP, as with the default `dnsPolicy`.
fn stand_in_kube_proxy(net: &Topology) {
    let sysctl = run_in(
        &net.node,
        "sysctl",
        &["-qw", "net.ipv4.ip_forward=1"],
        Duration::from_secs(10),
    );
    assert!(sysctl.success(), "{}", sysctl.stderr);
    let path = net.dir.path().join("kubeproxy.nft");
    fs::write(&path, kube_proxy_ruleset()).unwrap();
    let loaded = run_in(
        &net.node,
        "nft",
        &["-f", &path.to_string_lossy()],
        Duration::from_secs(10),
    );
    assert!(loaded.success(), "nft -f: {}", loaded.stderr);
    ip(&[
        "-n",
        &net.pod,
        "route",
        "add",
        "198.19.96.0/24",
        "via",
        "198.19.0.1",
    ]);
    ip(&[
        "-n",
        &net.underlay,
        "route",
        "add",
        "198.19.0.0/24",
        "via",
        "198.18.1.1",
    ]);
    // A node routes Service addresses somewhere (its default route) before the DNAT in
    // output rewrites them; here, towards the kube-dns pod.
    ip(&[
        "-n",
        &net.node,
        "route",
        "add",
        "198.19.96.0/24",
        "dev",
        "underlay0",
    ]);
    let resolv = Path::new("/etc/netns").join(&net.pod).join("resolv.conf");
    fs::write(
        &resolv,
        format!("nameserver {CLUSTER_IP}\noptions ndots:1\n"),
    )
    .unwrap();
}

/// nodedns in transparent mode, run `run`: its own admin socket, the shared instance lock.
fn start_transparent(net: &Topology, run: usize) -> (Daemon, std::path::PathBuf) {
    let dir = net.dir.path();
    let socket = dir.join(format!("admin{run}.sock"));
    let config = format!(
        "[listen]\naddresses = [\"169.254.20.10:53\"]\ndrain_timeout = \"1s\"\n\
         allow = [\"127.0.0.0/8\", \"169.254.0.0/16\", \"198.18.0.0/15\"]\n\
         [interface]\nmanage = true\ncheck_interval = \"1s\"\n\
         intercept = [\"{CLUSTER_IP}\"]\ninstance_lock = \"{}\"\n\
         [admin]\naddress = \"\"\nsocket = \"{}\"\n\
         [[zones]]\nname = \"example.test\"\n\
         upstreams = [\"${{KUBE_DNS_UPSTREAM_SERVICE_HOST}}:53\"]\ntransport = \"tcp\"\n\
         [[zones]]\nname = \".\"\nupstreams = [\"198.18.1.251:53\", \"198.18.1.252:53\"]\n",
        dir.join("hostpath/instances.lock").display(),
        socket.display()
    );
    let path = dir.join(format!("transparent{run}.toml"));
    fs::write(&path, config).unwrap();
    let env = format!("KUBE_DNS_UPSTREAM_SERVICE_HOST={UPSTREAM_SERVICE_IP}");
    let (program, conf) = (env!("CARGO_BIN_EXE_nodedns"), path.to_string_lossy());
    let mut daemon = Daemon::start(
        &format!("nodedns transparent {run}"),
        &net.node,
        "env",
        &[&env, program, "--config", &conf],
        &dir.join(format!("transparent{run}.log")),
    );
    daemon.wait_for_log("nodedns serving", Duration::from_secs(15));
    (daemon, socket)
}

/// `nodedns_cache_hits_total`, all types, from the process behind `socket`.
fn hits(socket: &Path) -> f64 {
    let body = unix_get(socket, "/metrics").expect("/metrics over the admin socket");
    body.lines()
        .filter(|l| l.starts_with("nodedns_cache_hits_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One query from the pod through its resolv.conf (the ClusterIP), one try.
fn ask(pod: &str, name: &str) -> clients::Answer {
    clients::dig(pod, None, name, "A", Transport::Udp)
}

#[test]
fn transparent_mode_serves_the_cluster_ip_and_gives_it_back() {
    if !root_or_skip("transparent_mode_serves_the_cluster_ip_and_gives_it_back") {
        return;
    }
    let mut net = Topology::build(5, env!("CARGO_BIN_EXE_nodedns"), CONFIG);
    // The suite's forwarder is not in transparent mode: this test runs its own.
    if let Some(mut plain) = net.take_forwarder() {
        plain.kill();
    }
    stand_in_kube_proxy(&net);
    // Before nodedns: the ClusterIP reaches kube-dns through the DNAT.
    let before = ask(&net.pod, "registry.example.test");
    assert!(before.is("NOERROR"), "kube-proxy stand-in: {before:?}");
    for t in [Transport::Udp, Transport::Tcp] {
        let a = clients::dig(
            &net.node,
            Some(UPSTREAM_SERVICE_IP),
            "registry.example.test",
            "A",
            t,
        );
        assert!(
            a.is("NOERROR"),
            "kube-dns-upstream from the node over {t:?}: {a:?}"
        );
    }
    let via_dnat_before = dnat_packets(&net.node, CLUSTER_IP);
    assert!(via_dnat_before >= 1, "the stand-in DNAT did not count");

    // NAT rules count the first packet of each connection: nodedns's one TCP connection to
    // kube-dns-upstream may be opened by its start-up probe, so count from before it starts.
    let upstream_before = dnat_packets(&net.node, UPSTREAM_SERVICE_IP);
    // 1. nodedns intercepts: the pod's glibc asks the ClusterIP and nodedns answers.
    let (mut first, socket) = start_transparent(&net, 0);
    assert_eq!(
        intercepting(&net.node),
        (true, true),
        "{}",
        first.log_tail(3000)
    );
    let hits_before = hits(&socket);
    let mut lookups = Vec::new();
    for _ in 0..2 {
        let l = clients::getent(&net.pod, "registry.example.test.");
        assert!(
            l.addresses.contains(&IpAddr::from(REGISTRY_V4)),
            "{l:?}\n{:?}\n{}",
            ask(&net.pod, "registry.example.test"),
            first.log_tail(3000)
        );
        lookups.push(l.outcome.elapsed);
    }
    let hits_gained = hits(&socket) - hits_before;
    let via_cluster_ip = dnat_packets(&net.node, CLUSTER_IP) - via_dnat_before;
    let via_upstream = dnat_packets(&net.node, UPSTREAM_SERVICE_IP) - upstream_before;
    report(&format!(
        "netns transparent: 2 glibc lookups of the ClusterIP answered by nodedns ({lookups:?}), \
         {hits_gained} cache hits, {via_upstream} packets to kube-dns-upstream, {via_cluster_ip} through the ClusterIP's DNAT"
    ));
    // glibc asks A and AAAA: the second lookup is two hits.
    assert!(
        hits_gained >= 2.0,
        "hits {hits_gained}\n{}",
        first.log_tail(3000)
    );
    assert!(
        via_upstream >= 1,
        "the cluster zone did not use kube-dns-upstream"
    );
    assert_eq!(
        via_cluster_ip, 0,
        "the pod's queries went through kube-proxy's DNAT"
    );

    // 2. The last nodedns exits cleanly: rules and address go, kube-dns answers again.
    let status = first.terminate(Duration::from_secs(10));
    let exited = Instant::now();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        first.log_tail(3000)
    );
    let fallback = ask(&net.pod, "fallback.wild.example.test");
    let fallback_after = exited.elapsed();
    report(&format!(
        "netns transparent: after SIGTERM of the last nodedns, the first query (one try) was answered through the DNAT {fallback_after:?} after the exit"
    ));
    assert_eq!(
        intercepting(&net.node),
        (false, false),
        "{}",
        first.log_tail(3000)
    );
    assert!(
        fallback.addresses().contains(&IpAddr::from(WILD_V4)),
        "no fallback to kube-dns: {fallback:?}"
    );
    assert!(
        fallback_after < Duration::from_secs(5),
        "{fallback_after:?}"
    );
    assert!(dnat_packets(&net.node, CLUSTER_IP) > via_dnat_before + via_cluster_ip);

    // 3. A rollout: a new process beside the old, SIGTERM to the old, no query lost.
    let (mut old, _) = start_transparent(&net, 1);
    let dnat_before_rollout = dnat_packets(&net.node, CLUSTER_IP);
    let (lost, sent, mut new) = rollout(&net, &mut old);
    let fell_through = dnat_packets(&net.node, CLUSTER_IP) - dnat_before_rollout;
    let old_log = old.log_tail(1 << 20);
    report(&format!(
        "netns transparent: rollout with {sent} queries to the ClusterIP, {} lost, {fell_through} through kube-proxy's DNAT; rules and address after the old exit: {:?}",
        lost.len(),
        intercepting(&net.node)
    ));
    assert!(
        lost.is_empty(),
        "lost: {lost:?}\n{old_log}\n{}",
        new.log_tail(3000)
    );
    assert!(sent >= 100, "only {sent} queries");
    assert!(old_log.contains("interception stays"), "{old_log}");
    assert_eq!(fell_through, 0, "queries left nodedns during the rollout");
    assert_eq!(intercepting(&net.node), (true, true));

    // 4. SIGKILL leaves everything in place (the restarted pod serves again).
    new.kill();
    let after_kill = intercepting(&net.node);
    report(&format!(
        "netns transparent: after SIGKILL, rules and address: {after_kill:?}; a restarted nodedns serves again"
    ));
    assert_eq!(after_kill, (true, true), "after SIGKILL");
    let (mut restarted, _) = start_transparent(&net, 3);
    let again = ask(&net.pod, "again.wild.example.test");
    assert!(
        again.addresses().contains(&IpAddr::from(WILD_V4)),
        "{again:?}"
    );
    restarted.kill();
}

/// Queries to the ClusterIP from the pod while `old` hands over to a new process; returns
/// the names not answered, how many were sent, and the new process.
fn rollout(net: &Topology, old: &mut Daemon) -> (Vec<String>, usize, Daemon) {
    let stop = Arc::new(AtomicBool::new(false));
    let (pod, flag) = (net.pod.clone(), stop.clone());
    let client = thread::spawn(move || query_loop(&pod, &flag));
    thread::sleep(Duration::from_millis(500));
    let (new, _) = start_transparent(net, 2);
    thread::sleep(Duration::from_secs(1));
    let status = old.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        old.log_tail(3000)
    );
    thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (lost, sent) = client.join().unwrap();
    (lost, sent, new)
}

/// Batches of 10 unique names (one try each, 5 s wait: 5x the worst hand-over answer on a
/// busy machine) until `stop`, at most 300 batches and 25 s.
fn query_loop(pod: &str, stop: &AtomicBool) -> (Vec<String>, usize) {
    let deadline = Instant::now() + Duration::from_secs(25);
    let server = format!("@{CLUSTER_IP}");
    let wild = WILD_V4.to_string();
    let (mut lost, mut sent) = (Vec::new(), 0);
    for batch in 0..300 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let names: Vec<String> = (0..10)
            .map(|i| format!("t{batch}x{i}.wild.example.test"))
            .collect();
        let mut args = vec![
            "+tries=1", "+time=5", "+noall", "+answer", "+notcp", &server,
        ];
        for name in &names {
            args.extend([name.as_str(), "A"]);
        }
        let out = run_in(pod, "dig", &args, Duration::from_secs(60));
        sent += names.len();
        for name in names {
            let answered = out.stdout.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&format!("{name}.").as_str()) && f.last() == Some(&wild.as_str())
            });
            if !answered {
                lost.push(name);
            }
        }
    }
    (lost, sent)
}
