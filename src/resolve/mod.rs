//! The life of one query, from the bytes a client sent to the bytes it gets back.
//!
//! Listeners know sockets, batching and framing; this module owns every decision about a
//! query. [`Resolver::fast`] runs inline on the listener for every packet: it parses the
//! query (the only parse it gets), answers malformed queries and CHAOS, and serves fresh cache
//! hits without allocating or awaiting. What it cannot answer it hands back as a [`Miss`],
//! which the listener passes, whatever its transport, to the one entry point for misses,
//! [`Resolver::resolve`]. From there the miss is this module's: routing to a zone, the
//! client's limits (`limited`), coalescing identical misses, the flight to upstream ([`crate::forward`] runs the
//! failover loop), the outcome (cached, then served to every waiter), and the fallback to a
//! stale answer (RFC 8767) or SERVFAIL. The reply goes back through the listener's
//! [`ReplyTo`].
//!
//! A miss goes one of two ways (`resolve`): *inline*, when it is one client's UDP query with
//! nothing stale and the first for its key (most misses), or in a task. Inline, the first
//! attempt is sent at once and the upstream socket's reader finishes the miss when the
//! reply comes (`inline`), with no task of its own unless the first attempt does not settle
//! it. In a task, the miss leads a flight or waits on one (`flight`). Both write the reply
//! for the client the same way (`client`). Every task this module starts is tracked by
//! [`Resolver::tasks`], which the server drains on shutdown.
//!
//! It does not own the cache's rules ([`crate::cache`]), the failover loop, or sockets.

mod client;
mod fast;
mod flight;
mod inline;
mod limited;
mod miss;
mod observe;
mod routing;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::cache::{self, Cache, TtlPolicy};
use crate::coalesce::Coalescer;
use crate::config::Config;
use crate::forward::UpstreamSet;
use crate::limit::Clients;
use crate::stats::{Stats, UpstreamStatus};
use crate::top::Top;
use crate::wire::{self, Query};

use flight::Outcome;
use routing::Routing;

pub use miss::ReplyTo;
pub use observe::Observer;

use observe::Asked;

/// The transport a query arrived on; it sets the reply size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// What [`Resolver::fast`] did with a packet.
// The miss carries its parsed query (about 300 bytes): moving that is cheaper than the
// allocation a box would add per miss, and a hit returns a variant that copies nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Fast<'p> {
    /// The reply is in `out`: send it.
    Reply,
    /// Send nothing (counted).
    Drop,
    /// Needs upstream work: give it to [`Resolver::resolve`].
    Slow(Miss<'p>),
}

/// A query the fast path could not answer, as it parsed it and with what it found, so the
/// miss path neither parses nor looks in the cache again.
#[derive(Debug)]
pub struct Miss<'p> {
    pkt: &'p [u8],
    query: Query<'p>,
    proto: Proto,
    client: SocketAddr,
    /// When the packet was read: an inline miss's deadline counts from here.
    now: Instant,
    /// An expired entry still inside the serve-stale window (RFC 8767), if there is one.
    stale: Option<Arc<cache::Entry>>,
    /// Whether the query is a search-list expansion (`[stats] search_suffixes`).
    expansion: bool,
    /// The query in its listener's retransmit table, to mark answered.
    asked: Option<Asked>,
}

/// Cache, zones, coalescer, upstreams and counters: everything a query needs, and the
/// tracker of every task a query starts.
pub struct Resolver {
    cache: Cache,
    routing: ArcSwap<Routing>,
    coalescer: Coalescer<Arc<Outcome>>,
    /// What each client has in flight and may still start; replaced when a reload changes
    /// the limits (tickets of the old table drop into it).
    clients: ArcSwap<Clients>,
    upstreams: Mutex<UpstreamSet>,
    stats: Arc<Stats>,
    /// What CHAOS `version.bind` and `id.server` answer; fixed for the process's life.
    identity: wire::Identity,
    tasks: TaskTracker,
    /// The heaviest clients and names, for `nodedns top`.
    top: Top,
    /// The retransmit table of every client TCP connection.
    tcp_retransmits: observe::Table,
}

impl Resolver {
    pub fn new(cfg: &Config, stats: Arc<Stats>) -> Resolver {
        let mut upstreams = UpstreamSet::new(cfg.forward.clone(), stats.clone());
        let routing = Routing::build(cfg, &mut upstreams, &stats);
        Resolver {
            cache: Cache::new(routing::cache_limits(cfg)),
            routing: ArcSwap::from_pointee(routing),
            coalescer: Coalescer::new(cfg.listen.max_inflight, cfg.cache.max_waiters_per_key),
            clients: ArcSwap::new(Clients::new(limited::limits(cfg))),
            upstreams: Mutex::new(upstreams),
            stats,
            identity: routing::identity(),
            tasks: TaskTracker::new(),
            top: Top::new(),
            tcp_retransmits: observe::Table::default(),
        }
    }

    /// Applies a reloaded config. The cache (resized if its limits changed), upstream health
    /// and connections (for upstreams the new config still names) and in-flight queries
    /// (they hold the zone they started with) all carry over.
    pub fn reconfigure(&self, cfg: &Config) {
        let mut upstreams = self.upstreams.lock();
        let mut next = upstreams.successor(cfg.forward.clone());
        let routing = Routing::build(cfg, &mut next, &self.stats);
        next.seal();
        *upstreams = next;
        self.routing.store(Arc::new(routing));
        self.cache.set_limits(routing::cache_limits(cfg));
        self.coalescer
            .set_limits(cfg.listen.max_inflight, cfg.cache.max_waiters_per_key);
        let limits = limited::limits(cfg);
        if self.clients.load().limits() != limits {
            self.clients.store(Clients::new(limits));
        }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn top(&self) -> &Top {
        &self.top
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The tracker of every task this resolver starts (misses, flights, reply retries):
    /// the server closes and waits on it to drain.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// The TTL rules of the zone that routes `qname` (lowercased wire form) under the
    /// current config; `None` when no zone does.
    pub fn ttl_policy(&self, qname: &[u8]) -> Option<TtlPolicy> {
        self.routing.load().zones.route(qname).map(|z| z.ttl)
    }

    /// Every upstream of the current config as a scrape sees it, sorted by label.
    pub fn upstream_status(&self) -> Vec<UpstreamStatus> {
        self.upstreams.lock().status()
    }

    /// Probes every upstream that has not answered yet (at start and after a reload), so
    /// health and readiness are known without client traffic. Must run inside a runtime.
    pub fn probe_unanswered(&self) {
        self.upstreams.lock().probe_unanswered();
    }

    /// Why the current config cannot serve every zone yet: the first zone none of whose
    /// upstreams has answered (a probe or a query) since it was configured; `None` when every
    /// zone has one.
    pub fn unanswered_zone(&self) -> Option<String> {
        let routing = self.routing.load();
        let (name, zone) = routing
            .listed
            .iter()
            .find(|(_, z)| !z.upstreams.upstreams.iter().any(|u| u.has_answered()))?;
        let tried: Vec<String> = zone.upstreams.upstreams.iter().map(|u| u.label()).collect();
        Some(format!(
            "zone {name}: no upstream has answered yet ({})",
            tried.join(", ")
        ))
    }
}
