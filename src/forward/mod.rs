//! Forwarding a miss to a zone's upstreams, with failover.
//!
//! This module owns the attempts of one miss: the order of upstreams from the zone's policy
//! ([`Forwarder::plan`]), an adaptive timeout per attempt, at most `attempts` attempts inside
//! an overall deadline, the next upstream on timeout, network error, REFUSED, FORMERR or
//! NOTIMP, and once more on SERVFAIL; an answer that fails validation also goes to the next
//! upstream (see [`judge`]). One API serves both ways a miss is forwarded: a task runs the
//! whole loop ([`Forwarder::run`] with [`failover::fresh`]); a miss started inline sends its
//! first attempt with [`Upstream::send_inline`], judges the reply with
//! [`Forwarder::judge_first`], and hands anything else to [`Forwarder::run`] with the first
//! attempt as it stands. Upstream health (`upstream`), the UDP lanes (`udp`) and the TCP
//! connections (`tcp`) live in the submodules. It does not own caching, coalescing or the
//! client side ([`crate::resolve`]).

mod anchor;
mod budget;
pub mod failover;
mod policy;
mod probe;
mod tcp;
pub mod udp;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use tokio::time::Instant;

use crate::config::{self, Policy, Transport};
use crate::stats::{Stats, UpstreamStatus, inc};
use crate::wire;

pub use budget::Spender;
pub use failover::{Exchange, First, Judgement, judge};
pub use upstream::Upstream;

/// Failover and health settings: the `[forward]` section as validated.
pub use crate::config::ForwardSettings;

/// Why one exchange with one upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("timeout")]
    Timeout,
    #[error("network error: {0}")]
    Network(#[from] std::io::Error),
}

/// What one exchange with one upstream came to: the reply's bytes, or why there were none.
pub type Reply = Result<Vec<u8>, ExchangeError>;

/// Why a query could not be forwarded at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream answered within {attempts} attempts")]
    Exhausted { attempts: u32 },
    /// No (further) attempt could start: every upstream's query budget was spent.
    #[error("every upstream's query budget is spent ({attempts} attempts made)")]
    BudgetSpent { attempts: u32 },
}

/// A zone's upstreams and how to use them.
pub struct ZoneUpstreams {
    pub upstreams: Vec<Arc<Upstream>>,
    pub policy: Policy,
    /// The zone's apex in wire form, lowercased: an answer's authority and additional
    /// records must be owned inside it.
    pub apex: Box<[u8]>,
    next: AtomicUsize,
}

impl ZoneUpstreams {
    /// The upstreams of the zone named `zone` (dotted; `"."` is the root).
    pub fn new(upstreams: Vec<Arc<Upstream>>, policy: Policy, zone: &str) -> ZoneUpstreams {
        ZoneUpstreams {
            upstreams,
            policy,
            // Config validation only lets valid zone names through; the root keeps every
            // owner should one ever slip past.
            apex: crate::zones::to_wire(zone)
                .unwrap_or_else(|| vec![0])
                .into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }
}

type UpstreamMap = HashMap<(SocketAddr, Transport), Arc<Upstream>>;

/// Upstreams shared by address and transport, so that two zones naming the same resolver
/// share its health state and TCP connection.
pub struct UpstreamSet {
    settings: Arc<ForwardSettings>,
    stats: Arc<Stats>,
    by_addr: UpstreamMap,
    /// The set this one replaces (config reload): its upstreams are reused, with their
    /// health, RTT and connections, when the new config still names them.
    previous: UpstreamMap,
    /// Each upstream's budget as the zones built so far set it (the tightest `max_qps` of
    /// those naming it), applied by [`UpstreamSet::apply_budgets`].
    budgets: HashMap<(SocketAddr, Transport), Option<f64>>,
}

impl UpstreamSet {
    pub fn new(settings: ForwardSettings, stats: Arc<Stats>) -> UpstreamSet {
        UpstreamSet {
            settings: Arc::new(settings),
            stats,
            by_addr: HashMap::new(),
            previous: HashMap::new(),
            budgets: HashMap::new(),
        }
    }

    /// An empty set for a reloaded config that reuses this set's upstreams as zones name
    /// them again. Call [`UpstreamSet::seal`] once every zone is built.
    pub fn successor(&self, settings: ForwardSettings) -> UpstreamSet {
        UpstreamSet {
            settings: Arc::new(settings),
            stats: self.stats.clone(),
            by_addr: HashMap::new(),
            previous: self.by_addr.clone(),
            budgets: HashMap::new(),
        }
    }

    /// Gives every upstream the budget of the zones that name it: the smallest `max_qps`,
    /// since the resolver behind the address limits what it receives from this node, whichever
    /// zone it was for. A changed budget starts with a full bucket.
    pub fn apply_budgets(&self) {
        for (key, up) in &self.by_addr {
            up.budget.set(self.budgets.get(key).copied().flatten());
        }
    }

    /// Forgets the upstreams the new config no longer names (their probes stop with them).
    pub fn seal(&mut self) {
        self.previous.clear();
    }

    /// The zone's upstreams, created on first use. Their budgets take effect with
    /// [`UpstreamSet::apply_budgets`], once every zone is built.
    pub fn zone(&mut self, zone: &config::Zone) -> ZoneUpstreams {
        let list = zone
            .upstreams
            .iter()
            .map(|&addr| {
                (self.budgets.entry((addr, zone.transport)))
                    .and_modify(|b| *b = budget::tighter(*b, zone.max_qps))
                    .or_insert(zone.max_qps);
                self.by_addr
                    .entry((addr, zone.transport))
                    .or_insert_with(|| {
                        let up = match self.previous.get(&(addr, zone.transport)) {
                            Some(old) => {
                                old.set_settings(self.settings.clone());
                                old.clone()
                            }
                            None => Arc::new(Upstream::new(
                                addr,
                                zone.transport,
                                self.settings.clone(),
                                self.stats.clone(),
                            )),
                        };
                        // The first zone that names an upstream sets what it is probed with.
                        up.set_probe(&zone.probe);
                        up
                    })
                    .clone()
            })
            .collect();
        ZoneUpstreams::new(list, zone.policy, &zone.name)
    }

    /// Every distinct upstream as a scrape sees it, sorted by label.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        let mut list: Vec<UpstreamStatus> = (self.by_addr.values())
            .map(|u| UpstreamStatus {
                label: u.label(),
                counters: u.counters.clone(),
                up: u.is_up(),
            })
            .collect();
        list.sort_by(|a, b| a.label.cmp(&b.label));
        list
    }

    /// Probes every upstream that has not answered yet (at start and after a reload), so
    /// health and readiness are known without client traffic. Must run inside a runtime.
    pub fn probe_unanswered(&self) {
        for up in self.by_addr.values() {
            up.probe_until_answered();
        }
    }
}

/// The failover loop.
pub struct Forwarder {
    settings: ForwardSettings,
    stats: Arc<Stats>,
}

/// A reply from an upstream, checked against the query, validated and normalised for the
/// cache (see [`wire::normalize_for_zone`]): the work is done once, when the answer is judged.
#[derive(Debug)]
pub struct Forwarded {
    /// The stored form: the message, then its TTL offset table (see [`wire::Layout`]).
    pub stored: Vec<u8>,
    pub analysis: wire::Analysis,
    pub layout: wire::Layout,
}

/// One miss's upstreams, in the order it asks them, and when it began (its deadline counts
/// from there).
pub struct Plan {
    order: Vec<Arc<Upstream>>,
    origin: Instant,
}

impl Plan {
    /// The upstream the first attempt goes to; `None` for a zone without upstreams, which
    /// config validation does not let through.
    pub fn first(&self) -> Option<&Arc<Upstream>> {
        self.order.first()
    }

    /// When the miss began.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// For a first attempt sent outside the failover loop (a client's miss, sent inline):
    /// spends its query from the budget of the first upstream in the order that has one
    /// left, and puts that upstream first; each one passed over is counted. False when every
    /// budget is spent: nothing may be sent.
    pub fn spend_first(&mut self) -> bool {
        if self.order.is_empty() {
            // No upstream, no budget: the failover loop says what that comes to.
            return true;
        }
        match failover::pick(&self.order, 0, Spender::Client) {
            Some(at) => {
                self.order.rotate_left(at);
                true
            }
            None => false,
        }
    }
}

impl Forwarder {
    pub fn new(settings: ForwardSettings, stats: Arc<Stats>) -> Forwarder {
        Forwarder { settings, stats }
    }

    /// Plans a new miss that begins at `origin`: the zone's upstreams in its policy's order.
    /// Also counts the miss in `nodedns_all_upstreams_down_total` when the first upstream is
    /// down (every one is, then), and keeps this runtime's timer anchor running ([`anchor`]).
    pub fn plan(&self, zone: &ZoneUpstreams, origin: Instant) -> Plan {
        anchor::note_flight();
        let order = policy::order(zone.policy, &zone.upstreams, &zone.next);
        if order.first().is_some_and(|u| !u.is_up()) {
            inc(&self.stats.all_upstreams_down);
        }
        Plan { order, origin }
    }

    /// Sends `query` (as built by [`wire::build_upstream_query`]) to the plan's upstreams
    /// until one answers usefully, the attempts are used up or the deadline passes; the
    /// first attempt stands as `first` says. `apex`: the zone's, as in
    /// [`ZoneUpstreams::apex`]. See [`failover`] for the rules.
    pub async fn run<F>(
        &self,
        plan: &Plan,
        query: &[u8],
        apex: &[u8],
        first: First<F>,
    ) -> Result<Forwarded, ForwardError>
    where
        F: Future<Output = Reply>,
    {
        let (order, origin) = (&plan.order[..], plan.origin);
        failover::run(
            order,
            query,
            apex,
            &self.settings,
            &self.stats,
            origin,
            first,
        )
        .await
    }

    /// Judges the result of the first attempt, sent to [`Plan::first`] at the plan's
    /// origin, as the failover loop would.
    pub fn judge_first(&self, plan: &Plan, result: Reply, apex: &[u8]) -> Judgement {
        match plan.first() {
            Some(up) => judge(up, plan.origin, result, false, apex),
            None => Judgement::Failed,
        }
    }
}
