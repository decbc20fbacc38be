//! Misses answered without a task of their own.
//!
//! Most misses are one client's UDP query with nothing stale, answered by the first upstream
//! asked. For those [`Resolver::resolve`] sends the upstream query at once and the upstream
//! socket's reader finishes the miss when the reply comes: the answer is cached, coalesced
//! followers are woken and the client is answered, with no task, channel or timer of the
//! miss's own. Whatever the first attempt cannot settle (its timeout, an error, a SERVFAIL,
//! a truncated reply) hands the miss to a task that goes on with the failover loop from
//! where it stands, the first attempt still heard until the deadline.

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::task::task_tracker::TaskTrackerToken;

use super::client::Asker;
use super::flight::{InFlight, Outcome, upstream_query};
use super::miss::ReplyTo;
use super::observe::Asked;
use super::routing::{Routing, Zone};
use super::{Miss, Resolver};
use crate::coalesce::Completion;
use crate::forward::udp::{InlineWaiter, LateReply};
use crate::forward::{ExchangeError, First, ForwardError, Forwarded, Judgement, Plan, Reply};
use crate::wire;

/// One miss whose first attempt was sent inline: everything needed to finish it.
struct InlineMiss<R> {
    resolver: Arc<Resolver>,
    routing: Arc<Routing>,
    zone: Arc<Zone>,
    plan: Plan,
    /// The upstream query (ID 0), kept for later attempts.
    query: Vec<u8>,
    done: Completion<Arc<Outcome>>,
    asker: Asker,
    reply_to: R,
    /// Set when the query log is on.
    logged_from: Option<Instant>,
    /// The query in its listener's retransmit table.
    asked: Option<Asked>,
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

impl Resolver {
    /// Sends the first attempt of `miss`, which leads its flight (`done`), and leaves the
    /// rest to the upstream socket's reader; `reply_to` carries the answer. `tasks` learns
    /// of the miss, so the drain waits for it.
    pub(super) fn start_inline<R: ReplyTo>(
        self: &Arc<Self>,
        miss: &Miss<'_>,
        routing: Arc<Routing>,
        zone: Arc<Zone>,
        done: Completion<Arc<Outcome>>,
        reply_to: R,
        asked: Option<Asked>,
    ) {
        let now = miss.now;
        let mut plan = routing.forwarder.plan(&zone.upstreams, now);
        let paid = plan.spend_first();
        let inline = Box::new(InlineMiss {
            resolver: self.clone(),
            zone,
            plan,
            query: upstream_query(&miss.query),
            done,
            asker: Asker::of(miss, routing.udp_cap),
            reply_to,
            asked,
            logged_from: routing.querylog.is_on().then_some(now),
            routing,
            token: self.tasks.token(),
            _in_flight: InFlight::new(&self.stats),
        });
        if !paid {
            // Every upstream's budget is spent: nothing is sent, the client is told so.
            return inline.finish(Err(ForwardError::BudgetSpent { attempts: 0 }));
        }
        match inline.plan.first().cloned() {
            Some(first) => first.send_inline(now, inline),
            // Config validation gives every zone an upstream; without one, the loop says so.
            None => inline.resume(Resume::Unsent),
        }
    }
}

impl<R: ReplyTo> InlineMiss<R> {
    /// Caches what forwarding came to, wakes the followers and answers the client.
    fn finish(self, forwarded: Result<Forwarded, ForwardError>) {
        let resolver = &self.resolver;
        let outcome = resolver.outcome(&self.zone, forwarded, self.done.key(), false);
        let outcome = Arc::new(outcome);
        self.done.complete(outcome.clone());
        let mut out = Vec::with_capacity(512);
        let (asker, counters) = (&self.asker, &self.zone.counters);
        let client = asker.client();
        let outcome = Some(&*outcome);
        let expansion = asker.expansion;
        let source = resolver.serve(
            &client, &asker.pkt, outcome, None, counters, expansion, &mut out,
        );
        let tasks = self.token.task_tracker();
        self.reply_to.send_now(&out, &resolver.stats, tasks);
        let sent = resolver.observe_sent(counters, asker.proto, source, asker.received);
        if let Some(asked) = self.asked {
            asked.answered(sent);
        }
        resolver.log(&self.asker, source, &out, self.logged_from);
    }

    /// Goes on in a task: the failover loop takes over with the first attempt as it stands.
    fn resume(self, how: Resume) {
        let tasks = self.token.task_tracker().clone();
        tasks.spawn(Box::pin(async move {
            let forwarder = &self.routing.forwarder;
            let (plan, query) = (&self.plan, &self.query[..]);
            let apex = &self.zone.upstreams.apex[..];
            let origin = self.plan.origin();
            let forwarded = match how {
                Resume::Unsent => {
                    let first = First::<std::future::Pending<Reply>>::Unsent;
                    forwarder.run(plan, query, apex, first).await
                }
                Resume::Late(late) => {
                    let first = First::InFlight {
                        late,
                        t0: origin,
                        timed_out: true,
                    };
                    forwarder.run(plan, query, apex, first).await
                }
                Resume::Tcp => {
                    let up = plan.first().cloned();
                    let late = async move {
                        match up {
                            Some(up) => up.retry_over_tcp(query, None).await,
                            None => std::future::pending::<Reply>().await,
                        }
                    };
                    let first = First::InFlight {
                        late,
                        t0: origin,
                        timed_out: false,
                    };
                    forwarder.run(plan, query, apex, first).await
                }
                Resume::Judged(servfail) => {
                    let first = First::<std::future::Pending<Reply>>::Done { servfail };
                    forwarder.run(plan, query, apex, first).await
                }
            };
            self.finish(forwarded);
        }));
    }

    /// Judges the first attempt's result as the failover loop would.
    fn judged(self, result: Result<Vec<u8>, ExchangeError>) {
        let apex = &self.zone.upstreams.apex;
        match self.routing.forwarder.judge_first(&self.plan, result, apex) {
            Judgement::Answer(answer) => self.finish(Ok(answer)),
            Judgement::ServFail(servfail) => self.resume(Resume::Judged(Some(servfail))),
            Judgement::Failed => self.resume(Resume::Judged(None)),
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
