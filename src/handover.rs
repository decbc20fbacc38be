//! The rolling hand-over between two nodedns processes on one node.
//!
//! During a DaemonSet rollout the new pod starts while the old one still serves the node's
//! listen address. Both bind it with `SO_REUSEPORT`, and from the moment the new process
//! binds, the kernel gives it a share of the node's queries, ready or not. A new process with
//! a wrong upstream list would then answer SERVFAIL for that share while the rollout waits on
//! its readiness. This module owns the one question that prevents it: is a listen address
//! already served by another process? The lifecycle ([`crate::app`]) defers such an address
//! until every zone has an upstream that answered, or until the other process lets go.

use std::net::SocketAddr;
use std::time::Duration;

/// How often a deferred address is looked at again.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Whether another process holds `addr` for UDP. A plain bind (no `SO_REUSEPORT`) fails with
/// `EADDRINUSE` while any socket holds the address; this process has not bound it yet when
/// asking, so the holder is someone else. An address not on this host (not yet configured,
/// `EADDRNOTAVAIL`) or port 0 is served by nobody. The socket bound to find out, if any, is
/// closed at once; it shares no group with the holder, so it takes none of its queries.
pub fn served_elsewhere(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    matches!(
        std::net::UdpSocket::bind(addr),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_address_someone_holds_is_served_elsewhere_and_a_free_one_is_not() {
        let held = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        assert!(served_elsewhere(addr));
        drop(held);
        assert!(!served_elsewhere(addr));
        assert!(!served_elsewhere("127.0.0.1:0".parse().unwrap()));
    }
}
