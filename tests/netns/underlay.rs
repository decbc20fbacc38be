//! The underlay resolvers: nsd serving the test zones, one instance per address.
//!
//! The zones stand in for what the seed's underlay resolvers know. `example.test.`
//! holds every name the suite looks up; a root zone `.` makes every other name
//! (the search-list expansions such as `registry.example.test.gitlab.svc.cluster.local`)
//! an authoritative NXDOMAIN, as a recursive underlay resolver would answer, instead
//! of nsd's REFUSED for names outside its zones, which a forwarder must treat as an
//! upstream failure. Both zones carry a 2 s negative TTL (SOA MINIMUM, RFC 2308 §5)
//! so negative answers expire within a test.

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::process::Daemon;

/// `registry.example.test` A: the name every job pulls images from.
pub const REGISTRY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 10);
/// `registry.example.test` AAAA (only a record's content: nothing is sent there).
pub const REGISTRY_V6: &str = "2001:db8::10";
/// `short.example.test` A, published with [`SHORT_TTL_SECS`].
pub const SHORT_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 20);
pub const SHORT_TTL_SECS: u64 = 2;
/// `ready.example.test` A, only used to poll for readiness.
pub const READY_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 1);
/// Every `*.wild.example.test` name resolves to this A.
pub const WILD_V4: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 3);
/// `big.example.test` has this many A records: 198.18.4.1 ..= 198.18.4.40.
pub const BIG_COUNT: u8 = 40;

/// The A records of `big.example.test`.
pub fn big_addresses() -> Vec<Ipv4Addr> {
    (1..=BIG_COUNT)
        .map(|i| Ipv4Addr::new(198, 18, 4, i))
        .collect()
}

/// The `example.test.` zone file. 40 A records of one name make an answer of
/// ~680 bytes: over the 512 bytes a client without EDNS accepts (RFC 1035 §4.2.1),
/// under the forwarder's EDNS buffer towards its upstreams.
pub fn example_zone() -> String {
    let mut zone = String::from(
        "$ORIGIN example.test.\n\
         $TTL 60\n\
         @ IN SOA ns hostmaster 1 3600 600 86400 2\n\
         @ IN NS ns\n\
         ns IN A 198.18.1.251\n",
    );
    let _ = writeln!(zone, "ready IN A {READY_V4}");
    let _ = writeln!(zone, "registry IN A {REGISTRY_V4}");
    let _ = writeln!(zone, "registry IN AAAA {REGISTRY_V6}");
    let _ = writeln!(zone, "short {SHORT_TTL_SECS} IN A {SHORT_V4}");
    let _ = writeln!(zone, "*.wild IN A {WILD_V4}");
    for address in big_addresses() {
        let _ = writeln!(zone, "big IN A {address}");
    }
    zone
}

/// The root zone: only SOA and NS, so every name outside `example.test.` is NXDOMAIN.
pub fn root_zone() -> String {
    "$ORIGIN .\n\
     $TTL 60\n\
     . IN SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 2\n\
     . IN NS ns.example.test.\n"
        .to_owned()
}

/// nsd.conf for one instance listening on `address` with its state in `dir`:
/// no chroot, no user switch, no database, one server process. Response rate limiting is
/// off: these stand for the site's recursive resolvers, which do not rate-limit their own
/// clients, and a failover loop would otherwise trip it and see drops that are nsd's policy.
pub fn nsd_config(address: Ipv4Addr, dir: &Path) -> String {
    let d = dir.display();
    format!(
        "server:\n\
         \x20 ip-address: {address}\n\
         \x20 port: 53\n\
         \x20 do-ip6: no\n\
         \x20 server-count: 1\n\
         \x20 rrl-ratelimit: 0\n\
         \x20 rrl-whitelist-ratelimit: 0\n\
         \x20 username: \"\"\n\
         \x20 chroot: \"\"\n\
         \x20 zonesdir: \"{d}\"\n\
         \x20 database: \"\"\n\
         \x20 zonelistfile: \"{d}/zone.list\"\n\
         \x20 xfrdfile: \"{d}/xfrd.state\"\n\
         \x20 xfrdir: \"{d}\"\n\
         \x20 pidfile: \"{d}/nsd.pid\"\n\
         \x20 logfile: \"{d}/nsd.log\"\n\
         \x20 verbosity: 1\n\
         remote-control:\n\
         \x20 control-enable: no\n\
         zone:\n\
         \x20 name: \".\"\n\
         \x20 zonefile: \"{d}/root.zone\"\n\
         zone:\n\
         \x20 name: \"example.test.\"\n\
         \x20 zonefile: \"{d}/example.test.zone\"\n"
    )
}

/// Writes config and zones into `dir` and starts nsd in the foreground (`-d`)
/// inside namespace `ns`. Readiness is the caller's to poll.
pub fn start_nsd(name: &str, ns: &str, address: Ipv4Addr, dir: &Path) -> Daemon {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let write = |file: &str, text: String| {
        let path = dir.join(file);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    };
    write("nsd.conf", nsd_config(address, dir));
    write("example.test.zone", example_zone());
    write("root.zone", root_zone());
    let conf = dir.join("nsd.conf");
    let conf = conf.to_string_lossy();
    Daemon::start(
        name,
        ns,
        "nsd",
        &["-d", "-c", &conf],
        &dir.join("stderr.log"),
    )
}
