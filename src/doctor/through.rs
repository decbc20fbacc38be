//! Through the cache: each `--name` asked via nodedns's listen address and compared with what
//! its zone's upstream answered directly (same rcode, same set of addresses).

use std::net::SocketAddr;
use std::time::Duration;

use super::probe::{self, Outcome, Question, Transport, exchange, ms};
use super::report::Verdict;
use super::upstreams::{Reference, unreachable_verdict};

const SERVFAIL_FIX: &str = "no upstream of the name's zone answered in time and nothing stale \
    was cached: see the upstream lines above";
const DIFFERENT_FIX: &str = "nodedns serves another answer than the upstream: a cached or stale \
    answer (it expires within the record's TTL; check [cache] min_ttl), or the name routes to \
    another zone's upstreams than expected ([[zones]])";

/// Asks each name of `names` via each listen address (UDP), all concurrently.
pub async fn ask(listen: &[SocketAddr], names: &[Question], wait: Duration) -> Vec<Outcome> {
    let mut handles = Vec::new();
    for name in names {
        for &addr in listen {
            let name = name.clone();
            handles.push(tokio::spawn(async move {
                exchange(addr, Transport::Udp, &name, wait).await
            }));
        }
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(
            handle
                .await
                .unwrap_or_else(|e| Outcome::Error(format!("probe task failed: {e}"))),
        );
    }
    outcomes
}

/// The verdicts for what [`ask`] got (same order: names outer, listen addresses inner).
pub fn compare(
    listen: &[SocketAddr],
    names: &[Question],
    outcomes: &[Outcome],
    references: &[Option<Reference>],
) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let pairs = names
        .iter()
        .zip(references)
        .flat_map(|(n, r)| listen.iter().map(move |a| (n, r, a)));
    for ((name, reference, addr), outcome) in pairs.zip(outcomes) {
        let check = format!("through nodedns {addr} for {name}");
        verdicts.push(verdict(check, outcome, reference.as_ref()));
    }
    verdicts
}

fn verdict(check: String, outcome: &Outcome, reference: Option<&Reference>) -> Verdict {
    let Outcome::Reply { rtt, message } = outcome else {
        return unreachable_verdict(check, outcome);
    };
    let rcode = probe::rcode_name(message);
    let addresses = probe::addresses(message);
    let ours = format!("{rcode} ({})", probe::list(&addresses));
    if rcode == "SERVFAIL" {
        return Verdict::fail(check, format!("SERVFAIL in {}", ms(*rtt)), SERVFAIL_FIX);
    }
    let Some(reference) = reference else {
        return Verdict::warn(
            check,
            format!(
                "{ours} in {}; no upstream answered to compare with",
                ms(*rtt)
            ),
            "see the upstream lines above",
        );
    };
    let theirs = format!(
        "{} ({})",
        reference.rcode,
        probe::list(&reference.addresses)
    );
    if rcode == reference.rcode && addresses == reference.addresses {
        Verdict::ok(
            check,
            format!(
                "{ours} in {}, same as upstream {}",
                ms(*rtt),
                reference.upstream
            ),
        )
    } else {
        Verdict::fail(
            check,
            format!(
                "nodedns says {ours} but upstream {} says {theirs}",
                reference.upstream
            ),
            DIFFERENT_FIX,
        )
    }
}
