//! The fast path: what is answered inline on the listener for every packet, without
//! allocating or awaiting: malformed queries, CHAOS, and fresh cache hits. Everything a hit
//! calls of this crate's own lives in this file, so it compiles into one unit and inlines
//! as one piece; that includes [`client_of`], the one place a reply's client fields are
//! taken from a query, and the reply counter ([`Resolver::count_reply`]), where replies are
//! counted by rcode and search-list expansions are told apart. `nodedns top`'s two hooks (a
//! query, a reply) live in [`crate::top`], marked `#[inline]`: on a hit that is not sampled,
//! each is a thread-local decrement or an rcode compare.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::observe::{Observer, proto_index};
use super::routing::Routing;
use super::{Fast, Miss, Proto, Resolver};
use crate::cache::{self, EntryKind, Lookup};
use crate::config::DenyAction;
use crate::querylog::{self, Source};
use crate::stats::{DropReason, Hot, Served, ZoneCounters};
use crate::wire::{self, Query, TtlRewrite};

impl Resolver {
    /// Answers what can be answered without waiting: malformed queries and fresh cache hits.
    /// `now` is when the packet was read (one clock reading serves a whole batch: TTLs age
    /// in whole seconds). A reply written to `out` waits in `obs` to be timed by
    /// [`Resolver::settle`] once it is sent.
    pub fn fast<'p>(
        self: &Arc<Self>,
        pkt: &'p [u8],
        proto: Proto,
        client: SocketAddr,
        now: Instant,
        out: &mut Vec<u8>,
        obs: &mut Observer,
    ) -> Fast<'p> {
        self.stats.inc(match proto {
            Proto::Udp => Hot::RequestsUdp,
            Proto::Tcp => Hot::RequestsTcp,
        });
        self.top.query(client.ip(), now);
        let routing = self.routing.load();
        // Before any parsing past the header: a source we do not serve costs no more.
        if !routing.allow.allows(client.ip()) {
            return self.deny(pkt, routing.deny, out, obs);
        }
        let q = match wire::parse_query(pkt) {
            Ok(q) => q,
            Err(e) => return self.reject(pkt, e, out, obs),
        };
        // One compare for IN queries: CHAOS is answered here, never cached or forwarded.
        if q.qclass == wire::class::CH {
            return self.chaos(pkt, &q, out, obs);
        }
        let expansion = routing.search.is_expansion(q.qname());
        // The copy is written while the entry's shard is read-locked (no reference is taken);
        // what needs more than a copy (the log, a prefetch flight) happens after.
        let served = self.cache.serve_fresh(q.cache_key(), now, |entry, age| {
            self.write_hit(&q, proto, entry, age, &routing, expansion, out);
            let prefetch = routing.prefetch && entry.record_hit_and_check_prefetch(age);
            (prefetch, entry.zone(), age)
        });
        let prefetch = match served {
            Ok((prefetch, zone, age)) => {
                obs.pending(zone, Served::Hit);
                // Only an entry inserted under a second ago can answer the retry of a miss
                // answered under a second ago: older hits pay nothing.
                if age == 0 && obs.is_retransmit(client.ip(), &q, now) {
                    self.retransmit(proto);
                }
                prefetch
            }
            Err(lookup) => {
                let (again, asked) = obs.asked(client.ip(), &q, now);
                if again {
                    self.retransmit(proto);
                }
                let stale = match lookup {
                    Lookup::Stale { entry } => Some(entry),
                    _ => None,
                };
                return Fast::Slow(Miss {
                    pkt,
                    query: q,
                    proto,
                    client,
                    now,
                    stale,
                    expansion,
                    asked,
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

    /// `version.bind`, `id.server` and friends; any other CHAOS query is REFUSED, as a
    /// forwarder has no CHAOS data to forward to.
    #[cold]
    fn chaos(
        &self,
        pkt: &[u8],
        q: &Query<'_>,
        out: &mut Vec<u8>,
        obs: &mut Observer,
    ) -> Fast<'static> {
        let served = if wire::chaos_reply(q, &self.identity, out) {
            Served::Hit
        } else {
            wire::error_reply(pkt, wire::rcode::REFUSED, out);
            Served::Error
        };
        self.count_reply(out, false);
        obs.pending(0, served);
        Fast::Reply
    }

    fn reject(
        &self,
        pkt: &[u8],
        e: wire::QueryError,
        out: &mut Vec<u8>,
        obs: &mut Observer,
    ) -> Fast<'static> {
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
                self.count_reply(out, false);
                obs.pending(0, Served::Error);
                Fast::Reply
            }
        }
    }

    /// Writes the copy of a stored answer `client` gets, and counts it; `expansion` says
    /// whether the query is a search-list expansion.
    pub(super) fn write(
        &self,
        client: &wire::Client<'_>,
        stored: &[u8],
        layout: &wire::Layout,
        ttl: TtlRewrite,
        expansion: bool,
        out: &mut Vec<u8>,
    ) {
        wire::write_reply(stored, layout, client, ttl, out);
        self.count_reply(out, expansion);
    }

    /// Serves a fresh cache hit, counted in the zone the entry was stored for.
    #[allow(clippy::too_many_arguments)]
    fn write_hit(
        &self,
        q: &Query<'_>,
        proto: Proto,
        entry: &cache::Entry,
        age: u32,
        routing: &Routing,
        expansion: bool,
        out: &mut Vec<u8>,
    ) {
        let ttl = entry.ttl_rewrite(age);
        let client = client_of(q, proto, routing.udp_cap);
        self.write(&client, entry.stored(), entry.layout(), ttl, expansion, out);
        if let Some(zone) = routing.counters.get(usize::from(entry.zone())) {
            count_hit(zone, proto, entry.kind);
        }
    }

    /// Counts the reply in `out` by rcode, and among the replies to search-list expansions
    /// when `expansion` says the query is one.
    pub(super) fn count_reply(&self, out: &[u8], expansion: bool) {
        if let Some(h) = wire::Header::parse(out) {
            self.stats.response(h.rcode());
            if expansion {
                self.stats.expansion(h.rcode());
            }
            let base = |qname: &[u8]| self.routing.load().search.base(qname).map(<[u8]>::len);
            self.top.reply(h.rcode(), out, base);
        }
    }
}

/// A fresh hit of an entry of `kind`, over `proto`, in `zone`.
fn count_hit(zone: &ZoneCounters, proto: Proto, kind: EntryKind) {
    let kind = match kind {
        EntryKind::Success => 0,
        EntryKind::Denial | EntryKind::ServFail => 1,
    };
    zone.hit(proto_index(proto), kind);
}

/// Largest reply over TCP: the 2-byte frame length.
const TCP_MAX: usize = 65535;

/// Who the reply to `q` is for, on `proto`.
pub(super) fn client_of<'q>(q: &Query<'q>, proto: Proto, udp_cap: u16) -> wire::Client<'q> {
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

impl Resolver {
    /// A query from a source outside `listen.allow`: REFUSED from its header alone, or
    /// nothing, per `listen.deny_action`; counted either way.
    #[cold]
    fn deny<'p>(
        &self,
        pkt: &[u8],
        action: DenyAction,
        out: &mut Vec<u8>,
        obs: &mut Observer,
    ) -> Fast<'p> {
        match action {
            DenyAction::Refuse if wire::refused_by_header(pkt, out) => {
                self.stats.inc(Hot::DeniedRefused);
                obs.pending(0, Served::Error);
                Fast::Reply
            }
            // No header to answer, or a response: nothing is sent, as for any source.
            DenyAction::Refuse | DenyAction::Drop => {
                self.stats.inc(Hot::DeniedDropped);
                Fast::Drop
            }
        }
    }
}
