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

use std::pin::pin;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::Either;
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, sleep_until};

use crate::stats::{Stats, inc};
use crate::wire;

use super::{ErrorKind, ExchangeError, ForwardError, Forwarded, Settings, Upstream};

/// An attempt's number, upstream, start and result.
type Attempt = (u32, Arc<Upstream>, Instant, Result<Vec<u8>, ExchangeError>);

/// What to do with one finished attempt.
pub enum Verdict {
    Answer(Forwarded),
    ServFail(Forwarded),
    Failed,
}

/// Where the first attempt stands when the loop takes over.
pub enum First<F> {
    /// Not sent yet: the loop asks `order[0]` itself.
    Fresh,
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

/// Runs attempts over `order` (cycled) until an answer, `attempts` attempts or the deadline.
///
/// Attempts are futures polled here, not tasks: a miss costs no spawn and no copy of the
/// query per attempt. Most misses are answered by their first attempt, so that one is polled
/// in place, and the set that later attempts join is only made once a second one starts.
/// Attempts carry no timer of their own: this loop's one timer (the next attempt's start, or
/// the deadline) decides, and an attempt still running at the deadline is dropped with it.
/// `apex`: the zone's apex in wire form, which answers are judged against (see [`judge`]).
pub async fn run(
    order: &[Arc<Upstream>],
    query: &[u8],
    apex: &[u8],
    settings: &Settings,
    stats: &Stats,
) -> Result<Forwarded, ForwardError> {
    let first = First::<std::future::Pending<_>>::Fresh;
    run_from(order, query, apex, settings, stats, Instant::now(), first).await
}

/// [`run`] for a miss that began at `origin` (its deadline counts from there) with its first
/// attempt as `first` says.
pub async fn run_from<F>(
    order: &[Arc<Upstream>],
    query: &[u8],
    apex: &[u8],
    settings: &Settings,
    stats: &Stats,
    origin: Instant,
    first: First<F>,
) -> Result<Forwarded, ForwardError>
where
    F: Future<Output = Result<Vec<u8>, ExchangeError>>,
{
    let Some(first_up) = order.first() else {
        return Err(ForwardError::Exhausted { attempts: 0 });
    };
    let deadline = origin + settings.deadline;
    let mut servfail: Option<Forwarded> = None;
    let mut servfails = 0;
    // When the newest attempt counts as slow and the next one starts.
    let mut next_at = (origin + first_up.attempt_timeout()).min(deadline);
    let mut slow: Option<(u32, Arc<Upstream>)> = Some((0, first_up.clone()));
    // Set when the next attempt should start now: the slow timer fired, or the newest
    // attempt failed.
    let mut start_next = false;
    // Attempts already counted as timed out when the next one started: their own timeout at
    // the deadline must not count them twice.
    let mut charged: Vec<u32> = Vec::new();
    let mut first_live = true;
    let first = match first {
        First::Fresh => Either::Left(attempt(0, first_up.clone(), query, origin)),
        First::InFlight {
            late,
            t0,
            timed_out,
        } => {
            // Slow: the loop counts the timeout and asks the next upstream at once.
            start_next = timed_out;
            Either::Right(late_attempt(first_up.clone(), t0, Some(late)))
        }
        First::Done { servfail: kept } => {
            servfails = u32::from(kept.is_some());
            servfail = kept;
            slow = None;
            first_live = false;
            start_next = true;
            // Never polled: `first_live` is false.
            Either::Right(late_attempt(first_up.clone(), origin, None))
        }
    };
    let mut first = pin!(first);
    let mut later = None::<FuturesUnordered<_>>;
    let mut started = 1u32;
    let mut timer = pin!(sleep_until(next_at));
    loop {
        let may_start = started < settings.attempts;
        let later_live = later.as_ref().is_some_and(|l| !l.is_empty());
        if !first_live && !later_live {
            if !may_start {
                break;
            }
            start_next = true;
        }
        if start_next && may_start {
            start_next = false;
            if let Some((n, up)) = slow.take() {
                // Slow, not dead: a late answer still resets this.
                up.failure(ErrorKind::Timeout);
                charged.push(n);
            }
            inc(&stats.failovers);
            let now = Instant::now();
            let up = order[started as usize % order.len()].clone();
            next_at = (now + up.attempt_timeout()).min(deadline);
            slow = Some((started, up.clone()));
            later
                .get_or_insert_with(FuturesUnordered::new)
                .push(attempt(started, up, query, now));
            started += 1;
            continue;
        }
        // One timer: the next attempt's start, or the deadline once no attempt is left to
        // start (`next_at` is never past the deadline).
        let wake = if may_start { next_at } else { deadline };
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
                if wake >= deadline {
                    break;
                }
                start_next = true;
                continue;
            }
        };
        let (n, up, t0, result) = finished;
        if slow.as_ref().is_some_and(|(s, _)| *s == n) {
            slow = None;
        }
        match judge(&up, t0, result, charged.contains(&n), apex) {
            Verdict::Answer(a) => return Ok(a),
            Verdict::ServFail(f) => {
                servfails += 1;
                servfail.get_or_insert(f);
                if servfails >= 2 {
                    break;
                }
                start_next = true;
            }
            // Start the next attempt now rather than at the slow timer.
            Verdict::Failed => start_next = true,
        }
    }
    if let Some((_, up)) = slow {
        up.failure(ErrorKind::Timeout);
    }
    servfail.ok_or(ForwardError::Exhausted { attempts: started })
}

/// The next finished attempt of the later ones (`None` while there are none).
async fn next<F: Future<Output = Attempt>>(
    later: &mut Option<FuturesUnordered<F>>,
) -> Option<Attempt> {
    match later {
        Some(l) => l.next().await,
        None => None,
    }
}

/// Attempt 0 sent elsewhere, whose result arrives through `late` (never, without one).
async fn late_attempt<F>(up: Arc<Upstream>, t0: Instant, late: Option<F>) -> Attempt
where
    F: Future<Output = Result<Vec<u8>, ExchangeError>>,
{
    let result = match late {
        Some(late) => late.await,
        None => std::future::pending().await,
    };
    (0, up, t0, result)
}

async fn attempt(n: u32, up: Arc<Upstream>, query: &[u8], t0: Instant) -> Attempt {
    let result = up.exchange(query, None, t0).await;
    (n, up, t0, result)
}

/// Counts one finished attempt on its upstream's health and says what it was worth.
/// `charged`: this attempt was already counted as a timeout when the next one started.
///
/// An answer (or a SERVFAIL) is validated and normalised here, once, with the zone's `apex`
/// ([`wire::normalize_for_zone`]): one that fails validation is never cached or served and
/// the next upstream is asked. It is counted in `nodedns_upstream_malformed_total`, not
/// against health: the exchange itself worked, which is what health measures.
pub fn judge(
    up: &Arc<Upstream>,
    t0: Instant,
    result: Result<Vec<u8>, ExchangeError>,
    charged: bool,
    apex: &[u8],
) -> Verdict {
    let reply = match result {
        Ok(reply) => reply,
        Err(e) => {
            tracing::debug!(upstream = %up.addr, error = %e, "upstream attempt failed");
            if !charged {
                up.failure(match e {
                    ExchangeError::Timeout => ErrorKind::Timeout,
                    ExchangeError::Network(_) => ErrorKind::Network,
                });
            }
            return Verdict::Failed;
        }
    };
    let rtt = t0.elapsed();
    up.observe_latency(rtt);
    let Some(rcode) = wire::Header::parse(&reply).map(|h| h.rcode()) else {
        // Shorter than a header: not an answer, but not a sign of unreachability either.
        up.failure(ErrorKind::FormErr);
        return Verdict::Failed;
    };
    // A well-formed reply, whatever its rcode: the upstream is reachable (health is
    // reachability; an rcode speaks of this query only).
    up.reached(rtt);
    let servfail = match ErrorKind::of_rcode(rcode) {
        None => false,
        Some(ErrorKind::ServFail) => true,
        Some(kind) => {
            up.failure(kind);
            return Verdict::Failed;
        }
    };
    let mut stored = Vec::with_capacity(reply.len() + 16);
    let (analysis, layout) = match wire::normalize_for_zone(&reply, apex, &mut stored) {
        Ok(normalized) => normalized,
        Err(e) => {
            tracing::debug!(upstream = %up.addr, error = %e, "malformed upstream answer");
            up.counters.malformed();
            return Verdict::Failed;
        }
    };
    up.counters.dropped_records(analysis.dropped);
    let forwarded = Forwarded {
        stored,
        analysis,
        layout,
        upstream: up.addr,
    };
    if servfail {
        up.failure(ErrorKind::ServFail);
        Verdict::ServFail(forwarded)
    } else {
        Verdict::Answer(forwarded)
    }
}
