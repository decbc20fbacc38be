//! Reading the admin endpoint in tests: the library's own client and Prometheus text parser
//! (what `doctor` uses), with assertions on top, and the list of metrics `docs/metrics.md`
//! documents.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use nodedns::admin_client::{self as client, Endpoint};
use nodedns::prometheus_text::Exposition;

/// `GET path` over TCP: the status code and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = client::get_from(Endpoint::Tcp(addr), path, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    (answer.status, answer.body)
}

/// A parsed exposition, every line of it well-formed.
#[derive(Debug, Default)]
pub struct Scrape(Exposition);

impl Deref for Scrape {
    type Target = Exposition;
    fn deref(&self) -> &Exposition {
        &self.0
    }
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        Scrape(Exposition::parse(text).unwrap_or_else(|e| panic!("/metrics: {e}")))
    }

    /// The one sample of `name` carrying (at least) `labels`; panics when none or several do.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self.matching(name, labels).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }

    /// The sum over samples of `name` carrying `labels`; panics when there are none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .sum(name, labels)
            .unwrap_or_else(|| panic!("no sample of {name} {labels:?}"))
    }
}

/// The repository's file at `rel`.
pub fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The prefixes of the metrics nodedns exports: its own, and the standard process metrics.
pub const PREFIXES: [&str; 2] = ["nodedns_", "process_"];

/// Metric names and types in `docs/metrics.md`'s table (rows starting "| `nodedns_" or
/// "| `process_").
pub fn documented() -> BTreeMap<String, String> {
    repo_file("docs/metrics.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter(|rest| PREFIXES.iter().any(|p| rest.starts_with(p)))
        .map(|rest| {
            let (name, rest) = rest.split_once('`').unwrap();
            let ty = rest.split('|').nth(1).unwrap().trim();
            (name.to_string(), ty.to_string())
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
    let next = |r: &str| PREFIXES.iter().filter_map(|p| r.find(p)).min();
    while let Some(at) = next(rest) {
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
