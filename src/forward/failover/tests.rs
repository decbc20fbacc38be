//! The failover loop's timing rules on tokio's paused clock, against scripted upstreams: when
//! the next attempt starts, which answer wins, and when the miss ends.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::*;
use crate::forward::budget::Budget;

/// What a scripted upstream does with one query: after `delay`, reply (or fail, or never).
#[derive(Clone)]
enum Does {
    Reply(Vec<u8>),
    Network,
    Never,
}

struct Script {
    addr: SocketAddr,
    timeout: Duration,
    plays: Mutex<VecDeque<(Duration, Does)>>,
    /// When each query reached it.
    asked: Mutex<Vec<Instant>>,
    failures: Mutex<Vec<ErrorKind>>,
    counters: UpstreamCounters,
    budget: Budget,
}

#[derive(Clone)]
struct Fake(Arc<Script>);

impl Fake {
    fn new(port: u16, timeout_ms: u64, plays: &[(u64, Does)]) -> Fake {
        Fake::budgeted(port, timeout_ms, plays, None)
    }

    /// A scripted upstream with a query budget of `max_qps`.
    fn budgeted(port: u16, timeout_ms: u64, plays: &[(u64, Does)], max_qps: Option<f64>) -> Fake {
        Fake(Arc::new(Script {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            timeout: Duration::from_millis(timeout_ms),
            plays: Mutex::new(
                plays
                    .iter()
                    .map(|(ms, d)| (Duration::from_millis(*ms), d.clone()))
                    .collect(),
            ),
            asked: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            counters: UpstreamCounters::default(),
            budget: Budget::new(max_qps),
        }))
    }

    fn asked_at(&self, origin: Instant) -> Vec<u64> {
        let asked = self.0.asked.lock();
        asked
            .iter()
            .map(|t| (*t - origin).as_millis() as u64)
            .collect()
    }

    fn failures(&self) -> Vec<ErrorKind> {
        self.0.failures.lock().clone()
    }
}

impl Exchange for Fake {
    fn addr(&self) -> SocketAddr {
        self.0.addr
    }
    fn attempt_timeout(&self) -> Duration {
        self.0.timeout
    }
    fn exchange<'a>(
        &'a self,
        _query: &'a [u8],
        _t0: Instant,
    ) -> impl Future<Output = Reply> + Send + 'a {
        self.0.asked.lock().push(Instant::now());
        let (delay, does) = self
            .0
            .plays
            .lock()
            .pop_front()
            .unwrap_or((Duration::ZERO, Does::Never));
        async move {
            tokio::time::sleep(delay).await;
            match does {
                Does::Reply(r) => Ok(r),
                Does::Network => {
                    Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
                }
                Does::Never => std::future::pending().await,
            }
        }
    }
    fn failure(&self, kind: ErrorKind) {
        self.0.failures.lock().push(kind);
    }
    fn replied(&self, _rtt: Duration) {}
    fn reached(&self, _rtt: Duration) {}
    fn counters(&self) -> &UpstreamCounters {
        &self.0.counters
    }
    fn spend(&self, now: Instant, spender: Spender) -> bool {
        self.0.budget.spend(now, spender)
    }
}

/// `example.com. A`, as an upstream query.
fn query() -> Vec<u8> {
    let mut pkt = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    pkt.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    let q = wire::parse_query(&pkt).unwrap();
    let mut out = Vec::new();
    wire::build_upstream_query(&q, 0, &mut out);
    out
}

/// A reply to [`query`] from upstream `from` (its ID says which) with `rcode`, holding one
/// A record unless it is an error.
fn reply(from: u8, rcode: u8) -> Vec<u8> {
    let ancount = u8::from(rcode == 0);
    let mut r = vec![0, from, 0x81, 0x80 | rcode, 0, 1, 0, ancount, 0, 0, 0, 0];
    let name = b"\x07example\x03com\x00";
    r.extend_from_slice(name);
    r.extend_from_slice(&[0, 1, 0, 1]);
    if ancount == 1 {
        r.extend_from_slice(name);
        r.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 1]);
    }
    r
}

fn settings() -> ForwardSettings {
    let text = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\"]\n\
                [forward]\nattempts = 3\ndeadline = \"2s\"\n";
    crate::config::parse_str(text, "t").unwrap().forward
}

async fn forward(order: &[Fake], stats: &Stats) -> (Result<Forwarded, ForwardError>, Duration) {
    let origin = Instant::now();
    let result = run(order, &query(), &[0], &settings(), stats, origin, fresh()).await;
    (result, origin.elapsed())
}

fn rcode(f: &Forwarded) -> u16 {
    wire::Header::parse(f.layout.message(&f.stored))
        .unwrap()
        .rcode()
}

/// Which upstream's reply `f` is (see [`reply`]).
fn from(f: &Forwarded) -> u8 {
    f.layout.message(&f.stored)[1]
}

#[tokio::test(start_paused = true)]
async fn the_next_upstream_is_asked_at_the_attempt_timeout_and_the_slow_answer_still_wins() {
    let origin = Instant::now();
    let a = Fake::new(1, 200, &[(500, Does::Reply(reply(1, 0)))]);
    let b = Fake::new(2, 400, &[(1000, Does::Reply(reply(2, 0)))]);
    let stats = Stats::default();
    let (result, took) = forward(&[a.clone(), b.clone()], &stats).await;
    let answer = result.unwrap();
    assert_eq!(from(&answer), 1, "the first upstream's late answer wins");
    assert_eq!(took, Duration::from_millis(500));
    assert_eq!(
        b.asked_at(origin),
        [200],
        "asked once the first attempt was slow"
    );
    assert_eq!(
        a.failures(),
        [ErrorKind::Timeout],
        "charged once for being slow"
    );
    assert_eq!(crate::stats::get(&stats.failovers), 1);
}

#[tokio::test(start_paused = true)]
async fn refused_moves_on_at_once() {
    let origin = Instant::now();
    let a = Fake::new(1, 200, &[(10, Does::Reply(reply(1, 5)))]);
    let b = Fake::new(2, 200, &[(10, Does::Reply(reply(2, 0)))]);
    let (result, took) = forward(&[a.clone(), b.clone()], &Stats::default()).await;
    assert_eq!(from(&result.unwrap()), 2);
    assert_eq!(b.asked_at(origin), [10], "not at the attempt timeout");
    assert_eq!(took, Duration::from_millis(20));
    assert_eq!(a.failures(), [ErrorKind::Refused]);
}

#[tokio::test(start_paused = true)]
async fn nothing_answers_so_the_miss_ends_at_the_deadline() {
    let origin = Instant::now();
    let a = Fake::new(1, 200, &[]);
    let b = Fake::new(2, 200, &[]);
    let (result, took) = forward(&[a.clone(), b.clone()], &Stats::default()).await;
    assert!(matches!(
        result,
        Err(ForwardError::Exhausted { attempts: 3 })
    ));
    assert_eq!(
        took,
        Duration::from_secs(2),
        "the deadline, not the last attempt's timeout"
    );
    assert_eq!(a.asked_at(origin), [0, 400], "the order is cycled");
    assert_eq!(b.asked_at(origin), [200]);
    // Each unanswered attempt counts one timeout, however it ended.
    assert_eq!(a.failures(), [ErrorKind::Timeout, ErrorKind::Timeout]);
    assert_eq!(b.failures(), [ErrorKind::Timeout]);
}

#[tokio::test(start_paused = true)]
async fn every_upstream_failing_uses_up_the_attempts_without_waiting() {
    let plays = [(0, Does::Network), (0, Does::Network)];
    let a = Fake::new(1, 200, &plays);
    let b = Fake::new(2, 200, &plays);
    let (result, took) = forward(&[a.clone(), b.clone()], &Stats::default()).await;
    assert!(matches!(
        result,
        Err(ForwardError::Exhausted { attempts: 3 })
    ));
    assert_eq!(took, Duration::ZERO);
    assert_eq!(a.failures(), [ErrorKind::Network, ErrorKind::Network]);
    assert_eq!(b.failures(), [ErrorKind::Network]);
}

#[tokio::test(start_paused = true)]
async fn a_servfail_asks_one_more_upstream_and_is_the_answer_if_nothing_better_comes() {
    let a = Fake::new(1, 200, &[(10, Does::Reply(reply(1, 2)))]);
    let b = Fake::new(2, 200, &[(10, Does::Reply(reply(2, 2)))]);
    let c = Fake::new(3, 200, &[(10, Does::Reply(reply(3, 0)))]);
    let (result, took) = forward(&[a.clone(), b.clone(), c.clone()], &Stats::default()).await;
    let servfail = result.unwrap();
    assert_eq!(rcode(&servfail), wire::rcode::SERVFAIL);
    assert_eq!(from(&servfail), 1, "the first SERVFAIL is kept");
    assert_eq!(took, Duration::from_millis(20));
    assert!(
        c.asked_at(Instant::now()).is_empty(),
        "two SERVFAILs end the miss"
    );
}

#[tokio::test(start_paused = true)]
async fn with_every_upstream_down_all_are_still_asked_and_the_miss_is_counted() {
    let text = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\", \"127.0.0.1:10\"]\n";
    let cfg = crate::config::parse_str(text, "t").unwrap();
    let stats = Arc::new(Stats::default());
    let mut set = super::super::UpstreamSet::new(cfg.forward.clone(), stats.clone());
    let zone = set.zone(&cfg.zones[0]);
    for up in &zone.upstreams {
        for _ in 0..cfg.forward.down_after {
            up.failure(ErrorKind::Timeout);
        }
        assert!(!up.is_up());
    }
    let forwarder = super::super::Forwarder::new(cfg.forward.clone(), stats.clone());
    let plan = forwarder.plan(&zone, Instant::now());
    assert_eq!(plan.order.len(), 2, "fail open: every upstream is tried");
    assert_eq!(crate::stats::get(&stats.all_upstreams_down), 1);
}

/// An upstream that answers at once, `n` times, with a budget of `max_qps`.
fn answering(port: u8, n: usize, max_qps: f64) -> Fake {
    let plays: Vec<(u64, Does)> = (0..n).map(|_| (0, Does::Reply(reply(port, 0)))).collect();
    Fake::budgeted(u16::from(port), 200, &plays, Some(max_qps))
}

async fn forward_as(order: &[Fake], first: First<std::future::Pending<Reply>>) -> Option<u8> {
    let stats = Stats::default();
    let result = run(
        order,
        &query(),
        &[0],
        &settings(),
        &stats,
        Instant::now(),
        first,
    )
    .await;
    match result {
        Ok(answer) => Some(from(&answer)),
        Err(ForwardError::BudgetSpent { attempts: 0 }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_sends_the_overflow_to_the_next_upstream_then_refuses_to_send() {
    let origin = Instant::now();
    let (a, b) = (answering(1, 1000, 10.0), answering(2, 1000, 5.0));
    let order = [a.clone(), b.clone()];
    // 100 misses a second for 3 s: far beyond both budgets.
    let mut by = [0usize; 3];
    for i in 0..300u64 {
        tokio::time::sleep_until(origin + Duration::from_millis(10 * i)).await;
        match forward_as(&order, fresh()).await {
            Some(up) => by[usize::from(up)] += 1,
            None => by[0] += 1,
        }
    }
    // At most one second's worth plus the rate times the 2.99 s elapsed; a token is lost at
    // most to rounding.
    let (to_a, to_b, spent) = (by[1], by[2], by[0]);
    assert!((38..=40).contains(&to_a), "first upstream: {to_a}");
    assert!((18..=20).contains(&to_b), "second upstream: {to_b}");
    assert_eq!(
        a.asked_at(origin).len(),
        to_a,
        "only what it answered reached it"
    );
    assert_eq!(b.asked_at(origin).len(), to_b);
    assert_eq!(spent, 300 - to_a - to_b, "the rest were never sent");
    // Every miss past the first's budget passed it over; past both, the second too.
    assert_eq!(a.0.counters.budget_exhausted_total(), (300 - to_a) as u64);
    assert_eq!(b.0.counters.budget_exhausted_total(), spent as u64);
}

#[tokio::test(start_paused = true)]
async fn prefetch_leaves_clients_half_of_every_budget() {
    let (a, b) = (answering(1, 100, 10.0), answering(2, 100, 4.0));
    let order = [a.clone(), b.clone()];
    let mut background = Vec::new();
    for _ in 0..20 {
        background.push(forward_as(&order, fresh_background()).await);
    }
    // Each upstream down to half its burst: 5 of 10, then 2 of 4.
    let sent: Vec<u8> = background.iter().flatten().copied().collect();
    assert_eq!(sent, [[1; 5].as_slice(), &[2; 2]].concat());
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(forward_as(&order, fresh()).await);
    }
    let sent: Vec<u8> = clients.iter().flatten().copied().collect();
    assert_eq!(
        sent,
        [[1; 5].as_slice(), &[2; 2]].concat(),
        "the reserve is the clients'"
    );
}

#[tokio::test(start_paused = true)]
async fn with_every_budget_spent_the_attempt_in_flight_is_still_heard() {
    let origin = Instant::now();
    // The first answers late; the second's budget is spent before the miss.
    let a = Fake::budgeted(1, 200, &[(300, Does::Reply(reply(1, 0)))], Some(1.0));
    let b = Fake::budgeted(2, 200, &[], Some(1.0));
    assert!(b.spend(origin, Spender::Client));
    let stats = Stats::default();
    let order = [a.clone(), b.clone()];
    let (result, took) = forward(&order, &stats).await;
    assert_eq!(from(&result.unwrap()), 1);
    assert_eq!(took, Duration::from_millis(300));
    assert!(b.asked_at(origin).is_empty());
    assert_eq!(b.0.counters.budget_exhausted_total(), 1);
    // The same with no answer: the miss ends at the deadline, saying why no more was asked.
    let a = Fake::budgeted(1, 200, &[], Some(1.0));
    let order = [a.clone(), b.clone()];
    let (result, took) = forward(&order, &stats).await;
    assert!(matches!(
        result,
        Err(ForwardError::BudgetSpent { attempts: 1 })
    ));
    assert_eq!(took, Duration::from_secs(2));
}

#[test]
fn an_upstream_named_by_two_zones_has_the_smaller_budget() {
    let text = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\"]\nmax_qps = 10\n\
                [[zones]]\nname = \"test\"\nupstreams = [\"127.0.0.1:9\"]\nmax_qps = 3\n\
                [[zones]]\nname = \"other\"\nupstreams = [\"127.0.0.1:9\"]\n";
    let cfg = crate::config::parse_str(text, "t").unwrap();
    let mut set = super::super::UpstreamSet::new(cfg.forward.clone(), Arc::new(Stats::default()));
    let zones: Vec<_> = cfg.zones.iter().map(|z| set.zone(z)).collect();
    set.apply_budgets();
    let up = &zones[0].upstreams[0];
    assert!(Arc::ptr_eq(up, &zones[2].upstreams[0]), "one upstream");
    let now = Instant::now();
    let sent = (0..100).filter(|_| up.spend(now, Spender::Client)).count();
    assert_eq!(sent, 3);
}

#[test]
fn a_reload_applies_a_changed_budget_and_keeps_an_unchanged_one_spent() {
    let config = |max_qps: u32| {
        let text = format!(
            "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\"]\nmax_qps = {max_qps}\n"
        );
        crate::config::parse_str(&text, "t").unwrap()
    };
    let spendable = |up: &Arc<crate::forward::Upstream>| {
        let now = Instant::now();
        (0..100).filter(|_| up.spend(now, Spender::Client)).count()
    };
    let cfg = config(2);
    let mut set = super::super::UpstreamSet::new(cfg.forward.clone(), Arc::new(Stats::default()));
    let up = set.zone(&cfg.zones[0]).upstreams[0].clone();
    set.apply_budgets();
    assert_eq!(spendable(&up), 2);
    // The same budget again: the same upstream, its bucket as it was.
    let mut same = set.successor(cfg.forward.clone());
    assert!(Arc::ptr_eq(&same.zone(&cfg.zones[0]).upstreams[0], &up));
    same.apply_budgets();
    same.seal();
    assert_eq!(spendable(&up), 0);
    // A changed budget applies at once, with a full bucket.
    let cfg = config(7);
    let mut changed = same.successor(cfg.forward.clone());
    changed.zone(&cfg.zones[0]);
    changed.apply_budgets();
    changed.seal();
    assert_eq!(spendable(&up), 7);
}
