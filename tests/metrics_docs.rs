//! The shipped observability files agree with what nodedns exports: `docs/metrics.md`
//! documents exactly the metrics of `nodedns::METRICS` with their types, and every
//! metric the Grafana dashboard and the alert rules use exists. (The e2e test in
//! `tests/metrics.rs` checks the same table against a live scrape.)
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use nodedns::{METRICS as DEFS, MetricKind as Kind};
use support::scrape::{documented, metric_names, repo_file};

fn exported() -> BTreeMap<String, &'static str> {
    DEFS.iter()
        .map(|d| {
            let ty = match d.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            (d.name.to_string(), ty)
        })
        .collect()
}

fn histograms() -> BTreeSet<String> {
    DEFS.iter()
        .filter(|d| d.kind == Kind::Histogram)
        .map(|d| d.name.to_string())
        .collect()
}

#[test]
fn docs_list_exactly_the_exported_metrics() {
    let docs = documented();
    let exported = exported();
    let missing: Vec<_> = exported.keys().filter(|n| !docs.contains_key(*n)).collect();
    let unknown: Vec<_> = docs.keys().filter(|n| !exported.contains_key(*n)).collect();
    assert!(
        missing.is_empty(),
        "exported but not in docs/metrics.md: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "in docs/metrics.md but not exported: {unknown:?}"
    );
    for (name, ty) in &exported {
        assert_eq!(docs[name], *ty, "{name}: documented type");
    }
    assert!(DEFS.iter().all(|d| !d.help.is_empty()));
    // The operator's questions: client latency, search-list waste, retransmits, and the
    // standard process metrics under their usual names.
    for (name, ty) in [
        ("nodedns_request_duration_seconds", "histogram"),
        ("nodedns_search_expansions_total", "counter"),
        ("nodedns_client_retransmits_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_start_time_seconds", "gauge"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
    ] {
        assert_eq!(exported.get(name).copied(), Some(ty), "{name} exported");
        assert_eq!(
            docs.get(name).map(String::as_str),
            Some(ty),
            "{name} documented"
        );
    }
}

#[test]
fn docs_say_how_to_read_and_fix_the_search_list_share() {
    let md = repo_file("docs/metrics.md");
    for needed in [
        "sum(rate(nodedns_search_expansions_total[5m])) / sum(rate(nodedns_responses_total[5m]))",
        "nodedns_search_expansions_total{rcode=\"NXDOMAIN\"}",
        "ndots:2",
        "trailing dot",
        "doctor --resolv-conf",
        "histogram_quantile(0.99, sum by (result, le) (rate(nodedns_request_duration_seconds_bucket[5m])))",
    ] {
        assert!(md.contains(needed), "docs/metrics.md lacks {needed}");
    }
}

#[test]
fn docs_answer_the_hit_rate_question() {
    let md = repo_file("docs/metrics.md");
    let promql = "sum(rate(nodedns_cache_hits_total[5m])) / sum(rate(nodedns_requests_total[5m]))";
    assert!(md.contains("## What is the hit rate on this node?"));
    assert!(md.contains(promql));
    assert!(md.contains("histogram_quantile(0.99"));
    assert!(md.contains("type=\"stale\""));
}

/// Every `expr` of every panel target.
fn dashboard_exprs() -> Vec<String> {
    let dash: serde_json::Value =
        serde_json::from_str(&repo_file("docs/dashboards/nodedns.json")).unwrap();
    let panels = dash["panels"].as_array().unwrap();
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dashboard_uses_only_exported_metrics_and_covers_the_essentials() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10);
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| metric_names(e, &histograms()))
        .collect();
    let exported = exported();
    let unknown: Vec<_> = used.iter().filter(|n| !exported.contains_key(*n)).collect();
    assert!(
        unknown.is_empty(),
        "dashboard uses unknown metrics: {unknown:?}"
    );
    for needed in [
        "nodedns_cache_hits_total",
        "nodedns_responses_total",
        "nodedns_upstream_duration_seconds",
        "nodedns_upstream_up",
        "nodedns_cache_prefetch_total",
        "nodedns_cache_evictions_total",
        "nodedns_inflight",
        "nodedns_request_duration_seconds",
        "nodedns_search_expansions_total",
        "nodedns_client_retransmits_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(needed), "dashboard lacks {needed}");
    }
    // Client latency by result, the hit rate of each zone, and the NXDOMAIN part of the
    // search-list share.
    let latency = "_bucket{instance=~\"$instance\"}";
    assert!(exprs.iter().any(
        |e| e.contains("histogram_quantile(0.99, sum by (result, le)")
            && e.contains(&format!("nodedns_request_duration_seconds{latency}"))
    ));
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("sum by (zone) (rate(nodedns_cache_hits_total"))
    );
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("nodedns_search_expansions_total")
                && e.contains("rcode=\"NXDOMAIN\""))
    );
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.99")));
    assert!(exprs.iter().any(|e| e.contains("histogram_quantile(0.5")));
    assert!(exprs.iter().any(|e| e.contains("type=\"stale\"")));
}

/// (alert name, expr) from the rules file: every rule keeps its `expr` on one line.
fn alert_rules() -> Vec<(String, String)> {
    let yaml = repo_file("docs/alerts.yaml");
    let mut rules = Vec::new();
    let mut name = None;
    for line in yaml.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- alert: ") {
            name = Some(n.to_string());
        } else if let Some(e) = line.strip_prefix("expr: ") {
            assert!(
                !e.starts_with(['|', '>']),
                "multi-line expr: keep it on one line"
            );
            rules.push((name.take().unwrap(), e.to_string()));
        }
    }
    rules
}

#[test]
fn alert_rules_use_only_exported_metrics_and_cover_the_failures() {
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    for needed in [
        "NodednsUpstreamDown",
        "NodednsAllUpstreamsDown",
        "NodednsHitRateCollapse",
        "NodednsServfailRatioHigh",
        "NodednsConfigReloadFailing",
        "NodednsClientRetransmitsRising",
        "NodednsMemoryNearLimit",
        "NodednsScrapeTargetDown",
        "NodednsMetricsAbsent",
    ] {
        assert!(names.contains(needed), "alerts.yaml lacks {needed}");
    }
    let exported = exported();
    for (name, expr) in &rules {
        let used = metric_names(expr, &histograms());
        assert!(!used.is_empty(), "{name}: uses no nodedns metric");
        assert!(
            !used.iter().any(|m| m.starts_with("process_")) || expr.contains("nodedns_build_info"),
            "{name}: process_* is every client's: keep it to nodedns's targets"
        );
        let unknown: Vec<_> = used.iter().filter(|n| !exported.contains_key(*n)).collect();
        assert!(
            unknown.is_empty(),
            "{name} uses unknown metrics: {unknown:?}"
        );
    }
    let yaml = repo_file("docs/alerts.yaml");
    assert!(
        yaml.contains("for: 2m"),
        "upstream down must wait 2 minutes"
    );
}
