//! The listener check: each listen address is an address of this host, answers over UDP and
//! TCP, and what answers is nodedns (its CHAOS `version.bind` says so, and `id.server` names
//! the node it runs on).

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use super::probe::{self, Outcome, Question, Transport, exchange, ms};
use super::report::Verdict;
use super::upstreams::unreachable_verdict;

const NOT_RUNNING_FIX: &str = "start nodedns with this config on this node (Kubernetes: \
    `kubectl -n <namespace> get pods -o wide` for the DaemonSet pod on this node) and read its \
    log for bind errors";
const NOT_LOCAL_FIX: &str = "the address is on no interface here: run doctor on the node \
    (or in the nodedns pod), or let nodedns add it ([interface] manage = true), or add it by \
    hand (`ip addr add <ip>/32 dev lo`)";
const IMPOSTOR_FIX: &str = "another DNS server holds this address and port (`ss -ulpn` and \
    `ss -tlpn` show which): stop it or give nodedns another listen address";

/// The verdicts for every listen address; all probes run concurrently.
pub async fn check(addresses: &[SocketAddr], wait: Duration) -> Vec<Verdict> {
    let mut handles = Vec::new();
    for &addr in addresses {
        handles.push(tokio::spawn(check_one(addr, wait)));
    }
    let mut verdicts = Vec::new();
    for handle in handles {
        match handle.await {
            Ok(v) => verdicts.extend(v),
            Err(e) => verdicts.push(Verdict::fail("listener", e.to_string(), NOT_RUNNING_FIX)),
        }
    }
    verdicts
}

async fn check_one(addr: SocketAddr, wait: Duration) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    if let Some(v) = local_verdict(addr) {
        verdicts.push(v);
    }
    let (Some(version), Some(id)) = (
        Question::chaos("version.bind"),
        Question::chaos("id.server"),
    ) else {
        return verdicts;
    };
    let (udp, udp_id, tcp) = tokio::join!(
        exchange(addr, Transport::Udp, &version, wait),
        exchange(addr, Transport::Udp, &id, wait),
        exchange(addr, Transport::Tcp, &version, wait),
    );
    verdicts.push(identity_verdict(addr, Transport::Udp, &udp, Some(&udp_id)));
    verdicts.push(identity_verdict(addr, Transport::Tcp, &tcp, None));
    verdicts
}

/// Binding port 0 on the IP succeeds only when the IP is this host's. nodedns itself binds
/// with `IP_FREEBIND`, so it can run before the address exists, and answer nothing.
fn local_verdict(addr: SocketAddr) -> Option<Verdict> {
    let check = format!("listener {} address", addr.ip());
    match std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)) {
        Ok(_) => None,
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => Some(Verdict::fail(
            check,
            format!("{} is not an address of this host", addr.ip()),
            NOT_LOCAL_FIX,
        )),
        Err(e) => Some(Verdict::warn(
            check,
            format!("cannot tell whether {} is local: {e}", addr.ip()),
            NOT_LOCAL_FIX,
        )),
    }
}

fn identity_verdict(
    addr: SocketAddr,
    transport: Transport,
    version: &Outcome,
    id: Option<&Outcome>,
) -> Verdict {
    let check = format!("listener {transport} {addr}");
    let Outcome::Reply { rtt, message } = version else {
        let mut v = unreachable_verdict(check, version);
        v.fix = Some(NOT_RUNNING_FIX.to_owned());
        return v;
    };
    match probe::first_txt(message) {
        Some(text) if text.starts_with("nodedns") => {
            let host = id
                .and_then(|o| match o {
                    Outcome::Reply { message, .. } => probe::first_txt(message),
                    _ => None,
                })
                .map(|h| format!(" on {h}"))
                .unwrap_or_default();
            Verdict::ok(check, format!("{text}{host} answers in {}", ms(*rtt)))
        }
        Some(text) => Verdict::fail(
            check,
            format!("answered by another server: version.bind is \"{text}\""),
            IMPOSTOR_FIX,
        ),
        None => Verdict::fail(
            check,
            format!(
                "answered by another server: version.bind gave {} and no text",
                probe::rcode_name(message)
            ),
            IMPOSTOR_FIX,
        ),
    }
}
