//! Misses refused by a per-client limit, by limit and by what the client got. Relaxed
//! atomics: a limited client is already off the fast path, and the counts are never used
//! for control flow. Never by client: that label would grow without bound.

use std::sync::atomic::{AtomicU64, Ordering};

/// The limit a miss hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedReason {
    /// The client had `max_inflight_per_client` misses in flight.
    Inflight,
    /// The client spent its `client_miss_rate` bucket.
    Rate,
}

/// What a limited client was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitedAnswer {
    /// The expired entry still inside the serve-stale window.
    Stale,
    /// REFUSED with Extended DNS Error 18 (Prohibited).
    Refused,
}

impl LimitedReason {
    pub const ALL: [LimitedReason; 2] = [LimitedReason::Inflight, LimitedReason::Rate];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            LimitedReason::Inflight => "inflight",
            LimitedReason::Rate => "rate",
        }
    }
}

impl LimitedAnswer {
    pub const ALL: [LimitedAnswer; 2] = [LimitedAnswer::Stale, LimitedAnswer::Refused];

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            LimitedAnswer::Stale => "stale",
            LimitedAnswer::Refused => "refused",
        }
    }
}

/// Client limits at work: limited misses by reason and answer, and client TCP connections
/// closed because their client opened one more than its share.
#[derive(Debug, Default)]
pub struct ClientLimited {
    misses: [[AtomicU64; 2]; 2],
    tcp_idle_closed: AtomicU64,
}

impl ClientLimited {
    pub fn inc(&self, reason: LimitedReason, answer: LimitedAnswer) {
        self.misses[reason as usize][answer as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: LimitedReason, answer: LimitedAnswer) -> u64 {
        self.misses[reason as usize][answer as usize].load(Ordering::Relaxed)
    }

    /// Every limited miss, whatever the reason and answer.
    pub fn total(&self) -> u64 {
        self.misses
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    pub fn tcp_idle_closed(&self) {
        self.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tcp_idle_closed_total(&self) -> u64 {
        self.tcp_idle_closed.load(Ordering::Relaxed)
    }
}
