//! Per-upstream query budgets (`[[zones]] max_qps`): a token bucket per upstream, so that
//! nodedns never sends a resolver more than it accepts (a cloud VPC resolver drops packets
//! beyond its per-interface rate).
//!
//! This module owns the bucket and who may spend from it. The failover loop asks it before
//! each attempt and goes on to the next upstream when it says no; what a client is told when
//! every budget of its zone is spent is the resolver's (`crate::resolve`).
//!
//! The bucket holds one second's worth (`max_qps` tokens, at least one) and refills at
//! `max_qps` a second, so over any `t` seconds at most `max_qps * (1 + t)` queries go out.
//! Client misses may spend it all. Background work (prefetch, health probes) is the first to
//! wait: it spends only while it leaves half the burst (rounded down) behind, so a busy
//! node's refreshes never take the last tokens its clients need. (A budget under 2 queries a
//! second has no reserve: its probes must still go, or a down upstream would never be found
//! up again.)

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::limit::TokenBucket;

/// Who spends: a client's miss, or background work that must leave a reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spender {
    /// A client waits for this query: it may take the last token.
    Client,
    /// Prefetch or a health probe: only while half the burst (rounded down) is left after.
    Background,
}

/// One upstream's budget: no limit, or a token bucket.
#[derive(Debug, Default)]
pub struct Budget {
    /// Whether `state` holds a bucket: most upstreams have no budget, and their misses
    /// should not all meet at one lock to learn that.
    limited: AtomicBool,
    state: Mutex<Option<Limited>>,
}

#[derive(Debug)]
struct Limited {
    max_qps: f64,
    bucket: TokenBucket,
}

impl Budget {
    /// A budget of `max_qps` queries a second (`None`: no limit), with a full bucket.
    pub fn new(max_qps: Option<f64>) -> Budget {
        let budget = Budget::default();
        budget.set(max_qps);
        budget
    }

    /// Applies a (reloaded) `max_qps`. A changed value starts a full bucket at the new rate;
    /// an unchanged one keeps the bucket as it is.
    pub fn set(&self, max_qps: Option<f64>) {
        let mut state = self.state.lock();
        if state.as_ref().map(|l| l.max_qps) == max_qps {
            return;
        }
        *state = max_qps.map(|rate| Limited {
            max_qps: rate,
            bucket: TokenBucket::new(rate, burst(rate)),
        });
        self.limited.store(state.is_some(), Ordering::Relaxed);
    }

    /// Spends one query at `now` if `spender` may: true when the query may be sent.
    pub fn spend(&self, now: Instant, spender: Spender) -> bool {
        // A reload that sets a budget is seen by the misses after it; one in flight across
        // the swap may go unbudgeted, as it would have a moment earlier.
        if !self.limited.load(Ordering::Relaxed) {
            return true;
        }
        let mut state = self.state.lock();
        let Some(limited) = state.as_mut() else {
            return true;
        };
        let now = now.into_std();
        match spender {
            Spender::Client => limited.bucket.take(now),
            Spender::Background => {
                let reserve = (burst(limited.max_qps) / 2.0).floor();
                limited.bucket.take_keeping(now, reserve)
            }
        }
    }
}

/// The bucket's size: one second's worth, at least one query.
fn burst(max_qps: f64) -> f64 {
    max_qps.max(1.0)
}

/// The smaller of two budgets, where `None` is no limit.
pub fn tighter(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_budget_lets_one_second_then_its_rate_through() {
        let budget = Budget::new(Some(10.0));
        let t0 = Instant::now();
        assert_eq!(
            (0..100)
                .filter(|_| budget.spend(t0, Spender::Client))
                .count(),
            10
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        let t3 = Instant::now();
        // Three seconds at 10/s refill the bucket only up to its one second's worth.
        assert_eq!(
            (0..100)
                .filter(|_| budget.spend(t3, Spender::Client))
                .count(),
            10
        );
        let unlimited = Budget::new(None);
        assert!((0..10_000).all(|_| unlimited.spend(t0, Spender::Client)));
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_leaves_half_the_burst_to_clients() {
        let budget = Budget::new(Some(10.0));
        let now = Instant::now();
        let background = (0..100)
            .filter(|_| budget.spend(now, Spender::Background))
            .count();
        assert_eq!(background, 5);
        let clients = (0..100)
            .filter(|_| budget.spend(now, Spender::Client))
            .count();
        assert_eq!(clients, 5, "the reserve is the clients'");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_too_small_for_a_reserve_still_lets_probes_through() {
        let budget = Budget::new(Some(1.0));
        let now = Instant::now();
        assert!(budget.spend(now, Spender::Background));
        assert!(!budget.spend(now, Spender::Client));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_that_changes_the_budget_refills_it_and_one_that_keeps_it_does_not() {
        let budget = Budget::new(Some(2.0));
        let now = Instant::now();
        assert!(budget.spend(now, Spender::Client) && budget.spend(now, Spender::Client));
        budget.set(Some(2.0));
        assert!(
            !budget.spend(now, Spender::Client),
            "unchanged: still spent"
        );
        budget.set(Some(3.0));
        assert_eq!(
            (0..10)
                .filter(|_| budget.spend(now, Spender::Client))
                .count(),
            3
        );
        budget.set(None);
        assert!((0..100).all(|_| budget.spend(now, Spender::Client)));
    }

    #[test]
    fn the_tighter_budget_is_the_smaller_and_none_is_no_limit() {
        assert_eq!(tighter(Some(5.0), Some(3.0)), Some(3.0));
        assert_eq!(tighter(None, Some(3.0)), Some(3.0));
        assert_eq!(tighter(Some(5.0), None), Some(5.0));
        assert_eq!(tighter(None, None), None);
    }
}
