//! The running daemon, as its admin address reports it: `GET /metrics` (Prometheus text
//! format) read for the hit rate, which upstreams it holds up or down, and whether it has been
//! serving stale answers. An absent or unreachable admin endpoint is a warning, not a failure:
//! the packet checks above already say whether DNS works.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::report::Verdict;

/// Bodies larger than this are cut: /metrics of one nodedns is a few KiB.
const MAX_BODY: u64 = 4 << 20;

const ADMIN_FIX: &str = "set [admin] address in the config (and check that nodedns runs with \
    it) to see the daemon's own view";

/// One sample line of the text format: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

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
    let body = match timeout(wait, get(addr, "/metrics")).await {
        Err(_) => Err(format!("no reply to GET /metrics within {wait:?}")),
        Ok(result) => result,
    };
    match body {
        Ok(text) => {
            let samples = parse(&text);
            let mut verdicts = vec![Verdict::ok(
                check,
                format!("GET /metrics: {} samples", samples.len()),
            )];
            verdicts.extend(judge(&samples));
            verdicts
        }
        Err(e) => vec![Verdict::warn(check, format!("unreachable: {e}"), ADMIN_FIX)],
    }
}

/// A minimal HTTP/1.1 GET: the body of a 200 reply, de-chunked if need be.
async fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_BODY)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP reply".to_owned())?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {path}: {status}"));
    }
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok(if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    })
}

/// Joins the chunks of a chunked body (RFC 9112 §7.1); stops at the last chunk or at anything
/// malformed.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, rest)) = body.split_once("\r\n") {
        let size = size_line.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        let Some(chunk) = rest.get(..size) else {
            break;
        };
        out.push_str(chunk);
        body = rest
            .get(size..)
            .unwrap_or_default()
            .trim_start_matches("\r\n");
    }
    out
}

/// The samples of a Prometheus text exposition; comments and unreadable lines are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find(['{', ' ']) {
        Some(i) if line[i..].starts_with('{') => {
            let close = line.rfind('}')?;
            (
                &line[..i],
                parse_labels(line.get(i + 1..close)?),
                &line[close + 1..],
            )
        }
        Some(i) => (&line[..i], Vec::new(), &line[i..]),
        None => return None,
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y"` into pairs; escaped quotes inside values are kept escaped (label values here
/// are addresses and words).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let Some(end) = after.find('"') else { break };
        labels.push((
            key.trim().trim_start_matches(',').trim().to_owned(),
            after[..end].to_owned(),
        ));
        rest = &after[end + 1..];
    }
    labels
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

    #[test]
    fn reads_samples_with_and_without_labels() {
        let samples = parse(METRICS);
        assert_eq!(samples.len(), 8);
        assert_eq!(samples[0].name, "nodedns_requests_total");
        assert_eq!(samples[0].label("proto"), Some("udp"));
        assert_eq!(samples[0].label("zone"), Some("."));
        assert_eq!(samples[7].value, 3.0);
        assert!(parse("garbage{\n{}\nname{a=\"b\"} notanumber\n").is_empty());
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

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
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
