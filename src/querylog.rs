//! The opt-in sampled query log (`[log] queries`).
//!
//! This module owns which queries are logged and what a line says: client, qname, qtype,
//! rcode, where the answer came from, and how long it took. Sampling is a per-thread
//! countdown, not a random draw: with `queries = 0` the packet path pays one predictable
//! branch, and with `queries = 0.01` every hundredth reply a thread sends is logged, at the
//! `info` level under the `nodedns::query` target (so `RUST_LOG=nodedns::query=off` mutes it).

use std::cell::Cell;
use std::net::SocketAddr;

use tokio::time::Instant;

use crate::wire::{self, Query};

/// Where an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A fresh cache entry.
    Cache,
    /// An upstream's answer to this query (or to an identical one in flight).
    Upstream,
    /// An expired entry served because upstream failed or was slow (RFC 8767).
    Stale,
    /// Made here: FORMERR, NOTIMP, REFUSED for an uncovered name, SERVFAIL when every
    /// upstream failed.
    Local,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Upstream => "upstream",
            Source::Stale => "stale",
            Source::Local => "local",
        }
    }
}

/// Decides which replies are logged: one in `every`, per thread.
#[derive(Debug, Clone, Copy)]
pub struct Sampler {
    /// 0 when the query log is off.
    every: u64,
}

thread_local! {
    static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
}

impl Sampler {
    /// `fraction` of replies, from 0 (off) to 1 (all). Validation keeps it in that range;
    /// anything else is treated as off.
    pub fn new(fraction: f64) -> Sampler {
        let every = if fraction > 0.0 && fraction <= 1.0 {
            // At most 2^32 between two lines: more would be off in all but name.
            (1.0 / fraction).round().min(f64::from(u32::MAX)) as u64
        } else {
            0
        };
        Sampler { every }
    }

    pub fn is_on(&self) -> bool {
        self.every != 0
    }

    /// Whether this reply is one to log.
    #[inline]
    pub fn sample(&self) -> bool {
        if self.every == 0 {
            return false;
        }
        COUNTDOWN.with(|c| match c.get() {
            0 => {
                c.set(self.every - 1);
                true
            }
            n => {
                c.set(n - 1);
                false
            }
        })
    }
}

/// One query log line.
pub fn log(client: SocketAddr, q: &Query<'_>, source: Source, reply: &[u8], started: Instant) {
    let rcode = wire::Header::parse(reply).map_or(u16::MAX, |h| h.rcode());
    tracing::info!(
        target: "nodedns::query",
        client = %client,
        qname = %q.qname_text(),
        qtype = q.qtype,
        rcode = rcode,
        source = source.label(),
        duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "query"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_never_samples() {
        let s = Sampler::new(0.0);
        assert!(!s.is_on());
        assert!((0..1000).all(|_| !s.sample()));
        assert!(!Sampler::new(f64::NAN).is_on());
    }

    #[test]
    fn samples_the_configured_fraction() {
        let s = Sampler::new(0.01);
        let logged = (0..10_000).filter(|_| s.sample()).count();
        assert_eq!(logged, 100);
        let all = Sampler::new(1.0);
        assert_eq!((0..50).filter(|_| all.sample()).count(), 50);
    }
}
