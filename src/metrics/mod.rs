//! The Prometheus metrics: every name, its HELP text and label set, and the exposition.
//!
//! This module owns what `/metrics` says (`docs/metrics.md` documents the same list, and a
//! test holds the two together). The packet path never touches the `metrics` crate: it bumps
//! the counters of [`crate::stats`] and the upstreams', and [`Metrics::render`] copies them
//! into the exporter's registry at scrape time. The upstream latency histogram is kept by
//! [`crate::stats`] too, as fixed bucket counters, and written after the exporter's text by
//! `histogram` (the exporter's own histograms hold every raw sample until a scrape). Every
//! label set is closed and registered at 0 on start, so a dashboard sees a flat line, not a
//! missing series.
//!
//! The recorder is not installed globally: each [`Metrics`] has its own, so several servers
//! (tests) can run in one process.

mod defs;
mod histogram;
mod process;

use std::sync::Arc;

use parking_lot::Mutex;

use metrics::{Counter, Gauge, Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::cache::Cache;
use crate::stats::{
    DropReason, ErrorKind, Hot, LimitedAnswer, LimitedReason, RCODE_SLOTS, Served, Stats,
    UpstreamStatus, ZoneCounters,
};

pub use defs::{DEFS, Def, MetricKind, RCODES, ZONE_UNROUTED};

/// The exporter's registry, and the upstreams it holds series for.
struct Registry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Labels of the upstreams of the config it was built for, sorted.
    upstreams: Vec<String>,
}

impl Registry {
    fn new(upstreams: Vec<String>) -> Registry {
        let recorder = PrometheusBuilder::new().build_recorder();
        // Histograms and process metrics are written by `histogram` and `process`.
        for d in DEFS.iter().filter(|d| !defs::hand_written(d)) {
            let name = metrics::KeyName::from(d.name);
            match d.kind {
                MetricKind::Counter => recorder.describe_counter(name, None, d.help.into()),
                MetricKind::Gauge => recorder.describe_gauge(name, None, d.help.into()),
                MetricKind::Histogram => {}
            }
        }
        let handle = recorder.handle();
        let version = env!("CARGO_PKG_VERSION");
        gauge(&recorder, "nodedns_build_info", &[("version", version)]).set(1.0);
        Registry {
            recorder,
            handle,
            upstreams,
        }
    }
}

/// The exporter, and the counters it reads at scrape time.
pub struct Metrics {
    /// Rebuilt when a reload changes the set of upstreams, so the series of an upstream the
    /// config no longer names disappear (the exporter never forgets a series by itself).
    registry: Mutex<Registry>,
    stats: Arc<Stats>,
}

impl Metrics {
    /// Registers every metric, at 0 for the zones `stats` knows and for `upstreams` (the
    /// current config's, sorted by label).
    pub fn new(stats: Arc<Stats>, cache: &Cache, upstreams: &[UpstreamStatus]) -> Metrics {
        let registry = Registry::new(upstreams.iter().map(|u| u.label.clone()).collect());
        let m = Metrics {
            registry: Mutex::new(registry),
            stats,
        };
        m.sync(&m.registry.lock().recorder, cache, upstreams);
        m
    }

    /// The Prometheus text exposition, with every counter read just now: the process's,
    /// `cache`'s, and those of `upstreams` (the current config's, sorted by label).
    pub fn render(&self, cache: &Cache, upstreams: &[UpstreamStatus]) -> String {
        let mut registry = self.registry.lock();
        if registry.upstreams.len() != upstreams.len()
            || registry
                .upstreams
                .iter()
                .zip(upstreams)
                .any(|(a, b)| *a != b.label)
        {
            *registry = Registry::new(upstreams.iter().map(|u| u.label.clone()).collect());
        }
        self.sync(&registry.recorder, cache, upstreams);
        registry.handle.run_upkeep();
        let mut out = registry.handle.render();
        drop(registry);
        render_histograms(&mut out, upstreams);
        render_client_latency(&mut out, &self.zones());
        process::Process::read().write(&mut out);
        out
    }

    /// Every zone's counters with its label, the unrouted ones (`-`) last.
    fn zones(&self) -> Vec<(String, Arc<ZoneCounters>)> {
        let mut zones = self.stats.zones();
        zones.push((ZONE_UNROUTED.to_owned(), self.stats.unrouted().clone()));
        zones
    }

    /// Copies every source into the registry. Counters go through `absolute`, which never
    /// lowers a value, so a torn read across threads cannot make a counter go backwards.
    fn sync(&self, r: &PrometheusRecorder, cache: &Cache, upstreams: &[UpstreamStatus]) {
        self.sync_requests(r);
        self.sync_stats(r);
        gauge(r, "nodedns_cache_entries", &[]).set(cache.len() as f64);
        gauge(r, "nodedns_cache_bytes", &[]).set(cache.bytes() as f64);
        counter(r, "nodedns_cache_evictions_total", &[]).absolute(cache.evictions());
        for UpstreamStatus {
            label,
            counters: c,
            up,
        } in upstreams
        {
            let l = label.as_str();
            let udp = c.requests_udp.load(std::sync::atomic::Ordering::Relaxed);
            let tcp = c.requests_tcp.load(std::sync::atomic::Ordering::Relaxed);
            let name = "nodedns_upstream_requests_total";
            counter(r, name, &[("upstream", l), ("proto", "udp")]).absolute(udp);
            counter(r, name, &[("upstream", l), ("proto", "tcp")]).absolute(tcp);
            for kind in ErrorKind::ALL {
                counter(
                    r,
                    "nodedns_upstream_errors_total",
                    &[("upstream", l), ("kind", kind.label())],
                )
                .absolute(c.errors(kind));
            }
            counter(r, "nodedns_upstream_malformed_total", &[("upstream", l)])
                .absolute(c.malformed_total());
            counter(
                r,
                "nodedns_upstream_dropped_records_total",
                &[("upstream", l)],
            )
            .absolute(c.dropped_records_total());
            counter(
                r,
                "nodedns_upstream_budget_exhausted_total",
                &[("upstream", l)],
            )
            .absolute(c.budget_exhausted_total());
            gauge(r, "nodedns_upstream_up", &[("upstream", l)]).set(f64::from(u8::from(*up)));
        }
    }

    /// `nodedns_requests_total`: queries by zone (routed on the miss path, or hits on an
    /// entry the zone stored), the rest under [`ZONE_UNROUTED`]. Zones are read before the
    /// totals: a query is counted in the total before its zone, so the difference is never
    /// negative.
    fn sync_requests(&self, r: &PrometheusRecorder) {
        let zones = self.stats.zones();
        let hits = |z: &ZoneCounters, p| z.hits(p, 0).wrapping_add(z.hits(p, 1));
        let counts: Vec<(u64, u64)> = zones
            .iter()
            .map(|(_, z)| {
                let udp = crate::stats::get(&z.udp).wrapping_add(hits(z, 0));
                let tcp = crate::stats::get(&z.tcp).wrapping_add(hits(z, 1));
                (udp, tcp)
            })
            .collect();
        let total_udp = self.stats.get(Hot::RequestsUdp);
        let total_tcp = self.stats.get(Hot::RequestsTcp);
        let (mut routed_udp, mut routed_tcp) = (0u64, 0u64);
        let name = "nodedns_requests_total";
        for ((zone, _), &(udp, tcp)) in zones.iter().zip(&counts) {
            counter(r, name, &[("proto", "udp"), ("zone", zone)]).absolute(udp);
            counter(r, name, &[("proto", "tcp"), ("zone", zone)]).absolute(tcp);
            routed_udp = routed_udp.wrapping_add(udp);
            routed_tcp = routed_tcp.wrapping_add(tcp);
        }
        counter(r, name, &[("proto", "udp"), ("zone", ZONE_UNROUTED)])
            .absolute(total_udp.saturating_sub(routed_udp));
        counter(r, name, &[("proto", "tcp"), ("zone", ZONE_UNROUTED)])
            .absolute(total_tcp.saturating_sub(routed_tcp));
    }

    fn sync_stats(&self, r: &PrometheusRecorder) {
        let s = &self.stats;
        let mut other = 0u64;
        for rcode in 0..RCODE_SLOTS as u16 {
            match RCODES.iter().find(|(r, _)| *r == rcode) {
                Some((_, label)) => counter(r, "nodedns_responses_total", &[("rcode", label)])
                    .absolute(s.responses(rcode)),
                None => other = other.wrapping_add(s.responses(rcode)),
            }
        }
        counter(r, "nodedns_responses_total", &[("rcode", "other")]).absolute(other);
        let mut other = 0u64;
        let name = "nodedns_search_expansions_total";
        for rcode in 0..RCODE_SLOTS as u16 {
            match RCODES.iter().find(|(r, _)| *r == rcode) {
                Some((_, label)) => {
                    counter(r, name, &[("rcode", label)]).absolute(s.expansions(rcode))
                }
                None => other = other.wrapping_add(s.expansions(rcode)),
            }
        }
        counter(r, name, &[("rcode", "other")]).absolute(other);
        for (zone, z) in self.zones() {
            let z = &*z;
            let name = "nodedns_cache_hits_total";
            for (ty, n) in [
                ("success", z.hits(0, 0).wrapping_add(z.hits(1, 0))),
                ("denial", z.hits(0, 1).wrapping_add(z.hits(1, 1))),
                ("stale", z.stales()),
            ] {
                counter(r, name, &[("type", ty), ("zone", &zone)]).absolute(n);
            }
            counter(r, "nodedns_cache_misses_total", &[("zone", &zone)]).absolute(z.misses());
        }
        for (proto, hot) in [("udp", Hot::RetransmitsUdp), ("tcp", Hot::RetransmitsTcp)] {
            counter(r, "nodedns_client_retransmits_total", &[("proto", proto)])
                .absolute(s.get(hot));
        }
        for (name, hot) in [
            ("nodedns_cache_prefetch_total", Hot::Prefetches),
            ("nodedns_coalesced_total", Hot::Coalesced),
            ("nodedns_overload_total", Hot::Overload),
        ] {
            counter(r, name, &[]).absolute(s.get(hot));
        }
        for (action, hot) in [("refuse", Hot::DeniedRefused), ("drop", Hot::DeniedDropped)] {
            counter(r, "nodedns_denied_total", &[("action", action)]).absolute(s.get(hot));
        }
        let limited = &s.client_limited;
        for reason in LimitedReason::ALL {
            for answer in LimitedAnswer::ALL {
                let labels = [("reason", reason.label()), ("answer", answer.label())];
                counter(r, "nodedns_client_limited_total", &labels)
                    .absolute(limited.get(reason, answer));
            }
        }
        counter(r, "nodedns_tcp_client_idle_closed_total", &[])
            .absolute(limited.tcp_idle_closed_total());
        for reason in DropReason::ALL {
            counter(r, "nodedns_dropped_total", &[("reason", reason.label())])
                .absolute(s.dropped(reason));
        }
        for (name, c) in [
            ("nodedns_upstream_failovers_total", &s.failovers),
            ("nodedns_all_upstreams_down_total", &s.all_upstreams_down),
            ("nodedns_spoof_mismatch_total", &s.spoof_mismatches),
        ] {
            counter(r, name, &[]).absolute(crate::stats::get(c));
        }
        for (result, c) in [("success", &s.reloads_ok), ("failure", &s.reloads_failed)] {
            counter(r, "nodedns_config_reloads_total", &[("result", result)])
                .absolute(crate::stats::get(c));
        }
        let loaded = crate::stats::get(&s.last_reload_ok_unix);
        let name = "nodedns_config_last_reload_success_timestamp_seconds";
        gauge(r, name, &[]).set(loaded as f64);
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        gauge(r, "nodedns_inflight", &[]).set(s.inflight.load(relaxed) as f64);
        gauge(r, "nodedns_tcp_connections", &[]).set(s.tcp_connections.load(relaxed) as f64);
    }
}

fn render_histograms(out: &mut String, upstreams: &[UpstreamStatus]) {
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let name = "nodedns_upstream_duration_seconds";
    let help = DEFS.iter().find(|d| d.name == name).map_or("", |d| d.help);
    histogram::write_header(out, name, help);
    for u in upstreams {
        let h = u.counters.latency.snapshot();
        histogram::write_series(out, name, &[("upstream", &u.label)], &h);
    }
}

/// `nodedns_request_duration_seconds`: every zone's, by transport and result.
fn render_client_latency(out: &mut String, zones: &[(String, Arc<ZoneCounters>)]) {
    let name = "nodedns_request_duration_seconds";
    let help = DEFS.iter().find(|d| d.name == name).map_or("", |d| d.help);
    histogram::write_header(out, name, help);
    for (zone, z) in zones {
        for (p, proto) in ["udp", "tcp"].into_iter().enumerate() {
            for served in Served::ALL {
                let h = z.latency(p, served);
                let labels = [
                    ("zone", zone.as_str()),
                    ("proto", proto),
                    ("result", served.label()),
                ];
                histogram::write_series(out, name, &labels, &h.into());
            }
        }
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()))
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|&(k, v)| Label::new(k, v.to_string()))
        .collect();
    Key::from_parts(name, labels)
}

fn counter(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
    r.register_counter(&key(name, labels), &metadata())
}

fn gauge(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
    r.register_gauge(&key(name, labels), &metadata())
}
