//! Flights: the one upstream query behind every coalesced miss for a key, and what it comes
//! to. A flight runs in the leader's task when the leader waits for it anyway, in a task of
//! its own when it must outlive its client (a client served stale leaves, a prefetch has no
//! client), or inline (`inline`). Its [`Outcome`] is cached when it may be, and served to
//! every waiter by [`Resolver::serve`].

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use super::routing::Zone;
use super::{Resolver, client};
use crate::cache;
use crate::coalesce::{Completion, Join};
use crate::forward::{ForwardError, Forwarded, Spender, failover};
use crate::querylog::Source;
use crate::stats::{Stats, ZoneCounters};
use crate::wire::{self, Query, TtlRewrite};

/// What a flight to upstream produced, shared by every waiter.
pub(super) enum Outcome {
    /// Answered and cached: waiters are served from the entry, as later hits will be.
    Cached(Arc<cache::Entry>),
    /// Answered, not cacheable (or too large to store).
    Uncached {
        response: Vec<u8>,
        layout: wire::Layout,
    },
    Failed,
    /// Nothing could be sent: every upstream's query budget (`max_qps`) was spent.
    Spent,
}

/// What a client whose miss found every budget spent is told (RFC 8914), with SERVFAIL.
const BUDGET_SPENT: wire::Ede = wire::Ede {
    code: wire::ede::NO_REACHABLE_AUTHORITY,
    text: "nodedns: upstream query budget spent",
};

impl Resolver {
    /// Prefetch: refresh a hot entry before it expires, unless a flight for it is already up.
    /// It is background work: it leaves clients the reserve of every upstream budget.
    pub(super) fn refresh(self: &Arc<Self>, q: &Query<'_>) {
        let Some(zone) = self.routing.load().zones.route(q.qname()).cloned() else {
            return;
        };
        if let Join::Leader(done) = self.coalescer.join(q.cache_key()) {
            let query = upstream_query(q);
            self.spawn_flight(zone, query, false, Spender::Background, done);
        }
    }

    /// Runs the flight for `done` in a task of its own, so that it outlives any one client:
    /// a client served stale leaves, and the answer still lands in the cache.
    pub(super) fn spawn_flight(
        self: &Arc<Self>,
        zone: Arc<Zone>,
        query: Vec<u8>,
        have_stale: bool,
        spender: Spender,
        done: Completion<Arc<Outcome>>,
    ) {
        let this = self.clone();
        self.tasks.spawn(async move {
            let outcome = (this.flight(&zone, &query, done.key(), have_stale, spender)).await;
            done.complete(Arc::new(outcome));
        });
    }

    /// The flight for `key` in the caller's task: `query` (as [`upstream_query`] built it)
    /// through the failover loop, counted in the in-flight gauge while it runs (or until
    /// dropped). `spender`: whose work it is, for the upstream budgets.
    pub(super) async fn flight(
        &self,
        zone: &Zone,
        query: &[u8],
        key: &[u8],
        have_stale: bool,
        spender: Spender,
    ) -> Outcome {
        let _in_flight = InFlight::new(&self.stats);
        let forwarder = &self.routing.load_full().forwarder;
        let plan = forwarder.plan(&zone.upstreams, Instant::now());
        let apex = &zone.upstreams.apex;
        let first = match spender {
            Spender::Client => failover::fresh(),
            Spender::Background => failover::fresh_background(),
        };
        let forwarded = forwarder.run(&plan, query, apex, first).await;
        self.outcome(zone, forwarded, key, have_stale)
    }

    /// What a flight's forwarding came to, cached when it may be.
    pub(super) fn outcome(
        &self,
        zone: &Zone,
        forwarded: Result<Forwarded, ForwardError>,
        key: &[u8],
        have_stale: bool,
    ) -> Outcome {
        // Validated and normalised when the forwarder judged it: anything here may be cached.
        let (response, analysis, layout) = match forwarded {
            Ok(Forwarded {
                stored,
                analysis,
                layout,
            }) => (stored, analysis, layout),
            Err(ForwardError::BudgetSpent { .. }) => return Outcome::Spent,
            Err(ForwardError::Exhausted { .. }) => return Outcome::Failed,
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

    /// Writes the reply `client` gets from a flight's `outcome`: the answer, else the stale
    /// entry (counted in `zone`), else a SERVFAIL for the query in `pkt` (saying so with an
    /// Extended DNS Error when every upstream budget was spent). `expansion` says whether the
    /// query is a search-list expansion. Says where the reply came from.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve(
        &self,
        client: &wire::Client<'_>,
        pkt: &[u8],
        outcome: Option<&Outcome>,
        stale: Option<Arc<cache::Entry>>,
        zone: &ZoneCounters,
        expansion: bool,
        out: &mut Vec<u8>,
    ) -> Source {
        match (outcome, stale) {
            (Some(Outcome::Cached(entry)), _) => {
                let ttl = entry.ttl_rewrite(0);
                self.write(client, entry.stored(), entry.layout(), ttl, expansion, out);
                Source::Upstream
            }
            (Some(Outcome::Uncached { response, layout }), _) => {
                let ttl = TtlRewrite::Aged {
                    cap: u32::MAX,
                    age: 0,
                };
                self.write(client, response, layout, ttl, expansion, out);
                Source::Upstream
            }
            (_, Some(entry)) => {
                let ttl = entry.stale_ttl_rewrite();
                self.write(client, entry.stored(), entry.layout(), ttl, expansion, out);
                zone.stale();
                Source::Stale
            }
            (Some(Outcome::Spent), None) => {
                wire::error_reply_ede(pkt, wire::rcode::SERVFAIL, Some(BUDGET_SPENT), out);
                self.count_reply(out, expansion);
                Source::Local
            }
            (_, None) => {
                wire::error_reply(pkt, wire::rcode::SERVFAIL, out);
                self.count_reply(out, expansion);
                Source::Local
            }
        }
    }

    /// Logs the reply `out` to `asker` when the query log is on (`started` is set) and
    /// samples it. The query is parsed again here, for the log line only.
    pub(super) fn log(
        &self,
        asker: &client::Asker,
        source: Source,
        out: &[u8],
        started: Option<Instant>,
    ) {
        if let Some(started) = started
            && self.routing.load().querylog.sample()
            && let Ok(q) = wire::parse_query(&asker.pkt)
        {
            crate::querylog::log(asker.addr, &q, source, out, started);
        }
    }
}

/// Counts a flight in the in-flight gauge for as long as it lives, however it ends
/// (answered, failed, or dropped with a cancelled task).
pub(super) struct InFlight(Arc<Stats>);

impl InFlight {
    pub fn new(stats: &Arc<Stats>) -> InFlight {
        stats.inflight.fetch_add(1, Relaxed);
        InFlight(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Relaxed);
    }
}

/// What goes upstream for `q` (its ID is set per attempt).
pub(super) fn upstream_query(q: &Query<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    wire::build_upstream_query(q, 0, &mut out);
    out
}
