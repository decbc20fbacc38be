//! Misses answered without a task of their own.
//!
//! Most misses are one client's UDP query with nothing stale, answered by the first upstream
//! asked. For those the listener sends the upstream query itself ([`Handler::try_inline`])
//! and the upstream socket's reader finishes the miss when the reply comes: the answer is
//! cached, coalesced followers are woken and the client is answered, with no task, channel
//! or timer of the miss's own. Whatever the first attempt cannot settle (its timeout, an
//! error, a SERVFAIL, a truncated reply) hands the miss to a task that goes on with the
//! failover loop from where it stands, the first attempt still heard until the deadline.

use std::future::Pending;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::{Handler, InFlight, Miss, Outcome, Proto, Routing, Zone, client_of, upstream_query};
use crate::coalesce::Completion;
use crate::forward::udp::{InlineWaiter, LateReply};
use crate::forward::{ExchangeError, First, ForwardError, Forwarded, Upstream, Verdict, judge};
use crate::querylog;
use crate::stats::{Stats, inc};
use crate::wire;

/// Where an inline miss's reply goes: the socket the query came in on.
pub trait ReplyTo: Send + 'static {
    /// Sends `reply` to `dst` now, or as soon as the socket has room; counts a failure.
    fn send(&self, reply: &[u8], dst: SocketAddr, stats: &Arc<Stats>);
}

/// One miss whose first attempt was sent inline: everything needed to finish it.
struct InlineMiss<R> {
    handler: Arc<Handler>,
    routing: Arc<Routing>,
    zone: Arc<Zone>,
    order: Vec<Arc<Upstream>>,
    /// The upstream query (ID 0), kept for later attempts.
    query: Vec<u8>,
    done: Completion<Arc<Outcome>>,
    /// The client's packet: its question is echoed in the reply, and a SERVFAIL is built
    /// from it.
    pkt: Vec<u8>,
    /// The parts of the client's query the reply needs (its question is `pkt[12..question_end]`).
    header: wire::ClientHeader,
    question_end: usize,
    has_edns: bool,
    max_len: usize,
    client: SocketAddr,
    reply_to: R,
    /// When the miss began: its deadline counts from here.
    origin: Instant,
    /// Set when the query log is on.
    logged_from: Option<Instant>,
    /// Keeps the drain waiting for this miss.
    token: TaskTrackerToken,
    _in_flight: InFlight,
}

/// How a miss handed to a task goes on.
enum Resume {
    /// The first attempt was never sent.
    Unsent,
    /// The first attempt timed out; its reply may still come.
    Late(LateReply),
    /// The first reply was truncated: the same upstream over TCP, in the same attempt.
    Tcp,
    /// The first attempt failed, or brought this SERVFAIL.
    Judged(Option<Forwarded>),
}

impl Handler {
    /// Starts `miss` inline when it is a UDP query with nothing stale, in a zone, and the
    /// first for its key: the upstream socket's reader then finishes it and `reply_to`
    /// carries the answer. Gives `miss` and `reply_to` back otherwise, untouched, for the
    /// task-based [`Handler::slow`]. `tasks` learns of the miss, so the drain waits for it.
    // Handing the miss back by value, as `Fast` handed it over: no allocation on either path.
    #[allow(clippy::result_large_err)]
    pub fn try_inline<'p, R: ReplyTo>(
        self: &Arc<Self>,
        pkt: &[u8],
        client: SocketAddr,
        miss: Miss<'p>,
        reply_to: R,
        tasks: &TaskTracker,
        now: Instant,
    ) -> Result<(), (Miss<'p>, R)> {
        if miss.stale.is_some() {
            return Err((miss, reply_to));
        }
        let q = &miss.query;
        let routing = self.routing.load_full();
        let Some(zone) = routing.zones.route(q.qname()).cloned() else {
            return Err((miss, reply_to));
        };
        // A follower waits on the leader in a task; a leader is what can go inline.
        let Some(done) = self.coalescer.lead(q.cache_key()) else {
            return Err((miss, reply_to));
        };
        inc(&zone.requests.udp);
        let order = routing.forwarder.order(&zone.upstreams);
        let Some(first) = order.first().cloned() else {
            // Config validation gives every zone an upstream; without one, nothing to ask.
            return Err((miss, reply_to));
        };
        let inline = Box::new(InlineMiss {
            handler: self.clone(),
            zone,
            order,
            query: upstream_query(q),
            done,
            pkt: pkt.to_vec(),
            header: wire::ClientHeader::of(q),
            question_end: wire::HEADER_LEN + q.question.len(),
            has_edns: q.edns.is_some(),
            max_len: client_of(q, Proto::Udp, routing.udp_cap).max_len,
            client,
            reply_to,
            origin: now,
            logged_from: routing.querylog.is_on().then_some(now),
            routing,
            token: tasks.token(),
            _in_flight: InFlight::new(&self.stats),
        });
        first.send_inline(now, inline);
        Ok(())
    }
}

impl<R: ReplyTo> InlineMiss<R> {
    /// Caches what forwarding came to, wakes the followers and answers the client.
    fn finish(self, forwarded: Result<Forwarded, ForwardError>) {
        let handler = &self.handler;
        let outcome = handler.outcome(&self.zone, forwarded, self.done.key(), false);
        let outcome = Arc::new(outcome);
        self.done.complete(outcome.clone());
        let client = wire::Client {
            header: self.header,
            question: self
                .pkt
                .get(wire::HEADER_LEN..self.question_end)
                .unwrap_or_default(),
            has_edns: self.has_edns,
            max_len: self.max_len,
        };
        let mut out = Vec::with_capacity(512);
        let source = handler.serve(&client, &self.pkt, Some(&outcome), None, &mut out);
        self.reply_to.send(&out, self.client, &handler.stats);
        if let Some(started) = self.logged_from
            && self.routing.querylog.sample()
            && let Ok(q) = wire::parse_query(&self.pkt)
        {
            querylog::log(self.client, &q, source, &out, started);
        }
    }

    /// Goes on in a task: the failover loop takes over with the first attempt as it stands.
    fn resume(self, how: Resume) {
        let tasks = self.token.task_tracker().clone();
        tasks.spawn(Box::pin(async move {
            let forwarder = &self.routing.forwarder;
            let (order, query, origin) = (&self.order, &self.query[..], self.origin);
            let apex = &self.zone.upstreams.apex[..];
            let forwarded = match how {
                Resume::Unsent => {
                    let first = First::<Pending<_>>::Fresh;
                    forwarder.resume(order, query, apex, origin, first).await
                }
                Resume::Late(late) => {
                    let first = First::InFlight {
                        late,
                        t0: origin,
                        timed_out: true,
                    };
                    forwarder.resume(order, query, apex, origin, first).await
                }
                Resume::Tcp => {
                    let up = order[0].clone();
                    let first = First::InFlight {
                        late: async move { up.retry_over_tcp(query, None).await },
                        t0: origin,
                        timed_out: false,
                    };
                    forwarder.resume(order, query, apex, origin, first).await
                }
                Resume::Judged(servfail) => {
                    let first = First::<Pending<_>>::Done { servfail };
                    forwarder.resume(order, query, apex, origin, first).await
                }
            };
            self.finish(forwarded);
        }));
    }

    /// Judges the first attempt's result as the failover loop would.
    fn judged(self, result: Result<Vec<u8>, ExchangeError>) {
        let apex = &self.zone.upstreams.apex;
        match judge(&self.order[0], self.origin, result, false, apex) {
            Verdict::Answer(answer) => self.finish(Ok(answer)),
            Verdict::ServFail(servfail) => self.resume(Resume::Judged(Some(servfail))),
            Verdict::Failed => self.resume(Resume::Judged(None)),
        }
    }
}

impl<R: ReplyTo> InlineWaiter for InlineMiss<R> {
    fn query(&self) -> &[u8] {
        &self.query
    }

    fn unsent(self: Box<Self>) {
        self.resume(Resume::Unsent);
    }

    fn answered(self: Box<Self>, reply: &[u8]) {
        if wire::Header::parse(reply).is_some_and(|h| h.tc()) {
            // Never cached or served (RFC 7766 §5): the same upstream over TCP.
            return self.resume(Resume::Tcp);
        }
        self.judged(Ok(reply.to_vec()));
    }

    fn timed_out(self: Box<Self>, late: LateReply) {
        self.resume(Resume::Late(late));
    }

    fn failed(self: Box<Self>, error: ExchangeError) {
        self.judged(Err(error));
    }
}
