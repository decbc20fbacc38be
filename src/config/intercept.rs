//! `[interface] intercept` and `instance_lock`: transparent mode's addresses and the lock
//! file that tells one nodedns of the node whether another still serves.
//!
//! An intercepted address (the kube-dns ClusterIP) becomes one of nodedns's own: it is put
//! in `listen.addresses` at port 53 here, so it is bound, carried by the link and guarded
//! against loops like any listen address, and a zone that names it as an upstream is
//! refused with the fix (the `kube-dns-upstream` Service), in `zones`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::Listen;
use super::check::Check;
use super::raw::Opt;
use super::reference::{Env, expand_ip};

const KEY: &str = "interface.intercept";
/// A host directory every nodedns pod of a node mounts (see `daemonset/transparent/`).
const DEFAULT_LOCK: &str = "/run/nodedns-node/instances.lock";
/// The port intercepted addresses are served on: the kube-dns Service's.
const DNS_PORT: u16 = 53;

/// The intercepted IPs as written: addresses without a port, each one host.
/// Each may name an environment variable (`"${KUBE_DNS_SERVICE_HOST}"`: the kubelet sets it
/// for the kube-dns Service when nodedns runs in kube-dns's namespace).
pub fn addresses(
    c: &mut Check<'_>,
    raw: &Opt<Vec<Spanned<String>>>,
    env: Env<'_>,
) -> Option<Vec<IpAddr>> {
    let Some(list) = raw else {
        return Some(Vec::new());
    };
    let mut ips = Vec::new();
    let mut ok = true;
    for text in list.get_ref() {
        let reason = match expand_ip(text.get_ref(), env) {
            Err(_) if text.get_ref().parse::<SocketAddr>().is_ok() => format!(
                "`{}`: give the address alone; it is served on port {DNS_PORT}, the kube-dns Service's",
                text.get_ref()
            ),
            Err(reason) => reason,
            Ok(ip) if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() => {
                format!("`{ip}` is not a Service address to take over")
            }
            Ok(ip) if ips.contains(&ip) => format!("{ip} is listed twice"),
            Ok(ip) => {
                ips.push(ip);
                continue;
            }
        };
        c.error(Some(text.span()), KEY, reason);
        ok = false;
    }
    ok.then_some(ips)
}

/// Adds each intercepted address at port 53 to the listen addresses (once).
pub fn listen_on(listen: &mut Listen, ips: &[IpAddr]) {
    for &ip in ips {
        let addr = SocketAddr::new(ip, DNS_PORT);
        if !listen.addresses.contains(&addr) {
            listen.addresses.push(addr);
        }
    }
}

/// `interface.instance_lock`: a path, relative ones taken from the config's directory.
pub fn instance_lock(c: &mut Check<'_>, raw: &Opt<String>, base_dir: &Path) -> Option<PathBuf> {
    match raw {
        None => Some(PathBuf::from(DEFAULT_LOCK)),
        Some(path) if path.get_ref().is_empty() => {
            c.error(Some(path.span()), "interface.instance_lock", "empty path");
            None
        }
        Some(path) => Some(base_dir.join(path.get_ref())),
    }
}
