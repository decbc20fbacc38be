//! The failover loop: which upstream is asked when, and which answer wins.
//!
//! Attempts overlap rather than replace each other. When an attempt's adaptive timeout
//! passes, the next upstream is asked, but the slow one is still listened to until the
//! overall deadline: a late answer is as good as any (it also clears that upstream's failure
//! count), and a resolver that takes 300 ms to recurse for a name is not cut off by an
//! attempt timeout computed from its 1 ms cache hits. An error (network error, REFUSED,
//! FORMERR, NOTIMP, or an answer that fails validation) starts the next attempt at once; only
//! the network error counts against the upstream's health. A SERVFAIL is kept and one more
//! upstream is asked; if nothing better comes, the SERVFAIL is the answer.
//!
//! Each attempt first spends a query from its upstream's budget (`budget`): an upstream whose
//! budget is spent is passed over for the next in the order, and when every one is spent no
//! further attempt starts; a miss that could send nothing at all ends with
//! [`ForwardError::BudgetSpent`].
//!
//! The loop is generic over [`Exchange`], what it needs of an upstream, so that its timing
//! rules are tested on tokio's paused clock against scripted upstreams (`tests`).

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, sleep_until};

use crate::stats::{ErrorKind, Stats, UpstreamCounters, inc};
use crate::wire;

use super::budget::Spender;
use super::upstream::error_of_rcode;
use super::{ExchangeError, ForwardError, ForwardSettings, Forwarded, Reply};

/// What the failover loop needs of one upstream: an exchange, the attempt timeout, and
/// where to count what came of it.
pub trait Exchange: Clone {
    fn addr(&self) -> SocketAddr;
    /// How long an attempt waits before the next upstream is asked too.
    fn attempt_timeout(&self) -> Duration;
    /// One exchange of `query` started at `t0`, awaited until it ends or is dropped.
    fn exchange<'a>(
        &'a self,
        query: &'a [u8],
        t0: Instant,
    ) -> impl Future<Output = Reply> + Send + 'a;
    /// Counts a failed attempt (and, for timeouts and network errors, toward down).
    fn failure(&self, kind: ErrorKind);
    /// A reply came after `rtt`, well-formed or not.
    fn replied(&self, rtt: Duration);
    /// A well-formed reply came after `rtt`: the upstream is reachable.
    fn reached(&self, rtt: Duration);
    fn counters(&self) -> &UpstreamCounters;
    /// Spends one query of this upstream's budget at `now`, if `spender` may.
    fn spend(&self, now: Instant, spender: Spender) -> bool;
}

/// An attempt's number, upstream, start and result.
type Attempt<E> = (u32, E, Instant, Reply);

/// What one finished attempt was worth.
pub enum Judgement {
    Answer(Forwarded),
    ServFail(Forwarded),
    Failed,
}

/// Where the first attempt stands when the loop takes over.
pub enum First<F> {
    /// Not sent yet: the loop asks the first upstream whose budget lets `spender` send, and
    /// every later attempt spends as `spender` too. Attempts of the other kinds are a
    /// client's.
    Fresh(Spender),
    /// A client's first attempt, whose query `order[0]`'s budget paid for, could not be
    /// sent elsewhere: the loop sends it.
    Unsent,
    /// Sent to `order[0]` at `t0` and still awaited through `late`. `timed_out`: its attempt
    /// timeout has passed (not yet counted), so the next attempt starts at once.
    InFlight {
        late: F,
        t0: Instant,
        timed_out: bool,
    },
    /// Sent to `order[0]` and judged: failed, or a SERVFAIL (kept); the next starts at once.
    Done { servfail: Option<Forwarded> },
}

/// A client's first attempt not sent elsewhere: the loop sends it.
pub fn fresh() -> First<std::future::Pending<Reply>> {
    First::Fresh(Spender::Client)
}

/// Background work's first attempt (prefetch): the loop sends it, leaving clients their
/// reserve of every budget.
pub fn fresh_background() -> First<std::future::Pending<Reply>> {
    First::Fresh(Spender::Background)
}

/// The loop's state between two events.
struct Failover<'a, E> {
    order: &'a [E],
    query: &'a [u8],
    apex: &'a [u8],
    stats: &'a Stats,
    attempts: u32,
    deadline: Instant,
    /// Attempts started so far.
    started: u32,
    /// When the newest attempt counts as slow and the next one starts.
    next_at: Instant,
    /// The newest attempt while it is unanswered: charged a timeout when the next starts.
    slow: Option<(u32, E)>,
    /// Attempts already counted as timed out when the next one started: their own timeout
    /// at the deadline must not count them twice.
    charged: Vec<u32>,
    servfail: Option<Forwarded>,
    servfails: u32,
    /// Where in the order the next attempt looks for an upstream with budget left.
    cursor: usize,
    spender: Spender,
    /// An attempt could not start: every budget was spent.
    spent: bool,
}

/// What the loop does after judging an attempt.
enum Step {
    Answer(Forwarded),
    Stop,
    Next,
}

/// Runs attempts over `order` (cycled) until an answer, `settings.attempts` attempts or the
/// deadline, `settings.deadline` after `origin`. The first attempt stands as `first` says.
///
/// Attempts are futures polled here, not tasks: a miss costs no spawn and no copy of the
/// query per attempt. Most misses are answered by their first attempt, so that one is polled
/// in place, and the set that later attempts join is only made once a second one starts.
/// Attempts carry no timer of their own: this loop's one timer (the next attempt's start, or
/// the deadline) decides, and an attempt still running at the deadline is dropped with it.
/// `apex`: the zone's apex in wire form, which answers are judged against (see [`judge`]).
///
/// One function with one `select!`: the first attempt, the set of later ones and the timer
/// are locals that every branch moves on, and the decisions live in [`Failover`]'s methods.
pub async fn run<E, F>(
    order: &[E],
    query: &[u8],
    apex: &[u8],
    settings: &ForwardSettings,
    stats: &Stats,
    origin: Instant,
    first: First<F>,
) -> Result<Forwarded, ForwardError>
where
    E: Exchange,
    F: Future<Output = Reply>,
{
    if order.is_empty() {
        return Err(ForwardError::Exhausted { attempts: 0 });
    }
    // A first attempt sent elsewhere went to `order[0]` and spent there already.
    let (at, spender) = match &first {
        First::Fresh(spender) => match pick(order, 0, *spender) {
            Some(at) => (at, *spender),
            None => return Err(ForwardError::BudgetSpent { attempts: 0 }),
        },
        _ => (0, Spender::Client),
    };
    let mut st = Failover::new(order, query, apex, settings, stats, origin, at);
    st.spender = spender;
    let (first, mut first_live, mut start_next) = st.first(first, origin, at);
    let mut first = pin!(first);
    let mut later = None::<FuturesUnordered<_>>;
    let mut timer = pin!(sleep_until(st.next_at));
    loop {
        let may_start = st.started < st.attempts;
        let later_live = later.as_ref().is_some_and(|l| !l.is_empty());
        if !first_live && !later_live {
            if !may_start {
                break;
            }
            start_next = true;
        }
        if start_next && may_start {
            start_next = false;
            if let Some(next) = st.start_next() {
                later.get_or_insert_with(FuturesUnordered::new).push(next);
            }
            continue;
        }
        // One timer: the next attempt's start, or the deadline once no attempt is left to
        // start (`next_at` is never past the deadline).
        let wake = if may_start { st.next_at } else { st.deadline };
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        let finished = tokio::select! {
            biased;
            done = &mut first, if first_live => {
                first_live = false;
                done
            }
            Some(done) = next(&mut later), if later_live => done,
            () = timer.as_mut() => {
                if wake >= st.deadline {
                    break;
                }
                start_next = true;
                continue;
            }
        };
        match st.judged(finished) {
            Step::Answer(a) => return Ok(a),
            Step::Stop => break,
            // Start the next attempt now rather than at the slow timer.
            Step::Next => start_next = true,
        }
    }
    st.finish()
}

impl<'a, E: Exchange> Failover<'a, E> {
    fn new(
        order: &'a [E],
        query: &'a [u8],
        apex: &'a [u8],
        settings: &ForwardSettings,
        stats: &'a Stats,
        origin: Instant,
        at: usize,
    ) -> Self {
        let first = &order[at];
        let deadline = origin + settings.deadline;
        Failover {
            order,
            query,
            apex,
            stats,
            attempts: settings.attempts,
            deadline,
            started: 1,
            next_at: (origin + first.attempt_timeout()).min(deadline),
            slow: Some((0, first.clone())),
            charged: Vec::new(),
            servfail: None,
            servfails: 0,
            cursor: at + 1,
            spender: Spender::Client,
            spent: false,
        }
    }

    /// The first attempt's future as `first` says (a fresh one goes to `order[at]`), whether
    /// it is still awaited, and whether the next attempt starts at once.
    fn first<F>(
        &mut self,
        first: First<F>,
        origin: Instant,
        at: usize,
    ) -> (
        Either<
            impl Future<Output = Attempt<E>> + use<'a, E, F>,
            impl Future<Output = Attempt<E>> + use<'a, E, F>,
        >,
        bool,
        bool,
    )
    where
        F: Future<Output = Reply>,
    {
        let up = self.order[at].clone();
        match first {
            First::Fresh(_) | First::Unsent => (
                Either::Left(attempt(0, up, self.query, origin)),
                true,
                false,
            ),
            // Slow: the loop counts the timeout and asks the next upstream at once.
            First::InFlight {
                late,
                t0,
                timed_out,
            } => (
                Either::Right(late_attempt(up, t0, Some(late))),
                true,
                timed_out,
            ),
            First::Done { servfail } => {
                self.servfails = u32::from(servfail.is_some());
                self.servfail = servfail;
                self.slow = None;
                // Never polled: it is not live.
                (Either::Right(late_attempt(up, origin, None)), false, true)
            }
        }
    }

    /// Starts the next attempt now: the slow one is charged a timeout (slow, not dead: a
    /// late answer still resets it) and the next upstream in the order with budget left is
    /// asked. With every budget spent nothing starts, and no attempt will: those in flight
    /// are still heard.
    fn start_next(&mut self) -> Option<impl Future<Output = Attempt<E>> + use<'a, E>> {
        let Some(at) = pick(self.order, self.cursor, self.spender) else {
            self.spent = true;
            self.attempts = self.started;
            return None;
        };
        self.cursor = at + 1;
        if let Some((n, up)) = self.slow.take() {
            up.failure(ErrorKind::Timeout);
            self.charged.push(n);
        }
        inc(&self.stats.failovers);
        let now = Instant::now();
        let up = self.order[at].clone();
        self.next_at = (now + up.attempt_timeout()).min(self.deadline);
        self.slow = Some((self.started, up.clone()));
        let n = self.started;
        self.started += 1;
        Some(attempt(n, up, self.query, now))
    }

    /// Counts a finished attempt and says what the loop does next.
    fn judged(&mut self, (n, up, t0, result): Attempt<E>) -> Step {
        if self.slow.as_ref().is_some_and(|(s, _)| *s == n) {
            self.slow = None;
        }
        match judge(&up, t0, result, self.charged.contains(&n), self.apex) {
            Judgement::Answer(a) => Step::Answer(a),
            Judgement::ServFail(f) => {
                self.servfails += 1;
                self.servfail.get_or_insert(f);
                if self.servfails >= 2 {
                    Step::Stop
                } else {
                    Step::Next
                }
            }
            Judgement::Failed => Step::Next,
        }
    }

    /// No answer: the kept SERVFAIL, if any, else why not. An attempt still unanswered at
    /// the end times out.
    fn finish(self) -> Result<Forwarded, ForwardError> {
        if let Some((_, up)) = self.slow {
            up.failure(ErrorKind::Timeout);
        }
        let attempts = self.started;
        match (self.servfail, self.spent) {
            (Some(servfail), _) => Ok(servfail),
            (None, true) => Err(ForwardError::BudgetSpent { attempts }),
            (None, false) => Err(ForwardError::Exhausted { attempts }),
        }
    }
}

/// The first upstream from `order[from]` on (cycling once round the order) whose budget lets
/// `spender` send a query now; each one passed over is counted in its
/// `nodedns_upstream_budget_exhausted_total`. `None` when every budget is spent.
pub fn pick<E: Exchange>(order: &[E], from: usize, spender: Spender) -> Option<usize> {
    let now = Instant::now();
    let len = order.len();
    (from..from + len).map(|i| i % len).find(|&i| {
        let up = &order[i];
        let may = up.spend(now, spender);
        if !may {
            up.counters().budget_exhausted();
        }
        may
    })
}

/// The next finished attempt of the later ones (`None` while there are none).
async fn next<F: Future<Output = Attempt<E>>, E>(
    later: &mut Option<FuturesUnordered<F>>,
) -> Option<Attempt<E>> {
    match later {
        Some(l) => l.next().await,
        None => None,
    }
}

/// Attempt 0 sent elsewhere, whose result arrives through `late` (never, without one).
async fn late_attempt<E, F>(up: E, t0: Instant, late: Option<F>) -> Attempt<E>
where
    F: Future<Output = Reply>,
{
    let result = match late {
        Some(late) => late.await,
        None => std::future::pending().await,
    };
    (0, up, t0, result)
}

async fn attempt<E: Exchange>(n: u32, up: E, query: &[u8], t0: Instant) -> Attempt<E> {
    let result = up.exchange(query, t0).await;
    (n, up, t0, result)
}

/// Counts one finished attempt on its upstream's health and says what it was worth.
/// `charged`: this attempt was already counted as a timeout when the next one started.
///
/// An answer (or a SERVFAIL) is validated and normalised here, once, with the zone's `apex`
/// ([`wire::normalize_for_zone`]): one that fails validation is never cached or served and
/// the next upstream is asked. It is counted in `nodedns_upstream_malformed_total`, not
/// against health: the exchange itself worked, which is what health measures.
pub fn judge<E: Exchange>(
    up: &E,
    t0: Instant,
    result: Reply,
    charged: bool,
    apex: &[u8],
) -> Judgement {
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            tracing::debug!(upstream = %up.addr(), error = %e, "upstream attempt failed");
            if !charged {
                up.failure(match e {
                    ExchangeError::Timeout => ErrorKind::Timeout,
                    ExchangeError::Network(_) => ErrorKind::Network,
                });
            }
            return Judgement::Failed;
        }
    };
    let rtt = t0.elapsed();
    up.replied(rtt);
    let Some(rcode) = wire::Header::parse(&reply).map(|h| h.rcode()) else {
        // Shorter than a header: not an answer, but not a sign of unreachability either.
        up.failure(ErrorKind::FormErr);
        return Judgement::Failed;
    };
    // A well-formed reply, whatever its rcode: the upstream is reachable (health is
    // reachability; an rcode speaks of this query only).
    up.reached(rtt);
    let servfail = match error_of_rcode(rcode) {
        None => false,
        Some(ErrorKind::ServFail) => true,
        Some(kind) => {
            up.failure(kind);
            return Judgement::Failed;
        }
    };
    let mut stored = Vec::with_capacity(reply.len() + 16);
    let (analysis, layout) = match wire::normalize_for_zone(&reply, apex, &mut stored) {
        Ok(normalized) => normalized,
        Err(e) => {
            tracing::debug!(upstream = %up.addr(), error = %e, "malformed upstream answer");
            up.counters().malformed();
            return Judgement::Failed;
        }
    };
    up.counters().dropped_records(analysis.dropped);
    let forwarded = Forwarded {
        stored,
        analysis,
        layout,
    };
    if servfail {
        up.failure(ErrorKind::ServFail);
        Judgement::ServFail(forwarded)
    } else {
        Judgement::Answer(forwarded)
    }
}

#[cfg(test)]
mod tests;
