//! Counters for everything a dashboard or a test wants to see.
//!
//! This module owns the process-wide counters (requests, responses by rcode, cache hits by
//! type, drops by reason, ...). Per-upstream counters live with each upstream in
//! [`crate::forward`]. Counters are relaxed atomics: they are read for exposition and tests,
//! never used for control flow.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Why a packet got no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Fewer than 12 bytes: no ID to answer to.
    Short,
    /// QR=1: a response sent to a server.
    Response,
    /// A client TCP frame shorter than a header or larger than a query can be.
    TcpFrame,
    /// The client TCP connection cap was reached.
    TcpConnections,
    /// Sending the reply failed (socket buffer full, client gone).
    Send,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::Short,
        DropReason::Response,
        DropReason::TcpFrame,
        DropReason::TcpConnections,
        DropReason::Send,
    ];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::Response => "response",
            DropReason::TcpFrame => "tcp_frame",
            DropReason::TcpConnections => "tcp_connections",
            DropReason::Send => "send",
        }
    }
}

/// Process-wide counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests_udp: AtomicU64,
    pub requests_tcp: AtomicU64,
    /// Responses by rcode (full 12-bit rcodes above 23 are counted in the last slot).
    responses: [AtomicU64; 24],
    pub cache_hits_success: AtomicU64,
    pub cache_hits_denial: AtomicU64,
    pub cache_hits_stale: AtomicU64,
    pub cache_misses: AtomicU64,
    pub prefetches: AtomicU64,
    pub coalesced: AtomicU64,
    /// Misses refused because too many clients wait on one key or too many keys are in flight.
    pub overload: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    pub spoof_mismatches: AtomicU64,
    pub failovers: AtomicU64,
    pub all_upstreams_down: AtomicU64,
    pub inflight: AtomicI64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Unix time of the last config load that succeeded (start-up counts).
    pub last_reload_ok_unix: AtomicU64,
    pub tcp_connections: AtomicI64,
}

impl Stats {
    pub fn response(&self, rcode: u16) {
        let slot = usize::from(rcode).min(self.responses.len() - 1);
        self.responses[slot].fetch_add(1, Ordering::Relaxed);
    }

    pub fn responses(&self, rcode: u16) -> u64 {
        let slot = usize::from(rcode).min(self.responses.len() - 1);
        self.responses[slot].load(Ordering::Relaxed)
    }

    pub fn dropped_one(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason as usize].load(Ordering::Relaxed)
    }
}

/// Shorthand for a relaxed increment.
pub fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Shorthand for a relaxed read.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}
