//! The running daemon, as its admin address reports it: `GET /metrics` (Prometheus text
//! format) read for the hit rate, which upstreams it holds up or down, and whether it has been
//! serving stale answers. An absent or unreachable admin endpoint is a warning, not a failure:
//! the packet checks above already say whether DNS works.

use std::net::SocketAddr;
use std::time::Duration;

use crate::admin::client::{self, Endpoint};
use crate::admin::text::{Exposition, Sample};

use super::report::Verdict;

const ADMIN_FIX: &str = "set [admin] address in the config (and check that nodedns runs with \
    it) to see the daemon's own view";

/// The daemon verdicts for the admin address (`None`: disabled in the config).
pub async fn check(admin: Option<SocketAddr>, wait: Duration) -> Vec<Verdict> {
    let Some(addr) = admin else {
        return vec![Verdict::warn(
            "daemon admin",
            "disabled ([admin] address = \"\"): hit rate and upstream health not checked",
            ADMIN_FIX,
        )];
    };
    let check = format!("daemon admin {addr}");
    let answer = match client::get_from(Endpoint::Tcp(addr), "/metrics", wait).await {
        Ok(a) if a.status == 200 => a,
        Ok(a) => {
            let status = a.status;
            return vec![Verdict::warn(
                check,
                format!("GET /metrics: HTTP {status}"),
                ADMIN_FIX,
            )];
        }
        Err(e) => return vec![Verdict::warn(check, format!("unreachable: {e}"), ADMIN_FIX)],
    };
    match Exposition::parse(&answer.body) {
        Ok(exposition) => {
            let samples = exposition.samples;
            let mut verdicts = vec![Verdict::ok(
                check,
                format!("GET /metrics: {} samples", samples.len()),
            )];
            verdicts.extend(judge(&samples));
            verdicts
        }
        Err(e) => vec![Verdict::warn(
            check,
            format!("GET /metrics is no Prometheus text: {e}"),
            "is the admin address this nodedns's? compare with `nodedns --version`",
        )],
    }
}

fn sum(samples: &[Sample], name: &str, pick: impl Fn(&Sample) -> bool) -> Option<f64> {
    let mut found = samples
        .iter()
        .filter(|s| s.name == name && pick(s))
        .peekable();
    found.peek()?;
    Some(found.map(|s| s.value).sum())
}

/// Hit rate, upstream health and stale serving, from the daemon's own counters (metric names
/// as documented in the metrics reference).
pub fn judge(samples: &[Sample]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    let requests = sum(samples, "nodedns_requests_total", |_| true);
    let hits = sum(samples, "nodedns_cache_hits_total", |_| true);
    verdicts.push(match (requests, hits) {
        (Some(r), Some(h)) if r > 0.0 => Verdict::ok(
            "daemon hit rate",
            format!(
                "{:.1}% ({h} of {r} queries answered from the cache)",
                100.0 * h / r
            ),
        ),
        (Some(_), Some(_)) => Verdict::ok("daemon hit rate", "no queries served yet"),
        _ => Verdict::warn(
            "daemon hit rate",
            "no nodedns_requests_total / nodedns_cache_hits_total in /metrics",
            "is the admin address this nodedns's? compare with `nodedns --version`",
        ),
    });
    verdicts.extend(upstream_health(samples));
    let stale = sum(samples, "nodedns_cache_hits_total", |s| {
        s.label("type") == Some("stale")
    });
    match stale {
        Some(n) if n > 0.0 => verdicts.push(Verdict::warn(
            "daemon stale serving",
            format!(
                "{n} stale answers served (RFC 8767): upstreams failed or were slow at some point"
            ),
            "see the daemon upstream line and nodedns_upstream_errors_total for which and when",
        )),
        Some(_) => verdicts.push(Verdict::ok(
            "daemon stale serving",
            "no stale answers served",
        )),
        None => {}
    }
    verdicts
}

fn upstream_health(samples: &[Sample]) -> Option<Verdict> {
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for s in samples.iter().filter(|s| s.name == "nodedns_upstream_up") {
        let name = s.label("upstream").unwrap_or("?").to_owned();
        if s.value >= 1.0 {
            up.push(name)
        } else {
            down.push(name)
        }
    }
    if up.is_empty() && down.is_empty() {
        return None;
    }
    let up_text = if up.is_empty() {
        "none".to_owned()
    } else {
        up.join(", ")
    };
    Some(if down.is_empty() {
        Verdict::ok("daemon upstreams", format!("all up: {up_text}"))
    } else {
        Verdict::fail(
            "daemon upstreams",
            format!("down: {}; up: {up_text}", down.join(", ")),
            "nodedns marked these down after consecutive failures and probes them until they \
             answer: see the upstream lines above for why",
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::doctor::report::Status;

    const METRICS: &str = "\
# HELP nodedns_requests_total Queries received.
# TYPE nodedns_requests_total counter
nodedns_requests_total{proto=\"udp\",zone=\".\"} 900
nodedns_requests_total{proto=\"tcp\",zone=\".\"} 100
nodedns_cache_hits_total{type=\"success\"} 700
nodedns_cache_hits_total{type=\"denial\"} 50
nodedns_cache_hits_total{type=\"stale\"} 5
nodedns_upstream_up{upstream=\"10.0.0.2:53\"} 1
nodedns_upstream_up{upstream=\"10.1.0.251:53\"} 0
nodedns_inflight 3
";

    fn parse(text: &str) -> Vec<Sample> {
        Exposition::parse(text).unwrap().samples
    }

    #[test]
    fn reports_hit_rate_down_upstreams_and_stale_serving() {
        let verdicts = judge(&parse(METRICS));
        assert_eq!(verdicts[0].status, Status::Ok);
        assert!(
            verdicts[0].evidence.starts_with("75.5%"),
            "{}",
            verdicts[0].evidence
        );
        assert_eq!(verdicts[1].status, Status::Fail);
        assert!(verdicts[1].evidence.contains("down: 10.1.0.251:53"));
        assert_eq!(verdicts[2].status, Status::Warn);
        assert!(verdicts[2].evidence.starts_with("5 stale"));
    }

    #[tokio::test]
    async fn an_absent_admin_endpoint_is_a_warning() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let verdicts = check(Some(addr), Duration::from_secs(1)).await;
        assert_eq!(verdicts.len(), 1);
        assert_eq!(verdicts[0].status, Status::Warn);
        assert!(verdicts[0].evidence.contains("unreachable"));
        assert_eq!(
            check(None, Duration::from_secs(1)).await[0].status,
            Status::Warn
        );
    }
}
