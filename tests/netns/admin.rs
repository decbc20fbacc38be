//! The admin endpoint while two nodedns processes share the node address, as in a rollout:
//! each pod's probe reaches its own process over its own unix socket, and the Prometheus
//! port belongs to exactly one process at a time, passing to the other when it exits.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::{self, Transport};
use crate::process::{Daemon, Outcome, ip, run_host, run_in};
use crate::topology::{NODE_DNS, Topology};
use crate::underlay::WILD_V4;
use crate::{CONFIG, report, root_or_skip};

/// The admin port both processes are configured with.
const ADMIN_PORT: u16 = 9253;
/// Where the second process's only upstream is: black-holed in the node namespace, so it
/// never answers and that process never becomes ready.
const BLACKHOLE: &str = "198.18.5.0/24";
const UNREACHABLE_UPSTREAM: &str = "198.18.5.1:53";

/// The suite's config with the admin unix socket at `socket`.
pub fn with_socket(config: &str, socket: &Path) -> String {
    let admin = format!("[admin]\naddress = \"{NODE_DNS}:{ADMIN_PORT}\"");
    assert!(config.contains(&admin), "the suite's admin address moved");
    config.replace(
        &admin,
        &format!("{admin}\nsocket = \"{}\"", socket.display()),
    )
}

/// `nodedns probe ready --socket <socket>`, run from the host: a unix socket's path reaches
/// the process that bound it whatever its network namespace.
fn probe_ready(socket: &Path) -> Outcome {
    let socket = socket.to_string_lossy();
    let args = ["probe", "ready", "--socket", &socket];
    run_host(
        env!("CARGO_BIN_EXE_nodedns"),
        &args,
        Duration::from_secs(10),
    )
}

/// `GET route` over the unix socket: the body of a 200 answer, `None` otherwise.
pub fn unix_get(socket: &Path, route: &str) -> Option<String> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {route} HTTP/1.1\r\nHost: nodedns\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The sum of `nodedns_requests_total` over its label sets, from `/metrics` on `socket`.
fn requests_total(socket: &Path) -> f64 {
    let body = unix_get(socket, "/metrics").expect("/metrics over the admin socket");
    body.lines()
        .filter(|l| l.starts_with("nodedns_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The pids listening on the admin port in the node namespace (`ss -ltnpH`).
fn admin_port_holders(node: &str) -> BTreeSet<u32> {
    let filter = format!("sport = :{ADMIN_PORT}");
    let out = run_in(node, "ss", &["-ltnpH", &filter], Duration::from_secs(10));
    assert!(out.success(), "ss failed: {}", out.stderr);
    out.stdout
        .split("pid=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

#[test]
fn probes_and_scrapes_reach_one_process_while_two_share_the_node_address() {
    if !root_or_skip("probes_and_scrapes_reach_one_process_while_two_share_the_node_address") {
        return;
    }
    let sockets = tempfile::tempdir().unwrap();
    let (old_sock, new_sock) = (
        sockets.path().join("old.sock"),
        sockets.path().join("new.sock"),
    );
    let bin = env!("CARGO_BIN_EXE_nodedns");
    let mut net = Topology::build(5, bin, &with_socket(CONFIG, &old_sock));
    let mut old = net.take_forwarder().unwrap();
    ip(&["-n", &net.node, "route", "add", "blackhole", BLACKHOLE]);
    // Ready once an upstream has answered (the topology's own wait asked through it).
    let deadline = Instant::now() + Duration::from_secs(15);
    while !probe_ready(&old_sock).success() {
        assert!(Instant::now() < deadline, "{}", old.log_tail(3000));
        thread::sleep(Duration::from_millis(200));
    }

    // The new pod's process: same listen and admin addresses, its own socket, and an
    // upstream that never answers, so it is not ready.
    let new_config = with_socket(CONFIG, &new_sock).replace(
        "upstreams = [\"198.18.1.251:53\", \"198.18.1.252:53\"]",
        &format!("upstreams = [\"{UNREACHABLE_UPSTREAM}\"]"),
    );
    assert!(new_config.contains(UNREACHABLE_UPSTREAM));
    let new_path = net.dir.path().join("nodedns-new.toml");
    std::fs::write(&new_path, new_config).unwrap();
    let conf = new_path.to_string_lossy().into_owned();
    let log = net.dir.path().join("nodedns-new.log");
    let mut new = Daemon::start("nodedns (new)", &net.node, bin, &["--config", &conf], &log);
    // It finds the DNS address served and defers it, and the admin port taken.
    new.wait_for_log("served by another process", Duration::from_secs(15));
    new.wait_for_log("in use (another nodedns draining?)", Duration::from_secs(5));
    let logs = |old: &Daemon, new: &Daemon| {
        format!(
            "--- old ---\n{}\n--- new ---\n{}",
            old.log_tail(3000),
            new.log_tail(3000)
        )
    };

    // (1) Each probe is answered by its own process, every time.
    let before = requests_total(&old_sock);
    for round in 0..5 {
        let o = probe_ready(&old_sock);
        assert!(
            o.success() && o.stdout == "ready\n",
            "round {round}: old {o:?}\n{}",
            logs(&old, &new)
        );
        let n = probe_ready(&new_sock);
        assert_eq!(
            n.code,
            Some(1),
            "round {round}: new {n:?}\n{}",
            logs(&old, &new)
        );
        assert!(n.stderr.contains("503"), "round {round}: new {n:?}");
        assert!(
            n.stderr.contains("waiting for zone ."),
            "round {round}: new {n:?}"
        );
        thread::sleep(Duration::from_millis(300));
    }
    // The old process answers every one of the pod's queries: the new one, which cannot
    // forward, has not joined the address, so the kernel gives it none of them.
    let mut answered = 0;
    for i in 0..20 {
        let name = format!("admin{i}.wild.example.test");
        let a = clients::dig(&net.pod, None, &name, "A", Transport::Udp);
        if a.addresses().contains(&WILD_V4.into()) {
            answered += 1;
        }
    }
    let after = requests_total(&old_sock);
    assert!(
        answered == 20 && after >= before + 20.0,
        "old answered {answered}/20, requests {before} -> {after}\n{}",
        logs(&old, &new)
    );

    // (2) One process holds the Prometheus port: the old one, every time it is looked at.
    for _ in 0..5 {
        let holders = admin_port_holders(&net.node);
        assert_eq!(holders, BTreeSet::from([old.pid()]), "{}", logs(&old, &new));
        thread::sleep(Duration::from_millis(200));
    }
    let stopped = Instant::now();
    let status = old.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "old: {status:?}\n{}",
        logs(&old, &new)
    );
    assert!(!old_sock.exists(), "the old process left its socket file");
    // Retries back off to 5 s: allow four times that.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let holders = admin_port_holders(&net.node);
        if holders == BTreeSet::from([new.pid()]) {
            break;
        }
        assert!(holders.is_empty(), "{holders:?}\n{}", logs(&old, &new));
        assert!(
            Instant::now() < deadline,
            "the new process never took the admin port\n{}",
            logs(&old, &new)
        );
        thread::sleep(Duration::from_millis(100));
    }
    let took = stopped.elapsed();
    // With the old process gone it serves the address after all (stale and cached answers
    // beat a closed port), and its own socket still says it is not ready.
    new.wait_for_log("joined the listen address", Duration::from_secs(10));
    assert_eq!(probe_ready(&new_sock).code, Some(1));
    report(&format!(
        "netns admin: old answered {answered}/20 pod queries while the unready new one waited; the new process held the admin port {took:?} after SIGTERM to the old"
    ));
}
