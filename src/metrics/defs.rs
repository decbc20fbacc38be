//! Every metric `/metrics` exports: name, type, labels and HELP text, in one table that
//! `docs/metrics.md` is checked against.

/// Named rcodes (RFC 1035 §4.1.1); every other rcode is counted as `other`.
pub const RCODES: [(u16, &str); 6] = [
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
];

/// `zone` label of requests answered before routing: cache hits and malformed queries.
pub const ZONE_UNROUTED: &str = "-";

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: MetricKind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn def(
    name: &'static str,
    kind: MetricKind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Def {
    Def {
        name,
        kind,
        labels,
        help,
    }
}

use MetricKind::{Counter as C, Gauge as G, Histogram as H};

/// Every metric `/metrics` exports.
pub const DEFS: &[Def] = &[
    def(
        "nodedns_requests_total",
        C,
        &["proto", "zone"],
        "Client queries received, by transport and by the zone they were routed to (\"-\": answered before routing, i.e. cache hits and malformed queries).",
    ),
    def(
        "nodedns_responses_total",
        C,
        &["rcode"],
        "Replies sent to clients, by rcode.",
    ),
    def(
        "nodedns_cache_hits_total",
        C,
        &["type", "zone"],
        "Queries answered from the cache: success (positive answer), denial (NXDOMAIN/NODATA/cached SERVFAIL), stale (expired entry served, RFC 8767); by the zone whose query stored the entry.",
    ),
    def(
        "nodedns_cache_misses_total",
        C,
        &["zone"],
        "Queries that found no cache entry, fresh or stale, by the zone they were routed to (\"-\": none).",
    ),
    def(
        "nodedns_request_duration_seconds",
        H,
        &["zone", "proto", "result"],
        "Time from reading a client query to sending its reply, by zone, transport and result (hit, miss, stale, error); a UDP batch's hits share the batch's time.",
    ),
    def(
        "nodedns_search_expansions_total",
        C,
        &["rcode"],
        "Replies to search-list expansions (a name of two or more labels in front of one of stats.search_suffixes), by rcode.",
    ),
    def(
        "nodedns_client_retransmits_total",
        C,
        &["proto"],
        "Queries that repeated the source, ID and question of one still unanswered or answered under a second before: clients that gave up waiting.",
    ),
    def("nodedns_cache_entries", G, &[], "Entries in the cache."),
    def(
        "nodedns_cache_bytes",
        G,
        &[],
        "Bytes the cache accounts for its entries.",
    ),
    def(
        "nodedns_cache_evictions_total",
        C,
        &[],
        "Entries evicted to stay within the cache bounds.",
    ),
    def(
        "nodedns_cache_prefetch_total",
        C,
        &[],
        "Refreshes of popular entries started before they expired.",
    ),
    def(
        "nodedns_coalesced_total",
        C,
        &[],
        "Misses that joined an identical query already in flight upstream.",
    ),
    def(
        "nodedns_overload_total",
        C,
        &[],
        "Misses answered SERVFAIL because too many queries were in flight.",
    ),
    def(
        "nodedns_client_limited_total",
        C,
        &["reason", "answer"],
        "Misses of one client past its limit (reason inflight or rate), answered stale or REFUSED with Extended DNS Error 18 at once.",
    ),
    def(
        "nodedns_tcp_client_idle_closed_total",
        C,
        &[],
        "Idle client TCP connections closed because their client opened one beyond tcp_max_connections_per_client.",
    ),
    def(
        "nodedns_denied_total",
        C,
        &["action"],
        "Queries from sources outside listen.allow: answered REFUSED (action refuse) or dropped (action drop), before anything past the header was read.",
    ),
    def(
        "nodedns_upstream_requests_total",
        C,
        &["upstream", "proto"],
        "Queries sent to an upstream, by transport (a truncated UDP reply retried over TCP counts once for each).",
    ),
    def(
        "nodedns_upstream_errors_total",
        C,
        &["upstream", "kind"],
        "Failed attempts at an upstream: timeout, network, refused (REFUSED/FORMERR/NOTIMP), servfail.",
    ),
    def(
        "nodedns_upstream_malformed_total",
        C,
        &["upstream"],
        "Upstream answers that failed validation (names, RDATA shapes, section counts) and were neither cached nor served; the next upstream was asked.",
    ),
    def(
        "nodedns_upstream_dropped_records_total",
        C,
        &["upstream"],
        "Records dropped from upstream answers: answer records off the question's CNAME/DNAME chain, authority and additional records owned outside the zone.",
    ),
    def(
        "nodedns_upstream_budget_exhausted_total",
        C,
        &["upstream"],
        "Attempts that passed this upstream over because its query budget (the zone's max_qps) was spent; the next upstream in policy order was asked.",
    ),
    def(
        "nodedns_upstream_duration_seconds",
        H,
        &["upstream"],
        "Time from sending a query to an upstream until its reply arrived (misses only).",
    ),
    def(
        "nodedns_upstream_up",
        G,
        &["upstream"],
        "1 while the upstream is considered healthy, 0 while it is marked down.",
    ),
    def(
        "nodedns_upstream_failovers_total",
        C,
        &[],
        "Attempts started at another upstream after a timeout, an error or a SERVFAIL.",
    ),
    def(
        "nodedns_all_upstreams_down_total",
        C,
        &[],
        "Misses forwarded while every upstream of their zone was marked down.",
    ),
    def(
        "nodedns_spoof_mismatch_total",
        C,
        &[],
        "Upstream replies ignored because their ID or question did not match the query.",
    ),
    def("nodedns_inflight", G, &[], "Upstream queries in flight."),
    def(
        "nodedns_dropped_total",
        C,
        &["reason"],
        "Packets that got no reply at all, by reason.",
    ),
    def(
        "nodedns_tcp_connections",
        G,
        &[],
        "Open client TCP connections.",
    ),
    def(
        "nodedns_config_reloads_total",
        C,
        &["result"],
        "Configuration reloads, by result (success or failure).",
    ),
    def(
        "nodedns_config_last_reload_success_timestamp_seconds",
        G,
        &[],
        "Unix time of the last successful configuration load (start-up counts).",
    ),
    def(
        "nodedns_build_info",
        G,
        &["version"],
        "Always 1; the version label says which nodedns runs.",
    ),
    def(
        "process_cpu_seconds_total",
        C,
        &[],
        "User and system CPU time spent, in seconds.",
    ),
    def(
        "process_start_time_seconds",
        G,
        &[],
        "Start time of the process since the Unix epoch, in seconds.",
    ),
    def(
        "process_resident_memory_bytes",
        G,
        &[],
        "Resident memory size, in bytes.",
    ),
    def(
        "process_virtual_memory_bytes",
        G,
        &[],
        "Virtual memory size, in bytes.",
    ),
    def("process_open_fds", G, &[], "Open file descriptors."),
    def(
        "process_max_fds",
        G,
        &[],
        "The limit on open file descriptors (soft limit).",
    ),
];

/// Whether `def` is written by hand after the exporter's text (histograms and the process
/// metrics), rather than registered with the exporter.
pub fn hand_written(def: &Def) -> bool {
    def.kind == MetricKind::Histogram || def.name.starts_with("process_")
}
