//! Reading the admin endpoint: a minimal HTTP/1.1 GET over loopback, a parser for the
//! Prometheus text format, and the list of metrics `docs/metrics.md` documents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` with `Connection: close`: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: nodedns\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    /// `# TYPE` per metric family.
    pub types: BTreeMap<String, String>,
    /// Families with a non-empty `# HELP`.
    pub helped: BTreeSet<String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, ty) = rest.split_once(' ').unwrap();
                s.types.insert(name.to_string(), ty.to_string());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                if !help.trim().is_empty() {
                    s.helped.insert(name.to_string());
                }
            } else if !line.starts_with('#') {
                s.samples.push(sample(line));
            }
        }
        s
    }

    /// The one sample of `name` carrying (at least) `labels`; panics when none or several do.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    /// The sum over samples of `name` carrying `labels`; panics when there are none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self.matching(name, labels).map(|s| s.value).collect();
        assert!(!found.is_empty(), "no sample of {name} {labels:?}");
        found.iter().sum()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }
}

/// `name{k="v",...} value` (label values here never hold `"` or `,`).
fn sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap();
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').unwrap();
            let labels = body
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap();
                    (k.to_string(), v.trim_matches('"').to_string())
                })
                .collect();
            (name, labels)
        }
        None => (series, BTreeMap::new()),
    };
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().unwrap(),
    };
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// The repository's file at `rel`.
pub fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Metric names and types in `docs/metrics.md`'s table (rows starting "| `nodedns_").
pub fn documented() -> BTreeMap<String, String> {
    repo_file("docs/metrics.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `nodedns_"))
        .map(|rest| {
            let (name, rest) = rest.split_once('`').unwrap();
            let ty = rest.split('|').nth(1).unwrap().trim();
            (format!("nodedns_{name}"), ty.to_string())
        })
        .collect()
}

/// Every family in the scrape is documented with its type and has HELP text, and every
/// documented metric is exported.
pub fn assert_matches_docs(s: &Scrape) {
    let docs = documented();
    assert!(docs.len() >= 20, "docs table not found: {docs:?}");
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        s.types.keys().collect::<Vec<_>>(),
        "docs/metrics.md and /metrics list different metrics"
    );
    for (name, ty) in &s.types {
        assert_eq!(docs.get(name), Some(ty), "{name}: type");
        assert!(s.helped.contains(name), "{name}: no HELP");
    }
}

/// Metric names used in a PromQL expression (`_bucket`/`_sum`/`_count` of a histogram map
/// to the histogram).
pub fn metric_names(expr: &str, histograms: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("nodedns_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| name.strip_suffix(suf).filter(|b| histograms.contains(*b)))
            .unwrap_or(name);
        out.insert(base.to_string());
        rest = &tail[end..];
    }
    out
}
