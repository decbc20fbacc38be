//! The seed's network rebuilt in three network namespaces, and the guard that
//! removes it again.
//!
//! ```text
//!   underlay                    node                                  pod
//!   nsd 198.18.1.251 ─┐         nodedns 169.254.20.10:53 (on lo)
//!   nsd 198.18.1.252 ─┴ node0 ── underlay0 198.18.1.1/24
//!                                pod0 198.19.0.1/24 ─────────── eth0 198.19.0.2/24
//!                                                                route 169.254.20.10 via 198.19.0.1
//!                                                                (no route to 198.18.1.0/24)
//! ```
//!
//! Namespace names are unique per process and build (pid and a counter), so the
//! suite runs beside itself. Interfaces are created directly inside their
//! namespaces (`ip link add ... netns`), never in the host's, so their short
//! names only need to be unique within one namespace. `/etc/netns/<pod>/resolv.conf`
//! is what `ip netns exec <pod>` shows clients as `/etc/resolv.conf`.
//! [`Topology`]'s `Drop` kills every process, deletes the namespaces (and with
//! them the veths) and the `/etc/netns` entry, also when a test panics.

use std::fs;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::clients::{self, Transport};
use crate::process::{Daemon, ip, run_host};
use crate::underlay::{self, READY_V4};

/// Where the forwarder listens, as in the seed: link-local, on the node's `lo`
/// (this kernel has no dummy driver).
pub const NODE_DNS: Ipv4Addr = Ipv4Addr::new(169, 254, 20, 10);
/// The underlay resolvers, primary first.
pub const RESOLVERS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 18, 1, 251),
    Ipv4Addr::new(198, 18, 1, 252),
];

/// `ip netns add` mounts /run/netns on first use; serialise creation so two
/// tests starting together do not race on that mount.
static NETNS_ADD: Mutex<()> = Mutex::new(());
static BUILDS: AtomicU32 = AtomicU32::new(0);

/// The pod's `/etc/resolv.conf`, as a GitLab job pod gets it.
pub fn pod_resolv_conf(ndots: u8) -> String {
    format!(
        "nameserver {NODE_DNS}\n\
         search gitlab.svc.cluster.local svc.cluster.local cluster.local\n\
         options ndots:{ndots}\n"
    )
}

/// The three namespaces with their resolvers and forwarder running.
pub struct Topology {
    pub underlay: String,
    pub node: String,
    pub pod: String,
    /// Scratch space for configs, logs and client binaries; removed on drop.
    pub dir: TempDir,
    namespaces: Vec<String>,
    etc_netns: Option<PathBuf>,
    resolvers: Vec<Daemon>,
    forwarder: Option<Daemon>,
}

impl Topology {
    /// Builds the namespaces with the pod's resolv.conf saying `ndots`, starts
    /// nsd on both underlay addresses and runs `forwarder --config <config>` in
    /// the node namespace, then waits until the forwarder answers.
    pub fn build(ndots: u8, forwarder: &str, config: &str) -> Topology {
        let n = BUILDS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("nd{}x{n}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut net = Topology {
            underlay: format!("{prefix}-underlay"),
            node: format!("{prefix}-node"),
            pod: format!("{prefix}-pod"),
            dir,
            namespaces: Vec::new(),
            etc_netns: None,
            resolvers: Vec::new(),
            forwarder: None,
        };
        net.add_namespaces();
        net.wire();
        net.write_resolv_conf(ndots);
        net.start_resolvers();
        net.start_forwarder(forwarder, config);
        net
    }

    fn add_namespaces(&mut self) {
        let _guard = NETNS_ADD.lock().unwrap_or_else(|e| e.into_inner());
        for name in [&self.underlay, &self.node, &self.pod] {
            ip(&["netns", "add", name]);
            // Recorded at once, so Drop removes exactly what exists.
            self.namespaces.push(name.clone());
            ip(&["-n", name, "link", "set", "lo", "up"]);
        }
    }

    fn wire(&self) {
        let (u, n, p) = (&self.underlay, &self.node, &self.pod);
        for (end, ns, peer, peer_ns) in [("underlay0", n, "node0", u), ("pod0", n, "eth0", p)] {
            ip(&[
                "link", "add", "name", end, "netns", ns, "type", "veth", "peer", "name", peer,
                "netns", peer_ns,
            ]);
        }
        for (ns, addr, dev) in [
            (u, "198.18.1.251/24", "node0"),
            (u, "198.18.1.252/24", "node0"),
            (n, "198.18.1.1/24", "underlay0"),
            (n, "169.254.20.10/32", "lo"),
            (n, "198.19.0.1/24", "pod0"),
            (p, "198.19.0.2/24", "eth0"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        }
        for (ns, dev) in [(u, "node0"), (n, "underlay0"), (n, "pod0"), (p, "eth0")] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        // The pod reaches the node's link-local address and nothing else.
        ip(&[
            "-n",
            p,
            "route",
            "add",
            "169.254.20.10/32",
            "via",
            "198.19.0.1",
        ]);
    }

    fn write_resolv_conf(&mut self, ndots: u8) {
        let dir = PathBuf::from("/etc/netns").join(&self.pod);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.etc_netns = Some(dir.clone());
        let path = dir.join("resolv.conf");
        fs::write(&path, pod_resolv_conf(ndots))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn start_resolvers(&mut self) {
        for (i, address) in RESOLVERS.into_iter().enumerate() {
            let dir = self.dir.path().join(format!("nsd{i}"));
            let name = format!("nsd {address}");
            let daemon = underlay::start_nsd(&name, &self.underlay, address, &dir);
            self.resolvers.push(daemon);
        }
        for address in RESOLVERS {
            self.wait_until_answers(&self.node.clone(), address, |net| {
                net.resolvers.iter_mut().all(|d| d.is_running())
            });
        }
    }

    fn start_forwarder(&mut self, program: &str, config: &str) {
        let path = self.dir.path().join("nodedns.toml");
        fs::write(&path, config).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let log = self.dir.path().join("nodedns.log");
        let conf = path.to_string_lossy().into_owned();
        let daemon = Daemon::start("nodedns", &self.node, program, &["--config", &conf], &log);
        self.forwarder = Some(daemon);
        self.wait_until_answers(&self.node.clone(), NODE_DNS, |net| {
            net.forwarder.as_mut().is_some_and(Daemon::is_running)
        });
    }

    /// Polls `server` from namespace `ns` for `ready.example.test` until it
    /// answers (bounded: 15 s), failing early when `alive` says a daemon died.
    fn wait_until_answers(&mut self, ns: &str, server: Ipv4Addr, alive: fn(&mut Topology) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        let server = server.to_string();
        loop {
            let answer = clients::dig(ns, Some(&server), "ready.example.test", "A", Transport::Udp);
            if answer.addresses().contains(&READY_V4.into()) {
                return;
            }
            // Drop prints the daemons' logs when these fire.
            assert!(alive(self), "a daemon exited before {server} answered");
            assert!(
                Instant::now() < deadline,
                "{server} did not answer within 15 s: {answer:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills underlay resolver `i` (0 = primary 198.18.1.251) with SIGKILL.
    pub fn kill_resolver(&mut self, i: usize) {
        if let Some(daemon) = self.resolvers.get_mut(i) {
            daemon.kill();
        }
    }

    /// The forwarder's config file, for a second forwarder started beside it.
    pub fn forwarder_config(&self) -> PathBuf {
        self.dir.path().join("nodedns.toml")
    }

    /// Hands the running forwarder to the caller (a rollout test stops it).
    pub fn take_forwarder(&mut self) -> Option<Daemon> {
        self.forwarder.take()
    }

    /// Whether the forwarder is still running (it must survive every test).
    pub fn forwarder_running(&mut self) -> bool {
        self.forwarder.as_mut().is_some_and(Daemon::is_running)
    }

    /// Tails of every daemon's log, for assertion messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for daemon in self.forwarder.iter().chain(&self.resolvers) {
            text.push_str(&format!(
                "--- {} log (tail) ---\n{}\n",
                daemon.name,
                daemon.log_tail(3000)
            ));
        }
        text
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.logs());
        }
        if let Some(daemon) = self.forwarder.as_mut() {
            daemon.kill();
        }
        for daemon in &mut self.resolvers {
            daemon.kill();
        }
        // Deleting a namespace destroys the veths in it and, with them, their peers.
        for name in self.namespaces.iter().rev() {
            let out = run_host("ip", &["netns", "del", name], Duration::from_secs(10));
            if !out.success() {
                eprintln!("cleanup: ip netns del {name}: {}", out.stderr.trim());
            }
        }
        if let Some(dir) = &self.etc_netns
            && let Err(e) = fs::remove_dir_all(dir)
        {
            eprintln!("cleanup: remove {}: {e}", dir.display());
        }
    }
}
