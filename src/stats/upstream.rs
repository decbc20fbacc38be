//! The counters of one upstream, kept by label so a reload that rebuilds the upstream keeps
//! counting, and the closed set of reasons an attempt at it failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::LatencyHistogram;

/// Why an attempt at an upstream failed, for `nodedns_upstream_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No reply in time: counts toward marking the upstream down.
    Timeout,
    /// A transport error (ICMP unreachable, TCP refused or reset): counts toward down.
    Network,
    /// The upstream answered REFUSED to this query.
    Refused,
    /// The upstream answered FORMERR, or a reply too short to have a header.
    FormErr,
    /// The upstream answered NOTIMP.
    NotImp,
    /// The upstream answered SERVFAIL.
    ServFail,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::Refused,
        ErrorKind::FormErr,
        ErrorKind::NotImp,
        ErrorKind::ServFail,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::Refused => "refused",
            ErrorKind::FormErr => "formerr",
            ErrorKind::NotImp => "notimp",
            ErrorKind::ServFail => "servfail",
        }
    }
}

/// Counters of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    pub requests_udp: AtomicU64,
    pub requests_tcp: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// `nodedns_upstream_duration_seconds{upstream}`: exchanges that got a reply.
    pub latency: LatencyHistogram,
    /// `nodedns_upstream_malformed_total{upstream}`: answers that failed validation.
    malformed: AtomicU64,
    /// `nodedns_upstream_dropped_records_total{upstream}`: records dropped from answers as
    /// off the question's chain or outside the zone.
    dropped_records: AtomicU64,
    /// `nodedns_upstream_budget_exhausted_total{upstream}`: attempts that passed this
    /// upstream over because its query budget was spent.
    budget_exhausted: AtomicU64,
}

impl UpstreamCounters {
    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn malformed_total(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }
    pub fn dropped_records(&self, n: u16) {
        if n > 0 {
            self.dropped_records
                .fetch_add(u64::from(n), Ordering::Relaxed);
        }
    }
    pub fn dropped_records_total(&self) -> u64 {
        self.dropped_records.load(Ordering::Relaxed)
    }
    pub fn budget_exhausted(&self) {
        self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
    }
    pub fn budget_exhausted_total(&self) -> u64 {
        self.budget_exhausted.load(Ordering::Relaxed)
    }
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
}

/// One upstream of the current config as a scrape sees it: its label, its counters and
/// whether it is up.
#[derive(Debug, Clone)]
pub struct UpstreamStatus {
    pub label: String,
    pub counters: Arc<UpstreamCounters>,
    pub up: bool,
}
