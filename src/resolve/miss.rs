//! The one way in for a miss ([`Resolver::resolve`]), and the task that answers one that is
//! not finished inline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::client::Asker;
use super::fast::client_of;
use super::flight::{Outcome, upstream_query};
use super::limited::Ticketed;
use super::observe::Asked;
use super::routing::Zone;
use super::{Miss, Proto, Resolver, cache};
use crate::coalesce::{Completion, Join, Waiter};
use crate::forward::Spender;
use crate::querylog::{self, Source};
use crate::stats::{Hot, Stats, ZoneCounters, inc};
use crate::wire;

/// Where a miss's reply goes: the listener's way back to the client that asked.
pub trait ReplyTo: Send + Sized + 'static {
    /// Sends `reply` from a task; may wait for room. Failures are counted in `stats`.
    fn send(self, reply: Vec<u8>, stats: &Arc<Stats>) -> impl Future<Output = ()> + Send;

    /// Sends `reply` from where nothing may wait (an upstream socket's reader, for a miss
    /// finished inline): now, or from a task tracked by `tasks`.
    fn send_now(self, reply: &[u8], stats: &Arc<Stats>, tasks: &TaskTracker) {
        let (reply, stats) = (reply.to_vec(), stats.clone());
        tasks.spawn(async move { self.send(reply, &stats).await });
    }
}

/// How a miss answered in a task gets its outcome.
enum Wait {
    /// It leads the flight and flies it itself: nothing to serve meanwhile, so its client
    /// waits for the flight to the end anyway. Followers still get the outcome, and if the
    /// task is cancelled the completion is dropped, which ends the flight for them with
    /// nothing.
    Fly(Completion<Arc<Outcome>>, Vec<u8>),
    /// Another task flies it; with a stale answer in hand, it waits only this long.
    Join(Waiter<Arc<Outcome>>, Option<Duration>),
}

impl Resolver {
    /// Answers a query [`Resolver::fast`] passed on as `miss`: the entry point both
    /// listeners call for every miss. A reply that is ready at once (REFUSED for a name no
    /// zone covers, the stale answer or SERVFAIL of a miss refused as overload, the stale
    /// answer or REFUSED of a client past its limits) is written to `out`, and `true` says
    /// so. Otherwise the reply goes to `reply_to` when it
    /// is ready: from the upstream socket's reader for a miss started inline (one client's
    /// UDP query with nothing stale, first for its key), else from a task.
    pub fn resolve<R: ReplyTo>(
        self: &Arc<Self>,
        mut miss: Miss<'_>,
        reply_to: R,
        out: &mut Vec<u8>,
    ) -> bool {
        self.top.miss(miss.client.ip(), miss.now);
        let routing = self.routing.load();
        let logged_from = routing.querylog.is_on().then_some(miss.now);
        let Some(zone) = routing.zones.route(miss.query.qname()).cloned() else {
            if miss.stale.is_none() {
                self.stats.unrouted().miss();
            }
            wire::error_reply(miss.pkt, wire::rcode::REFUSED, out);
            self.count_reply(out, miss.expansion);
            let unrouted = self.stats.unrouted().clone();
            return self.answered_now(&mut miss, &unrouted, Source::Local, out, logged_from);
        };
        if miss.stale.is_none() {
            zone.counters.miss();
        }
        inc(match miss.proto {
            Proto::Udp => &zone.counters.udp,
            Proto::Tcp => &zone.counters.tcp,
        });
        // Past this point the miss costs upstream work: its client's limits apply, and
        // the ticket goes with the reply, so the client's in-flight count drops when it
        // is answered.
        let reply_to = match self.admit(&miss) {
            Ok(ticket) => Ticketed { reply_to, ticket },
            Err(reason) => {
                let source = self.limited(&miss, reason, routing.udp_cap, &zone.counters, out);
                return self.answered_now(&mut miss, &zone.counters, source, out, logged_from);
            }
        };
        let asked = miss.asked.take();
        let stale_timeout = miss.stale.is_some().then_some(routing.stale_client_timeout);
        let wait = match self.coalescer.join(miss.query.cache_key()) {
            // Most misses: finished by the upstream socket's reader, no task of their own.
            Join::Leader(done) if miss.stale.is_none() && miss.proto == Proto::Udp => {
                let routing = arc_swap::Guard::into_inner(routing);
                self.start_inline(&miss, routing, zone, done, reply_to, asked);
                return false;
            }
            Join::Leader(done) if miss.stale.is_none() => {
                Wait::Fly(done, upstream_query(&miss.query))
            }
            Join::Leader(done) => {
                let waiter = done.waiter();
                let query = upstream_query(&miss.query);
                self.spawn_flight(zone.clone(), query, true, Spender::Client, done);
                Wait::Join(waiter, stale_timeout)
            }
            Join::Follower(waiter) => {
                self.stats.inc(Hot::Coalesced);
                Wait::Join(waiter, stale_timeout)
            }
            Join::Overloaded => {
                self.stats.inc(Hot::Overload);
                let client = client_of(&miss.query, miss.proto, routing.udp_cap);
                let (pkt, stale, expansion) = (miss.pkt, miss.stale.clone(), miss.expansion);
                let counters = &zone.counters;
                let source = self.serve(&client, pkt, None, stale, counters, expansion, out);
                miss.asked = asked;
                return self.answered_now(&mut miss, counters, source, out, logged_from);
            }
        };
        let asker = Asker::of(&miss, routing.udp_cap);
        let this = self.clone();
        let back = Back { reply_to, asked };
        let answer = this.answer(asker, zone, wait, miss.stale, logged_from, back);
        // Boxed: the miss's future is over a kilobyte, and tokio moves a task's whole
        // future-or-output slot each time it changes state (three times per miss); a box is
        // one allocation and those moves are of a pointer.
        self.tasks.spawn(Box::pin(answer));
        false
    }

    /// A miss's reply written to `out` at once, to go with the listener's batch: counted in
    /// `zone`, marked answered, logged if sampled. Always `true`.
    fn answered_now(
        &self,
        miss: &mut Miss<'_>,
        zone: &ZoneCounters,
        source: Source,
        out: &[u8],
        logged_from: Option<Instant>,
    ) -> bool {
        let sent = self.observe_sent(zone, miss.proto, source, miss.now);
        if let Some(asked) = miss.asked.take() {
            asked.answered(sent);
        }
        if let Some(started) = logged_from
            && self.routing.load().querylog.sample()
        {
            querylog::log(miss.client, &miss.query, source, out, started);
        }
        true
    }

    /// A miss's task: waits for its outcome as `wait` says, then answers `asker` through
    /// `reply_to`.
    async fn answer<R: ReplyTo>(
        self: Arc<Self>,
        asker: Asker,
        zone: Arc<Zone>,
        wait: Wait,
        stale: Option<Arc<cache::Entry>>,
        logged_from: Option<Instant>,
        back: Back<R>,
    ) {
        let outcome = match wait {
            Wait::Fly(done, query) => {
                let flight = self.flight(&zone, &query, done.key(), false, Spender::Client);
                let outcome = Arc::new(flight.await);
                done.complete(outcome.clone());
                Some(outcome)
            }
            Wait::Join(waiter, None) => waiter.wait().await,
            // With a stale answer in hand, wait for upstream only as long as a client would
            // (RFC 8767 §5: the client response timer); the flight goes on in the background
            // and refreshes the cache when it lands.
            Wait::Join(waiter, Some(timeout)) => tokio::time::timeout(timeout, waiter.wait())
                .await
                .ok()
                .flatten(),
        };
        // Room for a typical answer without growing; a larger one grows once.
        let mut out = Vec::with_capacity(512);
        let client = asker.client();
        let (pkt, outcome, counters) = (&asker.pkt, outcome.as_deref(), &zone.counters);
        let source = self.serve(
            &client,
            pkt,
            outcome,
            stale,
            counters,
            asker.expansion,
            &mut out,
        );
        self.log(&asker, source, &out, logged_from);
        back.reply_to.send(out, &self.stats).await;
        let sent = self.observe_sent(counters, asker.proto, source, asker.received);
        if let Some(asked) = back.asked {
            asked.answered(sent);
        }
    }
}

/// The way back to a miss's client, and its query in the listener's retransmit table.
pub(super) struct Back<R> {
    pub reply_to: R,
    pub asked: Option<Asked>,
}
