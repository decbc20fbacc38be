//! The fast path: what is answered inline on the listener for every packet, without
//! allocating or awaiting: malformed queries, CHAOS, and fresh cache hits. Everything a hit
//! calls of this crate's own lives in this file, so it compiles into one unit and inlines
//! as one piece; that includes [`client_of`], the one place a reply's client fields are
//! taken from a query, and the reply counter. `nodedns top`'s two hooks (a query, a reply)
//! live in [`crate::top`], marked `#[inline]`: on a hit that is not sampled, each is a
//! thread-local decrement or an rcode compare.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Fast, Miss, Proto, Resolver};
use crate::cache::{self, EntryKind, Lookup};
use crate::config::DenyAction;
use crate::querylog::{self, Source};
use crate::stats::{DropReason, Hot};
use crate::wire::{self, Query, TtlRewrite};

impl Resolver {
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
        self.top.query(client.ip(), now);
        let routing = self.routing.load();
        // Before any parsing past the header: a source we do not serve costs no more.
        if !routing.allow.allows(client.ip()) {
            return self.deny(pkt, routing.deny, out);
        }
        let q = match wire::parse_query(pkt) {
            Ok(q) => q,
            Err(e) => return self.reject(pkt, e, out),
        };
        // One compare for IN queries: CHAOS is answered here, never cached or forwarded.
        if q.qclass == wire::class::CH {
            return self.chaos(pkt, &q, out);
        }
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
                    pkt,
                    query: q,
                    proto,
                    client,
                    now,
                    stale: Some(entry),
                });
            }
            Err(_) => {
                self.stats.inc(Hot::CacheMisses);
                return Fast::Slow(Miss {
                    pkt,
                    query: q,
                    proto,
                    client,
                    now,
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

    /// Writes the copy of a stored answer `client` gets, and counts it.
    pub(super) fn write(
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

    pub(super) fn count_reply(&self, out: &[u8]) {
        if let Some(h) = wire::Header::parse(out) {
            self.stats.response(h.rcode());
            let base = |qname: &[u8]| self.routing.load().search.base(qname).map(<[u8]>::len);
            self.top.reply(h.rcode(), out, base);
        }
    }

    pub(super) fn count_hit(&self, kind: EntryKind, stale: bool) {
        self.stats.inc(match (stale, kind) {
            (true, _) => Hot::CacheHitsStale,
            (false, EntryKind::Success) => Hot::CacheHitsSuccess,
            (false, EntryKind::Denial | EntryKind::ServFail) => Hot::CacheHitsDenial,
        });
    }
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
    fn deny<'p>(&self, pkt: &[u8], action: DenyAction, out: &mut Vec<u8>) -> Fast<'p> {
        match action {
            DenyAction::Refuse if wire::refused_by_header(pkt, out) => {
                self.stats.inc(Hot::DeniedRefused);
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
