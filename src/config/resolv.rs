//! Upstreams taken from a resolv.conf file (`resolv_conf = "/etc/resolv.conf"` in a zone).
//!
//! This module owns reading `nameserver` lines the way the C library does and the loop guard
//! for them: a nameserver that is one of nodedns's own listen addresses is skipped, because
//! on a node whose resolv.conf already points at nodedns, forwarding there would loop. It does
//! not watch the file; the runtime re-reads it through [`upstreams_from_file`].
//!
//! On a node that runs systemd-resolved, `/etc/resolv.conf` names only its loopback stub
//! (`127.0.0.53`, or `127.0.0.54`), and the real resolvers are in
//! `/run/systemd/resolve/resolv.conf`. The kubelet reads that file instead for the same
//! reason, and so does this module: where every nameserver of a resolv.conf is a stub, the
//! upstreams come from systemd-resolved's file ([`stub_fallback`] says where), said once in
//! the log. Where that file is missing or names nothing, the stub itself is used: nodedns
//! runs in the node's network namespace, where the stub answers.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use super::units::{DNS_PORT, is_own_address, not_a_resolver};
use crate::regular_file::{self, Symlinks};

/// Upstreams read from a resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvUpstreams {
    /// The nameservers to use, in file order, port 53.
    pub upstreams: Vec<SocketAddr>,
    /// Nameservers dropped because they are nodedns's own listen addresses.
    pub skipped: Vec<SocketAddr>,
}

/// The most upstreams a zone may have; extra nameservers are ignored (glibc uses only 3).
pub const MAX_UPSTREAMS: usize = 16;

/// The `nameserver` addresses of a resolv.conf text, in order, without duplicates.
///
/// Comments start with `#` or `;`; only the first word after `nameserver` counts, as in glibc
/// `res_init`; an IPv6 zone index (`%eth0`) is dropped, and unparsable entries and addresses
/// that name no single host (unspecified, broadcast, multicast) are skipped.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else { continue };
        let address = word.split('%').next().unwrap_or(word);
        match address.parse::<IpAddr>() {
            Ok(ip) if not_a_resolver(ip).is_some() => {
                let why = not_a_resolver(ip).unwrap_or_default();
                tracing::warn!(nameserver = word, "resolv.conf: {why}, skipped");
            }
            Ok(ip) if !found.contains(&ip) => found.push(ip),
            Ok(_) => {}
            Err(_) => tracing::warn!(nameserver = word, "resolv.conf: not an IP address, skipped"),
        }
    }
    found
}

/// Upstreams from a resolv.conf text, skipping nodedns's own `listen` addresses.
///
/// Fails when the text names no nameserver, or only nodedns itself (a forwarding loop).
pub fn upstreams_from_text(text: &str, listen: &[SocketAddr]) -> Result<ResolvUpstreams, String> {
    let all = nameservers(text);
    if all.is_empty() {
        return Err("has no `nameserver` line with an IP address".to_owned());
    }
    let (skipped, mut upstreams): (Vec<SocketAddr>, Vec<SocketAddr>) = all
        .into_iter()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .partition(|&addr| is_own_address(addr, listen));
    if upstreams.is_empty() {
        let own: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        return Err(format!(
            "lists only nodedns's own listen addresses ({}): forwarding loop",
            own.join(", ")
        ));
    }
    if upstreams.len() > MAX_UPSTREAMS {
        tracing::warn!(
            count = upstreams.len(),
            "resolv.conf: only the first {MAX_UPSTREAMS} nameservers are used"
        );
        upstreams.truncate(MAX_UPSTREAMS);
    }
    for addr in &skipped {
        tracing::warn!(%addr, "resolv.conf: nameserver is nodedns's own listen address, skipped");
    }
    Ok(ResolvUpstreams { upstreams, skipped })
}

/// Reads `path` and takes its upstreams as [`upstreams_from_text`] does; where it names only
/// systemd-resolved's stub, from [`stub_fallback`] of `path` instead, if that file names any.
pub fn upstreams_from_file(path: &Path, listen: &[SocketAddr]) -> Result<ResolvUpstreams, String> {
    let found = read_upstreams(path, listen)?;
    if !found.upstreams.iter().all(|a| is_resolved_stub(a.ip())) {
        return Ok(found);
    }
    let fallback = stub_fallback(path);
    match read_upstreams(&fallback, listen) {
        Ok(real) if !real.upstreams.iter().all(|a| is_resolved_stub(a.ip())) => {
            tracing::info!(
                resolv_conf = %path.display(),
                upstreams_from = %fallback.display(),
                upstreams = ?real.upstreams,
                "resolv.conf names only systemd-resolved's stub: using the resolvers behind it"
            );
            Ok(real)
        }
        Ok(_) | Err(_) => {
            tracing::warn!(
                resolv_conf = %path.display(),
                not_usable = %fallback.display(),
                "resolv.conf names only systemd-resolved's stub and its upstream file names no \
                 other resolver: forwarding to the stub"
            );
            Ok(found)
        }
    }
}

fn read_upstreams(path: &Path, listen: &[SocketAddr]) -> Result<ResolvUpstreams, String> {
    let text = regular_file::read_text(path, super::MAX_FILE, Symlinks::Follow)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    upstreams_from_text(&text, listen).map_err(|reason| format!("{} {reason}", path.display()))
}

/// systemd-resolved's stub listeners: `127.0.0.53` (the stub) and `127.0.0.54` (its
/// proxy-only stub), the only addresses a resolved-managed `/etc/resolv.conf` names.
pub fn is_resolved_stub(ip: IpAddr) -> bool {
    ip == IpAddr::from([127, 0, 0, 53]) || ip == IpAddr::from([127, 0, 0, 54])
}

/// systemd-resolved's upstream file for a resolv.conf at `path`: beside the same root.
/// `/etc/resolv.conf` gives `/run/systemd/resolve/resolv.conf`, and a node's file mounted at
/// `/host/etc/resolv.conf` gives `/host/run/systemd/resolve/resolv.conf`, so a container
/// that mounts both under one prefix needs no setting. A path not ending in
/// `etc/resolv.conf` gives `/run/systemd/resolve/resolv.conf`.
pub fn stub_fallback(path: &Path) -> PathBuf {
    const UPSTREAM_FILE: &str = "run/systemd/resolve/resolv.conf";
    let root = path
        .parent()
        .filter(|etc| etc.file_name().is_some_and(|n| n == "etc"))
        .filter(|_| path.file_name().is_some_and(|n| n == "resolv.conf"))
        .and_then(Path::parent);
    match root {
        Some(root) if !root.as_os_str().is_empty() => root.join(UPSTREAM_FILE),
        _ => Path::new("/").join(UPSTREAM_FILE),
    }
}

/// The files whose content decides the upstreams read from `path`: itself and its
/// [`stub_fallback`], for the runtime's change watch.
pub fn watched_files(path: &Path) -> [PathBuf; 2] {
    [path.to_path_buf(), stub_fallback(path)]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn reads_nameservers_and_ignores_comments_and_options() {
        let text = "# generated by NetworkManager\n\
                    search example.internal\n\
                    ; nameserver 10.9.9.9\n\
                    nameserver 10.0.0.2   # VPC resolver\n\
                    options ndots:5 timeout:1\n\
                    \tnameserver\t10.1.0.251 extra words\n\
                    nameserver\n\
                    nameserver not-an-ip\n\
                    domain example.internal\n";
        let ips: Vec<IpAddr> = vec!["10.0.0.2".parse().unwrap(), "10.1.0.251".parse().unwrap()];
        assert_eq!(nameservers(text), ips);
    }

    #[test]
    fn ipv6_nameservers_lose_their_scope_and_get_port_53() {
        let text = "nameserver fe80::1%eth0\nnameserver 2001:db8::53\n";
        let got = upstreams_from_text(text, &[]).unwrap();
        assert_eq!(got.upstreams, addrs(&["[fe80::1]:53", "[2001:db8::53]:53"]));
    }

    #[test]
    fn duplicate_nameservers_are_used_once() {
        let got = upstreams_from_text("nameserver 10.0.0.2\nnameserver 10.0.0.2\n", &[]).unwrap();
        assert_eq!(got.upstreams, addrs(&["10.0.0.2:53"]));
    }

    #[test]
    fn own_listen_address_is_skipped() {
        let text = "nameserver 169.254.20.10\nnameserver 10.0.0.2\n";
        let listen = addrs(&["169.254.20.10:53"]);
        let got = upstreams_from_text(text, &listen).unwrap();
        assert_eq!(got.upstreams, addrs(&["10.0.0.2:53"]));
        assert_eq!(got.skipped, listen);
    }

    #[test]
    fn same_ip_on_another_port_is_not_a_loop() {
        let got = upstreams_from_text("nameserver 127.0.0.1\n", &addrs(&["127.0.0.1:5353"]));
        assert_eq!(got.unwrap().upstreams, addrs(&["127.0.0.1:53"]));
    }

    #[test]
    fn only_own_listen_addresses_is_a_loop() {
        let listen = addrs(&["169.254.20.10:53", "10.96.0.10:53"]);
        let text = "nameserver 169.254.20.10\nnameserver 10.96.0.10\n";
        let reason = upstreams_from_text(text, &listen).unwrap_err();
        assert!(reason.contains("forwarding loop"), "{reason}");
        assert!(reason.contains("169.254.20.10:53"), "{reason}");
    }

    #[test]
    fn no_nameserver_is_refused() {
        let reason = upstreams_from_text("search svc.cluster.local\n", &[]).unwrap_err();
        assert!(reason.contains("no `nameserver`"), "{reason}");
    }

    #[test]
    fn at_most_sixteen_nameservers_are_used() {
        let text: String = (1..=20)
            .map(|i| format!("nameserver 10.0.0.{i}\n"))
            .collect();
        assert_eq!(
            upstreams_from_text(&text, &[]).unwrap().upstreams.len(),
            MAX_UPSTREAMS
        );
    }

    /// `root/etc/resolv.conf` and, when given, `root/run/systemd/resolve/resolv.conf`.
    fn node_files(stub: &str, upstream: Option<&str>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let path = dir.path().join("etc/resolv.conf");
        std::fs::write(&path, stub).unwrap();
        if let Some(text) = upstream {
            let run = dir.path().join("run/systemd/resolve");
            std::fs::create_dir_all(&run).unwrap();
            std::fs::write(run.join("resolv.conf"), text).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn a_systemd_resolved_stub_is_replaced_by_the_resolvers_behind_it() {
        let (_dir, path) = node_files(
            "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n",
            Some("nameserver 192.0.2.1\nnameserver 192.0.2.2\n"),
        );
        let got = upstreams_from_file(&path, &[]).unwrap();
        assert_eq!(got.upstreams, addrs(&["192.0.2.1:53", "192.0.2.2:53"]));
    }

    #[test]
    fn without_the_upstream_file_the_stub_is_used() {
        let (_dir, path) = node_files("nameserver 127.0.0.53\n", None);
        let got = upstreams_from_file(&path, &[]).unwrap();
        assert_eq!(got.upstreams, addrs(&["127.0.0.53:53"]));
    }

    #[test]
    fn a_resolv_conf_with_any_real_resolver_is_taken_as_written() {
        let (_dir, path) = node_files(
            "nameserver 127.0.0.53\nnameserver 192.0.2.9\n",
            Some("nameserver 192.0.2.1\n"),
        );
        let got = upstreams_from_file(&path, &[]).unwrap();
        assert_eq!(got.upstreams, addrs(&["127.0.0.53:53", "192.0.2.9:53"]));
    }

    #[test]
    fn the_upstream_file_is_found_beside_the_same_root() {
        let at = |p: &str| stub_fallback(Path::new(p));
        assert_eq!(
            at("/etc/resolv.conf"),
            Path::new("/run/systemd/resolve/resolv.conf")
        );
        assert_eq!(
            at("/host/etc/resolv.conf"),
            Path::new("/host/run/systemd/resolve/resolv.conf")
        );
        assert_eq!(
            at("/etc/nodedns/upstreams.conf"),
            Path::new("/run/systemd/resolve/resolv.conf")
        );
        assert_eq!(
            at("etc/resolv.conf"),
            Path::new("/run/systemd/resolve/resolv.conf")
        );
    }

    #[test]
    fn unreadable_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.conf");
        let reason = upstreams_from_file(&path, &[]).unwrap_err();
        assert!(
            reason.contains("cannot read") && reason.contains("missing.conf"),
            "{reason}"
        );
    }
}
