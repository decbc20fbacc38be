//! The failover loop: which upstream is asked when, and which answer wins.
//!
//! Attempts overlap rather than replace each other. When an attempt's adaptive timeout
//! passes, the next upstream is asked, but the slow one is still listened to until the
//! overall deadline: a late answer is as good as any (it also clears that upstream's failure
//! count), and a resolver that takes 300 ms to recurse for a name is not cut off by an
//! attempt timeout computed from its 1 ms cache hits. An error (network error, REFUSED,
//! FORMERR, NOTIMP) starts the next attempt at once. A SERVFAIL is kept and one more
//! upstream is asked; if nothing better comes, the SERVFAIL is the answer.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::{Instant, sleep_until};

use crate::stats::{Stats, inc};
use crate::wire;

use super::{ErrorKind, ExchangeError, ForwardError, Forwarded, Settings, Upstream};

/// An attempt's number, upstream, start and result.
type Attempt = (u32, Arc<Upstream>, Instant, Result<Vec<u8>, ExchangeError>);

/// What to do with one finished attempt.
enum Verdict {
    Answer(Forwarded),
    ServFail(Forwarded),
    Failed,
}

/// Runs attempts over `order` (cycled) until an answer, `attempts` attempts or the deadline.
pub async fn run(
    order: &[Arc<Upstream>],
    query: &[u8],
    settings: &Settings,
    stats: &Stats,
) -> Result<Forwarded, ForwardError> {
    let deadline = Instant::now() + settings.deadline;
    // Attempts are futures polled here, not tasks: a miss costs no spawn and no copy of the
    // query per attempt.
    let mut running = FuturesUnordered::new();
    let mut started = 0u32;
    let mut servfail: Option<Forwarded> = None;
    let mut servfails = 0;
    // When the newest attempt counts as slow and the next one starts.
    let mut next_at = deadline;
    let mut slow: Option<(u32, Arc<Upstream>)> = None;
    // Attempts already counted as timed out when the next one started: their own timeout at
    // the deadline must not count them twice.
    let mut charged: Vec<u32> = Vec::new();
    loop {
        let may_start = started < settings.attempts && !order.is_empty();
        if running.is_empty() && !may_start {
            break;
        }
        if running.is_empty() || (may_start && Instant::now() >= next_at) {
            if let Some((n, up)) = slow.take() {
                // Slow, not dead: a late answer still resets this.
                up.failure(ErrorKind::Timeout);
                charged.push(n);
            }
            if started > 0 {
                inc(&stats.failovers);
            }
            let up = order[started as usize % order.len()].clone();
            next_at = (Instant::now() + up.attempt_timeout()).min(deadline);
            slow = Some((started, up.clone()));
            running.push(attempt(started, up, query, deadline));
            started += 1;
            continue;
        }
        // One timer at a time: the next attempt's start, or the deadline once no attempt is
        // left to start (`next_at` is never past the deadline).
        let wake = if may_start { next_at } else { deadline };
        let finished = tokio::select! {
            done = running.next() => done,
            () = sleep_until(wake) => {
                if Instant::now() >= deadline {
                    break;
                }
                continue;
            }
        };
        let Some((n, up, t0, result)) = finished else {
            continue;
        };
        if slow.as_ref().is_some_and(|(s, _)| *s == n) {
            slow = None;
        }
        match judge(&up, t0, result, charged.contains(&n)) {
            Verdict::Answer(a) => return Ok(a),
            Verdict::ServFail(f) => {
                servfails += 1;
                servfail.get_or_insert(f);
                if servfails >= 2 {
                    break;
                }
                next_at = Instant::now();
            }
            // Start the next attempt now rather than at the slow timer.
            Verdict::Failed => next_at = Instant::now(),
        }
    }
    if let Some((_, up)) = slow {
        up.failure(ErrorKind::Timeout);
    }
    servfail.ok_or(ForwardError::Exhausted { attempts: started })
}

async fn attempt(n: u32, up: Arc<Upstream>, query: &[u8], deadline: Instant) -> Attempt {
    let t0 = Instant::now();
    let limit = deadline.saturating_duration_since(t0);
    let result = up.exchange(query, limit).await;
    (n, up, t0, result)
}

/// `charged`: this attempt was already counted as a timeout when the next one started.
fn judge(
    up: &Arc<Upstream>,
    t0: Instant,
    result: Result<Vec<u8>, ExchangeError>,
    charged: bool,
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
    let forwarded = Forwarded {
        reply,
        upstream: up.addr,
    };
    match wire::Header::parse(&forwarded.reply).map(|h| h.rcode()) {
        Some(wire::rcode::REFUSED | wire::rcode::FORMERR | wire::rcode::NOTIMP) | None => {
            up.failure(ErrorKind::Rcode);
            Verdict::Failed
        }
        Some(wire::rcode::SERVFAIL) => {
            up.failure(ErrorKind::ServFail);
            Verdict::ServFail(forwarded)
        }
        Some(_) => {
            up.success(rtt);
            Verdict::Answer(forwarded)
        }
    }
}
