//! The life of one query, from the bytes a client sent to the bytes it gets back.
//!
//! [`Handler::fast`] runs inline on the listener for every packet: it parses, answers
//! malformed queries, and serves fresh cache hits without allocating or awaiting. What it
//! cannot answer goes to [`Handler::slow`]: route to a zone, coalesce identical misses,
//! forward with failover, cache, and fall back to a stale answer (RFC 8767) or SERVFAIL.
//! Listeners own sockets and framing; this module owns the decisions.

mod inline;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::cache::{self, Cache, EntryKind, Lookup, TtlPolicy};
use crate::coalesce::{Coalescer, Completion, Join};
use crate::config::{self, Config};
use crate::forward::{ForwardError, Forwarded, Forwarder, UpstreamSet, ZoneUpstreams};
use crate::querylog::{self, Sampler, Source};
use crate::stats::{DropReason, Hot, Stats, ZoneCounters, inc};
use crate::wire::{self, Query, TtlRewrite};
use crate::zones::ZoneTable;

pub use inline::ReplyTo;

/// The transport a query arrived on; it sets the reply size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// What [`Handler::fast`] did with a packet.
// The miss carries its parsed query (about 300 bytes): moving that is cheaper than the
// allocation a box would add per miss, and a hit returns a variant that copies nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Fast<'p> {
    /// The reply is in `out`: send it.
    Reply,
    /// Send nothing (counted).
    Drop,
    /// Needs upstream work: [`Handler::try_inline`], or [`Handler::slow`] in a task.
    Slow(Miss<'p>),
}

/// A query the fast path could not answer, as it parsed it and with what it found, so the
/// slow path does not look again.
#[derive(Debug)]
pub struct Miss<'p> {
    query: Query<'p>,
    /// An expired entry still inside the serve-stale window (RFC 8767), if there is one.
    stale: Option<Arc<cache::Entry>>,
}

/// A [`Miss`] without its borrow of the packet, to move into a task.
#[derive(Debug)]
pub struct PendingMiss {
    stale: Option<Arc<cache::Entry>>,
}

impl Miss<'_> {
    pub fn detach(self) -> PendingMiss {
        PendingMiss { stale: self.stale }
    }
}

/// Largest reply over TCP: the 2-byte frame length.
const TCP_MAX: usize = 65535;

/// A zone, ready to forward.
struct Zone {
    upstreams: ZoneUpstreams,
    ttl: TtlPolicy,
    /// Queries routed to this zone (they reached the slow path); kept across reloads.
    requests: Arc<ZoneCounters>,
}

/// What a flight to upstream produced, shared by every waiter.
enum Outcome {
    /// Answered and cached: waiters are served from the entry, as later hits will be.
    Cached(Arc<cache::Entry>),
    /// Answered, not cacheable (or too large to store).
    Uncached {
        response: Vec<u8>,
        layout: wire::Layout,
    },
    Failed,
}

/// Everything a config reload replaces, swapped in one piece so a query sees either the old
/// config or the new one, never a mix.
struct Routing {
    zones: ZoneTable<Arc<Zone>>,
    /// The same zones by name, in config order, for readiness.
    listed: Vec<(String, Arc<Zone>)>,
    forwarder: Forwarder,
    udp_cap: u16,
    stale_client_timeout: Duration,
    prefetch: bool,
    querylog: Sampler,
}

impl Routing {
    fn build(cfg: &Config, upstreams: &mut UpstreamSet, stats: &Arc<Stats>) -> Routing {
        let mut zones = ZoneTable::new();
        let mut listed = Vec::new();
        for z in &cfg.zones {
            let zone = Arc::new(Zone {
                upstreams: upstreams.zone(z),
                ttl: ttl_policy(&z.cache),
                requests: stats.zone(&z.name),
            });
            zones.insert(&z.name, zone.clone());
            listed.push((z.name.clone(), zone));
        }
        Routing {
            zones,
            listed,
            forwarder: Forwarder::new(cfg.forward.clone(), stats.clone()),
            udp_cap: cfg.listen.udp_max_payload,
            stale_client_timeout: cfg.cache.stale_client_timeout,
            prefetch: cfg.cache.prefetch,
            querylog: Sampler::new(cfg.log.queries),
        }
    }
}

/// Everything a query needs: cache, zones, forwarder, coalescer, counters.
pub struct Handler {
    cache: Cache,
    routing: ArcSwap<Routing>,
    coalescer: Coalescer<Arc<Outcome>>,
    upstreams: Mutex<UpstreamSet>,
    stats: Arc<Stats>,
    /// What CHAOS `version.bind` and `id.server` answer; fixed for the process's life.
    identity: wire::Identity,
}

impl Handler {
    pub fn new(cfg: &Config, stats: Arc<Stats>) -> Handler {
        let mut upstreams = UpstreamSet::new(cfg.forward.clone(), stats.clone());
        let routing = Routing::build(cfg, &mut upstreams, &stats);
        Handler {
            cache: Cache::new(cache_limits(cfg)),
            routing: ArcSwap::from_pointee(routing),
            coalescer: Coalescer::new(cfg.listen.max_inflight, cfg.cache.max_waiters_per_key),
            upstreams: Mutex::new(upstreams),
            stats,
            identity: identity(),
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
        self.cache.set_limits(cache_limits(cfg));
        self.coalescer
            .set_limits(cfg.listen.max_inflight, cfg.cache.max_waiters_per_key);
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The TTL rules of the zone that routes `qname` (lowercased wire form) under the
    /// current config; `None` when no zone does.
    pub fn ttl_policy(&self, qname: &[u8]) -> Option<TtlPolicy> {
        self.routing.load().zones.route(qname).map(|z| z.ttl)
    }

    /// Every upstream of the current config.
    pub fn upstreams(&self) -> parking_lot::MutexGuard<'_, UpstreamSet> {
        self.upstreams.lock()
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

    /// Answers what can be answered without waiting: malformed queries and fresh cache hits.
    /// `now` is when the packet was read (one clock reading serves a whole batch: TTLs age
    /// in whole seconds).
    pub fn fast<'p>(
        self: &Arc<Self>,
        pkt: &'p [u8],
        proto: Proto,
        client: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Fast<'p> {
        self.stats.inc(match proto {
            Proto::Udp => Hot::RequestsUdp,
            Proto::Tcp => Hot::RequestsTcp,
        });
        let q = match wire::parse_query(pkt) {
            Ok(q) => q,
            Err(e) => return self.reject(pkt, e, out),
        };
        // One compare for IN queries: CHAOS is answered here, never cached or forwarded.
        if q.qclass == wire::class::CH {
            return self.chaos(pkt, &q, out);
        }
        let routing = self.routing.load();
        // The copy is written while the entry's shard is read-locked (no reference is taken);
        // what needs more than a copy (the log, a prefetch flight) happens after.
        let served = self.cache.serve_fresh(q.cache_key(), now, |entry, age| {
            self.write_hit(&q, proto, entry, age, routing.udp_cap, out);
            routing.prefetch && entry.record_hit_and_check_prefetch(age)
        });
        let prefetch = match served {
            Ok(prefetch) => prefetch,
            Err(Lookup::Stale { entry }) => {
                return Fast::Slow(Miss {
                    query: q,
                    stale: Some(entry),
                });
            }
            Err(_) => {
                self.stats.inc(Hot::CacheMisses);
                return Fast::Slow(Miss {
                    query: q,
                    stale: None,
                });
            }
        };
        if routing.querylog.sample() {
            querylog::log(client, &q, Source::Cache, out, now);
        }
        if prefetch {
            self.stats.inc(Hot::Prefetches);
            self.refresh(&q);
        }
        Fast::Reply
    }

    /// Answers a query that [`Handler::fast`] passed on as `miss`. `None` means send nothing.
    pub async fn slow(
        self: &Arc<Self>,
        pkt: &[u8],
        proto: Proto,
        client: SocketAddr,
        miss: PendingMiss,
    ) -> Option<Vec<u8>> {
        let started = self.routing.load().querylog.is_on().then(Instant::now);
        // Room for a typical answer without growing; a larger one grows once.
        let mut out = Vec::with_capacity(512);
        let (source, q) = self.answer_slow(pkt, proto, miss, &mut out).await?;
        if let Some(started) = started
            && self.routing.load().querylog.sample()
        {
            querylog::log(client, &q, source, &out, started);
        }
        Some(out)
    }

    /// [`Handler::slow`] without the query log: fills `out` and says where it came from.
    async fn answer_slow<'p>(
        self: &Arc<Self>,
        pkt: &'p [u8],
        proto: Proto,
        miss: PendingMiss,
        out: &mut Vec<u8>,
    ) -> Option<(Source, Query<'p>)> {
        // The fast path parsed this already: it cannot fail now.
        let q = wire::parse_query(pkt).ok()?;
        let key = q.cache_key();
        let routing = self.routing.load_full();
        let udp_cap = routing.udp_cap;
        let stale = miss.stale;
        let Some(zone) = routing.zones.route(q.qname()) else {
            wire::error_reply(pkt, wire::rcode::REFUSED, out);
            self.count_reply(out);
            return Some((Source::Local, q));
        };
        inc(match proto {
            Proto::Udp => &zone.requests.udp,
            Proto::Tcp => &zone.requests.tcp,
        });
        let timeout = routing.stale_client_timeout;
        let outcome = self
            .wait_outcome(zone, &q, key, stale.is_some(), timeout)
            .await;
        let client = client_of(&q, proto, udp_cap);
        let source = self.serve(&client, pkt, outcome.as_deref(), stale, out);
        Some((source, q))
    }

    /// Writes the reply `client` gets from a flight's `outcome`: the answer, else the stale
    /// entry, else a SERVFAIL for the query in `pkt`. Says where it came from.
    fn serve(
        &self,
        client: &wire::Client<'_>,
        pkt: &[u8],
        outcome: Option<&Outcome>,
        stale: Option<Arc<cache::Entry>>,
        out: &mut Vec<u8>,
    ) -> Source {
        match (outcome, stale) {
            (Some(Outcome::Cached(entry)), _) => {
                let ttl = entry.ttl_rewrite(0);
                self.write(client, entry.stored(), entry.layout(), ttl, out);
                Source::Upstream
            }
            (Some(Outcome::Uncached { response, layout }), _) => {
                let ttl = TtlRewrite::Aged {
                    cap: u32::MAX,
                    age: 0,
                };
                self.write(client, response, layout, ttl, out);
                Source::Upstream
            }
            (_, Some(entry)) => {
                let ttl = entry.stale_ttl_rewrite();
                self.write(client, entry.stored(), entry.layout(), ttl, out);
                self.count_hit(entry.kind, true);
                Source::Stale
            }
            (_, None) => {
                wire::error_reply(pkt, wire::rcode::SERVFAIL, out);
                self.count_reply(out);
                Source::Local
            }
        }
    }

    /// Joins or starts the flight for `key` and waits for it: as long as it takes without a
    /// stale answer in hand, only `stale_timeout` with one. `None`: nothing usable.
    async fn wait_outcome(
        self: &Arc<Self>,
        zone: &Arc<Zone>,
        q: &Query<'_>,
        key: &[u8],
        have_stale: bool,
        stale_timeout: Duration,
    ) -> Option<Arc<Outcome>> {
        let waiter = match self.coalescer.join(key) {
            Join::Leader(done) if !have_stale => {
                // Nothing to serve meanwhile, so this client waits for the flight to the end
                // anyway: fly it here rather than in a task of its own. Followers still get
                // the outcome, and if this task is cancelled `done` is dropped, which ends
                // the flight for them with nothing.
                let outcome = Arc::new(self.flight(zone, q, key, false).await);
                done.complete(outcome.clone());
                return Some(outcome);
            }
            Join::Leader(done) => {
                let waiter = done.waiter();
                self.spawn_flight(zone.clone(), q, key, have_stale, done);
                waiter
            }
            Join::Follower(waiter) => {
                self.stats.inc(Hot::Coalesced);
                waiter
            }
            Join::Overloaded => {
                self.stats.inc(Hot::Overload);
                return None;
            }
        };
        if have_stale {
            // With a stale answer in hand, wait for upstream only as long as a client would
            // (RFC 8767 §5: the client response timer); the flight goes on in the background
            // and refreshes the cache when it lands.
            tokio::time::timeout(stale_timeout, waiter.wait())
                .await
                .ok()
                .flatten()
        } else {
            waiter.wait().await
        }
    }

    /// Prefetch: refresh a hot entry before it expires, unless a flight for it is already up.
    fn refresh(self: &Arc<Self>, q: &Query<'_>) {
        let Some(zone) = self.routing.load().zones.route(q.qname()).cloned() else {
            return;
        };
        let key = q.cache_key();
        if let Join::Leader(done) = self.coalescer.join(key) {
            self.spawn_flight(zone, q, key, false, done);
        }
    }

    /// Starts the upstream query for a flight in its own task, so that it outlives any one
    /// client: a client served stale leaves, and the answer still lands in the cache.
    fn spawn_flight(
        self: &Arc<Self>,
        zone: Arc<Zone>,
        q: &Query<'_>,
        key: &[u8],
        have_stale: bool,
        done: Completion<Arc<Outcome>>,
    ) {
        let upstream_query = upstream_query(q);
        let key = key.to_vec();
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.fly_counted(&zone, &upstream_query, &key, have_stale);
            done.complete(Arc::new(outcome.await));
        });
    }

    /// The flight for `q` in the caller's task.
    async fn flight(&self, zone: &Zone, q: &Query<'_>, key: &[u8], have_stale: bool) -> Outcome {
        self.fly_counted(zone, &upstream_query(q), key, have_stale)
            .await
    }

    /// [`Handler::fly`], counted in the in-flight gauge while it runs (or until dropped).
    async fn fly_counted(
        &self,
        zone: &Zone,
        query: &[u8],
        key: &[u8],
        have_stale: bool,
    ) -> Outcome {
        let _in_flight = InFlight::new(&self.stats);
        self.fly(zone, query, key, have_stale).await
    }

    async fn fly(&self, zone: &Zone, query: &[u8], key: &[u8], have_stale: bool) -> Outcome {
        let forwarder = &self.routing.load_full().forwarder;
        let forwarded = forwarder.forward(&zone.upstreams, query).await;
        self.outcome(zone, forwarded, key, have_stale)
    }

    /// What a flight's forwarding came to, cached when it may be.
    fn outcome(
        &self,
        zone: &Zone,
        forwarded: Result<Forwarded, ForwardError>,
        key: &[u8],
        have_stale: bool,
    ) -> Outcome {
        // Validated and normalised when the forwarder judged it: anything here may be cached.
        let Ok(Forwarded {
            stored: response,
            analysis,
            layout,
            ..
        }) = forwarded
        else {
            return Outcome::Failed;
        };
        // A SERVFAIL must not displace a stale answer that can still serve (RFC 8767 §4).
        if have_stale && analysis.kind == wire::Kind::ServFail {
            return Outcome::Failed;
        }
        let now = Instant::now();
        match (self.cache).insert_or_return(key, response, &analysis, layout, &zone.ttl, now) {
            Ok(entry) => Outcome::Cached(entry),
            Err((response, layout)) => Outcome::Uncached { response, layout },
        }
    }

    /// `version.bind`, `id.server` and friends; any other CHAOS query is REFUSED, as a
    /// forwarder has no CHAOS data to forward to.
    #[cold]
    fn chaos(&self, pkt: &[u8], q: &Query<'_>, out: &mut Vec<u8>) -> Fast<'static> {
        if !wire::chaos_reply(q, &self.identity, out) {
            wire::error_reply(pkt, wire::rcode::REFUSED, out);
        }
        self.count_reply(out);
        Fast::Reply
    }

    fn reject(&self, pkt: &[u8], e: wire::QueryError, out: &mut Vec<u8>) -> Fast<'static> {
        match e {
            wire::QueryError::TooShort => {
                self.stats.dropped_one(DropReason::Short);
                Fast::Drop
            }
            wire::QueryError::IsResponse => {
                self.stats.dropped_one(DropReason::Response);
                Fast::Drop
            }
            wire::QueryError::Reply(rcode) => {
                if !wire::error_reply(pkt, rcode, out) {
                    self.stats.dropped_one(DropReason::Short);
                    return Fast::Drop;
                }
                self.count_reply(out);
                Fast::Reply
            }
        }
    }

    fn write(
        &self,
        client: &wire::Client<'_>,
        stored: &[u8],
        layout: &wire::Layout,
        ttl: TtlRewrite,
        out: &mut Vec<u8>,
    ) {
        wire::write_reply(stored, layout, client, ttl, out);
        self.count_reply(out);
    }

    /// Serves a fresh cache hit.
    fn write_hit(
        &self,
        q: &Query<'_>,
        proto: Proto,
        entry: &cache::Entry,
        age: u32,
        udp_cap: u16,
        out: &mut Vec<u8>,
    ) {
        let ttl = entry.ttl_rewrite(age);
        let client = client_of(q, proto, udp_cap);
        self.write(&client, entry.stored(), entry.layout(), ttl, out);
        self.count_hit(entry.kind, false);
    }

    fn count_reply(&self, out: &[u8]) {
        if let Some(h) = wire::Header::parse(out) {
            self.stats.response(h.rcode());
        }
    }

    fn count_hit(&self, kind: EntryKind, stale: bool) {
        self.stats.inc(match (stale, kind) {
            (true, _) => Hot::CacheHitsStale,
            (false, EntryKind::Success) => Hot::CacheHitsSuccess,
            (false, EntryKind::Denial | EntryKind::ServFail) => Hot::CacheHitsDenial,
        });
    }
}

/// Counts a flight in the in-flight gauge for as long as it lives, however it ends
/// (answered, failed, or dropped with a cancelled task).
struct InFlight(Arc<Stats>);

impl InFlight {
    fn new(stats: &Arc<Stats>) -> InFlight {
        stats.inflight.fetch_add(1, Relaxed);
        InFlight(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// This build's version and the node's hostname, read once at start. The hostname comes from
/// the kernel (`/proc`), which needs no libc call; with host networking it is the node's name.
fn identity() -> wire::Identity {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    wire::Identity {
        version: concat!("nodedns ", env!("CARGO_PKG_VERSION")).to_owned(),
        hostname,
    }
}

/// Who the reply to `q` is for, on `proto`.
fn client_of<'q>(q: &Query<'q>, proto: Proto, udp_cap: u16) -> wire::Client<'q> {
    wire::Client {
        header: wire::ClientHeader::of(q),
        question: q.question,
        has_edns: q.edns.is_some(),
        max_len: match proto {
            Proto::Udp => q.udp_limit(udp_cap),
            Proto::Tcp => TCP_MAX,
        },
    }
}

/// What goes upstream for `q` (its ID is set per attempt).
fn upstream_query(q: &Query<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    wire::build_upstream_query(q, 0, &mut out);
    out
}

/// Whole seconds of a zone's TTL clamps, saturating at `u32::MAX`.
fn ttl_policy(t: &config::CacheTtl) -> TtlPolicy {
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    TtlPolicy {
        min_ttl: secs(t.min_ttl),
        max_ttl: secs(t.max_ttl),
        negative_max_ttl: secs(t.negative_max_ttl),
        servfail_ttl: secs(t.servfail_ttl),
    }
}

fn cache_limits(cfg: &Config) -> cache::Limits {
    cache::Limits {
        max_entries: cfg.cache.capacity,
        max_bytes: usize::try_from(cfg.cache.max_bytes).unwrap_or(usize::MAX),
        stale_max: cfg.cache.stale_max,
    }
}
