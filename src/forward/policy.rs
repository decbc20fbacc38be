//! The order in which a zone tries its upstreams.
//!
//! Only healthy upstreams are tried while there are any: a down upstream gets nothing but
//! its probes. When every upstream is down nodedns tries them all anyway (fail open) rather
//! than answer nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::seq::SliceRandom;

use crate::config::Policy;

use super::upstream::Upstream;

/// Returns the upstreams in the order to try them for one query.
pub fn order(
    policy: Policy,
    upstreams: &[Arc<Upstream>],
    next: &AtomicUsize,
) -> Vec<Arc<Upstream>> {
    let mut list: Vec<Arc<Upstream>> = upstreams.to_vec();
    match policy {
        Policy::Sequential => {}
        Policy::Random => list.shuffle(&mut rand::rng()),
        Policy::RoundRobin => {
            let start = next.fetch_add(1, Ordering::Relaxed) % list.len().max(1);
            list.rotate_left(start);
        }
        // Unknown SRTT sorts first, so a new upstream gets measured instead of starved.
        Policy::Fastest => list.sort_by_key(|u| u.srtt().unwrap_or_default()),
    }
    if list.iter().any(|u| u.is_up()) {
        list.retain(|u| u.is_up());
    }
    list
}
