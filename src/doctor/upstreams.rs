//! Upstream probes: every upstream of every zone, asked from this node over UDP and over TCP,
//! and asked each `--name` that routes to its zone.
//!
//! The verdicts tell apart the failures that have different fixes: a timeout (packets dropped:
//! a route or firewall), a refusal (port closed, or REFUSED: an ACL), and SERVFAIL (the
//! upstream is reachable but cannot resolve, such as a cluster DNS without a forwarder for
//! external names). The first good answer per name is kept as the reference the through-cache
//! check compares against.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::Message;
use tokio::task::JoinHandle;

use super::probe::{self, Outcome, Question, Transport, exchange, ms};
use super::report::Verdict;
use crate::config::Zone;
use crate::zones::{ZoneTable, to_wire};

const TIMEOUT_FIX: &str = "packets to it are dropped: check the route and firewall from this \
    node (`ip route get`, security groups, NetworkPolicy) and that the resolver runs";
const PORT_CLOSED_FIX: &str = "nothing listens on that port: check the address and port in \
    [[zones]] upstreams and that the resolver runs";
const REFUSED_FIX: &str = "the resolver refuses this node: allow the node's address in its \
    ACL (e.g. BIND allow-recursion, unbound access-control) or use another resolver";
const SERVFAIL_FIX: &str = "the resolver is reachable but cannot resolve: give it a working \
    forwarder for this zone (a cluster DNS without `forward` for external names answers \
    SERVFAIL), or point the zone at a resolver that can";
const ERROR_FIX: &str = "no route or a socket error: check `ip route get` to the upstream from \
    this node";
const MISSING_FIX: &str = "the upstream says the name does not exist (or has no A record): \
    check the name, and that this zone's upstreams see the view it lives in";

/// A name's answer from one upstream, kept for the through-cache comparison.
#[derive(Debug, Clone)]
pub struct Reference {
    pub upstream: SocketAddr,
    pub rcode: String,
    pub addresses: BTreeSet<IpAddr>,
}

/// Everything the upstream probes found.
pub struct Findings {
    pub verdicts: Vec<Verdict>,
    /// Per `--name` (same order): the first upstream of its zone, in config order, that gave
    /// an answer other than SERVFAIL or REFUSED.
    pub references: Vec<Option<Reference>>,
}

struct Pending {
    check: String,
    kind: Kind,
    handle: JoinHandle<Outcome>,
}

#[derive(Clone, Copy)]
enum Kind {
    Reach,
    Name { index: usize, upstream: SocketAddr },
}

/// Probes every upstream concurrently; each probe waits at most `wait`.
pub async fn check(zones: &[Zone], names: &[Question], wait: Duration) -> Findings {
    let mut table = ZoneTable::new();
    for (i, zone) in zones.iter().enumerate() {
        table.insert(&zone.name, i);
    }
    let mut pending = Vec::new();
    for zone in zones {
        // The question nodedns's own health probes ask, so the two agree on up and down.
        let Some(apex) = Question::internet(&zone.probe.name, zone.probe.qtype) else {
            continue;
        };
        for &upstream in &zone.upstreams {
            for transport in [Transport::Udp, Transport::Tcp] {
                let check = format!("upstream {transport} {upstream} (zone {})", zone.name);
                pending.push(spawn(check, Kind::Reach, upstream, transport, &apex, wait));
            }
        }
    }
    for (index, name) in names.iter().enumerate() {
        let Some(zone) = route(&table, zones, name) else {
            continue;
        };
        for &upstream in &zone.upstreams {
            let check = format!("upstream {upstream} answers {name}");
            let kind = Kind::Name { index, upstream };
            pending.push(spawn(check, kind, upstream, Transport::Udp, name, wait));
        }
    }
    collect(pending, names.len()).await
}

/// The zone `name` is forwarded to (longest suffix).
pub fn route<'z>(table: &ZoneTable<usize>, zones: &'z [Zone], name: &Question) -> Option<&'z Zone> {
    let wire = to_wire(&name.name.to_ascii())?;
    table.route(&wire).and_then(|&i| zones.get(i))
}

fn spawn(
    check: String,
    kind: Kind,
    upstream: SocketAddr,
    transport: Transport,
    question: &Question,
    wait: Duration,
) -> Pending {
    let question = question.clone();
    let handle = tokio::spawn(async move { exchange(upstream, transport, &question, wait).await });
    Pending {
        check,
        kind,
        handle,
    }
}

async fn collect(pending: Vec<Pending>, names: usize) -> Findings {
    let mut findings = Findings {
        verdicts: Vec::new(),
        references: vec![None; names],
    };
    for p in pending {
        let outcome = p
            .handle
            .await
            .unwrap_or_else(|e| Outcome::Error(format!("probe task failed: {e}")));
        let verdict = match p.kind {
            Kind::Reach => reach_verdict(p.check, &outcome),
            Kind::Name { index, upstream } => {
                // Upstreams were queued in config order: the first good answer wins.
                if let Some(slot) = findings.references.get_mut(index)
                    && slot.is_none()
                {
                    *slot = reference(upstream, &outcome);
                }
                name_verdict(p.check, &outcome)
            }
        };
        findings.verdicts.push(verdict);
    }
    findings
}

fn reference(upstream: SocketAddr, outcome: &Outcome) -> Option<Reference> {
    let Outcome::Reply { message, .. } = outcome else {
        return None;
    };
    let rcode = probe::rcode_name(message);
    if rcode == "SERVFAIL" || rcode == "REFUSED" {
        return None;
    }
    Some(Reference {
        upstream,
        addresses: probe::addresses(message),
        rcode,
    })
}

/// Reachability, as nodedns's health sees it: any well-formed reply is alive. SERVFAIL or
/// REFUSED to the probe is a warning: the upstream is up, but the probe does not show that
/// it serves this zone for this node.
pub fn reach_verdict(check: String, outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Reply { rtt, message } => match failed_rcode(message, *rtt) {
            Some((evidence, fix)) => Verdict::warn(
                check,
                format!("up (it answers), but {evidence}"),
                format!(
                    "{fix}; if it serves only some names, set the zone's `probe` to one it answers"
                ),
            ),
            None => Verdict::ok(
                check,
                format!(
                    "{}, {} answer(s) in {}",
                    probe::rcode_name(message),
                    message.answers.len(),
                    ms(*rtt)
                ),
            ),
        },
        other => unreachable_verdict(check, other),
    }
}

/// A name's answer: SERVFAIL and REFUSED fail, NXDOMAIN or no address warns.
fn name_verdict(check: String, outcome: &Outcome) -> Verdict {
    let Outcome::Reply { rtt, message } = outcome else {
        return unreachable_verdict(check, outcome);
    };
    if let Some((evidence, fix)) = failed_rcode(message, *rtt) {
        return Verdict::fail(check, evidence, fix);
    }
    let addresses = probe::addresses(message);
    let evidence = format!(
        "{}, {} answer(s) ({}) in {}",
        probe::rcode_name(message),
        message.answers.len(),
        probe::list(&addresses),
        ms(*rtt)
    );
    if addresses.is_empty() {
        Verdict::warn(check, evidence, MISSING_FIX)
    } else {
        Verdict::ok(check, evidence)
    }
}

fn failed_rcode(message: &Message, rtt: Duration) -> Option<(String, &'static str)> {
    match probe::rcode_name(message).as_str() {
        "REFUSED" => Some((
            format!("refused: answered REFUSED in {}", ms(rtt)),
            REFUSED_FIX,
        )),
        "SERVFAIL" => Some((format!("SERVFAIL in {}", ms(rtt)), SERVFAIL_FIX)),
        _ => None,
    }
}

/// A probe that got no reply at all.
pub fn unreachable_verdict(check: String, outcome: &Outcome) -> Verdict {
    match outcome {
        Outcome::Timeout(wait) => Verdict::fail(
            check,
            format!("timeout: no reply within {}", ms(*wait)),
            TIMEOUT_FIX,
        ),
        Outcome::Refused => Verdict::fail(
            check,
            "refused: connection refused (port closed)",
            PORT_CLOSED_FIX,
        ),
        Outcome::Error(e) => Verdict::fail(check, format!("error: {e}"), ERROR_FIX),
        Outcome::Reply { .. } => reach_verdict(check, outcome),
    }
}
