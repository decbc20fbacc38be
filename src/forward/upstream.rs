//! One upstream resolver: its address, smoothed RTT, health state and counters.
//!
//! Health is reachability. Only timeouts and transport errors (ICMP unreachable, TCP refused
//! or reset) count as failures, and `down_after` of them in a row mark an upstream down. The
//! rcode of a well-formed answer never does: REFUSED, FORMERR, NOTIMP and SERVFAIL move that
//! one query to the next upstream and are counted, but a resolver that serves only its own
//! zones, or has a DNS firewall, is still there. Any well-formed reply, to a client query or to
//! a probe, brings a down upstream back up at once.
//!
//! One probe task at a time per upstream (`probe`) asks the zone's probe question (the apex `SOA`, `. NS`
//! for the root, or the zone's `probe`): at start until the upstream has answered once (what
//! readiness waits for), and while it is down, on an interval backing off from
//! `probe_interval` to `probe_max_interval`.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{Probe, Transport};
use crate::stats::{ErrorKind, Stats, UpstreamCounters};
use crate::wire;

use super::budget::{Budget, Spender};
use super::failover::Exchange;
use super::probe;
use super::udp::{InlineWaiter, UdpPool};
use super::{ExchangeError, ForwardSettings, Reply, tcp::TcpPool};

/// Whether `kind` says the upstream cannot be reached (and so counts toward down), as
/// opposed to an answer it gave.
pub fn is_unreachable(kind: ErrorKind) -> bool {
    matches!(kind, ErrorKind::Timeout | ErrorKind::Network)
}

/// The kind an error rcode is counted as; `None` for an rcode that is an answer.
pub fn error_of_rcode(rcode: u16) -> Option<ErrorKind> {
    match rcode {
        wire::rcode::REFUSED => Some(ErrorKind::Refused),
        wire::rcode::FORMERR => Some(ErrorKind::FormErr),
        wire::rcode::NOTIMP => Some(ErrorKind::NotImp),
        wire::rcode::SERVFAIL => Some(ErrorKind::ServFail),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Health {
    srtt: Option<Duration>,
    /// Timeouts and transport errors in a row.
    failures: u32,
    down: bool,
    /// Some well-formed reply has arrived since this upstream was created.
    answered: bool,
    /// A probe task runs (at most one per upstream).
    probing: bool,
}

/// One upstream, shared by every zone that names the same address and transport.
pub struct Upstream {
    pub addr: SocketAddr,
    pub transport: Transport,
    /// Kept in [`Stats`] by label, so a reload that rebuilds this upstream keeps counting.
    pub counters: Arc<UpstreamCounters>,
    health: Mutex<Health>,
    pub(super) tcp: TcpPool,
    udp: UdpPool,
    /// Swapped by a config reload; health and connections stay.
    pub(super) settings: ArcSwap<ForwardSettings>,
    /// The probe question in upstream form; set by the first zone that names this upstream.
    pub(super) probe: ArcSwap<Vec<u8>>,
    /// Restarts a running probe's schedule: marked down while the start-up probe was backing
    /// off, it should be asked again after `probe_interval`, not after its long back-off.
    pub(super) probe_restart: Arc<tokio::sync::Notify>,
    /// The query budget (`max_qps`): the tightest of the zones that name this upstream.
    pub(super) budget: Budget,
}

impl Upstream {
    pub fn new(
        addr: SocketAddr,
        transport: Transport,
        settings: Arc<ForwardSettings>,
        stats: Arc<Stats>,
    ) -> Upstream {
        let label = label(addr, transport);
        Upstream {
            addr,
            transport,
            counters: stats.upstream(&label),
            health: Mutex::new(Health::default()),
            tcp: TcpPool::new(addr, settings.tcp_idle_timeout, stats.clone()),
            udp: UdpPool::new(addr, stats),
            settings: ArcSwap::new(settings),
            probe: ArcSwap::from_pointee(probe::query(&Probe::apex("."))),
            probe_restart: Arc::new(tokio::sync::Notify::new()),
            budget: Budget::new(None),
        }
    }

    /// Applies reloaded settings.
    pub fn set_settings(&self, settings: Arc<ForwardSettings>) {
        self.settings.store(settings);
    }

    /// Sets the question probes ask.
    pub fn set_probe(&self, probe: &Probe) {
        self.probe.store(Arc::new(probe::query(probe)));
    }

    pub fn is_up(&self) -> bool {
        !self.health.lock().down
    }

    /// Whether any well-formed reply has come from this upstream since it was configured:
    /// what readiness waits for.
    pub fn has_answered(&self) -> bool {
        self.health.lock().answered
    }

    /// Smoothed RTT, when any reply has been seen.
    pub fn srtt(&self) -> Option<Duration> {
        self.health.lock().srtt
    }

    /// `clamp(4 * SRTT, min, max)`, or the initial timeout before any RTT is known.
    pub fn attempt_timeout(&self) -> Duration {
        let s = self.settings.load();
        match self.srtt() {
            Some(srtt) => (srtt * 4).clamp(s.min_attempt_timeout, s.max_attempt_timeout),
            None => s.initial_attempt_timeout,
        }
    }

    /// The label this upstream has in metrics and logs: `ip:port`, prefixed with `tcp://`
    /// for a TCP-only upstream so it never collides with the same address over UDP.
    pub fn label(&self) -> String {
        label(self.addr, self.transport)
    }

    /// Records how long an exchange that got a reply took (miss path only).
    pub fn observe_latency(&self, rtt: Duration) {
        self.counters.latency.record(rtt);
    }

    /// Records a well-formed reply after `rtt`, whatever its rcode: the upstream is
    /// reachable. A down upstream is up again from here.
    pub fn reached(&self, rtt: Duration) {
        let mut h = self.health.lock();
        // EWMA with gain 1/8, as TCP's SRTT (RFC 6298 §2).
        h.srtt = Some(match h.srtt {
            Some(srtt) => (srtt * 7 + rtt) / 8,
            None => rtt,
        });
        h.failures = 0;
        h.answered = true;
        if h.down {
            h.down = false;
            drop(h);
            tracing::info!(upstream = %self.addr, "upstream marked up: it answered");
        }
    }

    /// Records a failed attempt. Only timeouts and transport errors count toward health: the
    /// `down_after`-th in a row marks the upstream down and starts its probe.
    pub fn failure(self: &Arc<Self>, kind: ErrorKind) {
        self.counters.error(kind);
        if !is_unreachable(kind) {
            return;
        }
        let mut h = self.health.lock();
        h.failures = h.failures.saturating_add(1);
        let down_after = self.settings.load().down_after;
        if h.down || h.failures < down_after {
            return;
        }
        h.down = true;
        let spawn = !std::mem::replace(&mut h.probing, true);
        drop(h);
        tracing::warn!(upstream = %self.addr, "upstream marked down after {down_after} timeouts or network errors in a row");
        if spawn {
            let interval = self.settings.load().probe_interval;
            // Not tracked (nor the start-up probe below): a probe is no client's work, so the
            // drain does not wait for it; it ends once answered, or when the upstream is
            // dropped, or with its runtime.
            tokio::spawn(probe::run(Arc::downgrade(self), interval));
        } else {
            self.probe_restart.notify_one();
        }
    }

    /// Probes this upstream now unless it has answered before and is up, or a probe already
    /// runs: at start and after a reload, so readiness needs no client traffic.
    pub fn probe_until_answered(self: &Arc<Self>) {
        let mut h = self.health.lock();
        if (h.answered && !h.down) || h.probing {
            return;
        }
        h.probing = true;
        drop(h);
        tokio::spawn(probe::run(Arc::downgrade(self), Duration::ZERO));
    }

    /// Ends a probe task if its work is done: the upstream has answered and is up. Checked
    /// under the health lock, so a `failure` that marks it down after this starts a new one.
    pub(super) fn probe_done(&self) -> bool {
        let mut h = self.health.lock();
        let done = h.answered && !h.down;
        if done {
            h.probing = false;
        }
        done
    }

    /// One exchange on this upstream's transport, started at `now`, retrying a truncated
    /// UDP reply over TCP, until `deadline` (or until dropped, without one).
    pub async fn exchange(
        &self,
        query: &[u8],
        deadline: Option<Instant>,
        now: Instant,
    ) -> Result<Vec<u8>, ExchangeError> {
        if self.transport == Transport::Tcp {
            self.counters.requests_tcp.fetch_add(1, Ordering::Relaxed);
            return self.tcp.exchange(query, deadline).await;
        }
        self.counters.requests_udp.fetch_add(1, Ordering::Relaxed);
        let reply = self.udp.exchange(query, deadline, now).await?;
        if !wire::Header::parse(&reply).is_some_and(|h| h.tc()) {
            return Ok(reply);
        }
        // A truncated reply is never cached or served: ask the same upstream over TCP
        // (RFC 7766 §5) within what is left of this attempt.
        self.retry_over_tcp(query, deadline).await
    }

    /// The TCP retry of a query whose UDP reply came back truncated (RFC 7766 §5).
    pub async fn retry_over_tcp(
        &self,
        query: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, ExchangeError> {
        self.counters.requests_tcp.fetch_add(1, Ordering::Relaxed);
        self.tcp.exchange(query, deadline).await
    }

    /// Sends `waiter`'s query over UDP at `now` with no task waiting for the reply (see
    /// [`UdpPool::send_inline`]), timed out after this upstream's attempt timeout. A
    /// TCP-only upstream, or a query that could not be sent at once, is handed back through
    /// [`InlineWaiter::unsent`].
    pub fn send_inline(&self, now: Instant, waiter: Box<dyn InlineWaiter>) {
        if self.transport == Transport::Tcp {
            waiter.unsent();
            return;
        }
        let timeout_at = now + self.attempt_timeout();
        if self.udp.send_inline(now, timeout_at, waiter) {
            self.counters.requests_udp.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The real exchange behind the failover loop.
impl Exchange for Arc<Upstream> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }
    fn attempt_timeout(&self) -> Duration {
        Upstream::attempt_timeout(self)
    }
    fn exchange<'a>(
        &'a self,
        query: &'a [u8],
        t0: Instant,
    ) -> impl Future<Output = Reply> + Send + 'a {
        Upstream::exchange(self, query, None, t0)
    }
    fn failure(&self, kind: ErrorKind) {
        Upstream::failure(self, kind);
    }
    fn replied(&self, rtt: Duration) {
        self.observe_latency(rtt);
    }
    fn reached(&self, rtt: Duration) {
        Upstream::reached(self, rtt);
    }
    fn counters(&self) -> &UpstreamCounters {
        &self.counters
    }
    fn spend(&self, now: Instant, spender: Spender) -> bool {
        self.budget.spend(now, spender)
    }
}

fn label(addr: SocketAddr, transport: Transport) -> String {
    match transport {
        Transport::Tcp => format!("tcp://{addr}"),
        Transport::Udp => addr.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn upstream() -> Arc<Upstream> {
        let text = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\"]\n";
        let cfg = crate::config::parse_str(text, "t").unwrap();
        let stats = Arc::new(Stats::default());
        let addr = "127.0.0.1:9".parse().unwrap();
        Arc::new(Upstream::new(
            addr,
            Transport::Udp,
            Arc::new(cfg.forward),
            stats,
        ))
    }

    #[tokio::test]
    async fn answers_with_any_rcode_never_take_it_down() {
        let up = upstream();
        for kind in [
            ErrorKind::Refused,
            ErrorKind::FormErr,
            ErrorKind::NotImp,
            ErrorKind::ServFail,
        ] {
            for _ in 0..10 {
                up.failure(kind);
            }
            assert!(up.is_up(), "{kind:?}");
            assert_eq!(up.counters.errors(kind), 10);
        }
    }

    #[tokio::test]
    async fn timeouts_in_a_row_take_it_down_and_any_reply_brings_it_back() {
        let up = upstream();
        up.failure(ErrorKind::Timeout);
        up.failure(ErrorKind::Network);
        // A reply in between resets the count: not three in a row.
        up.reached(Duration::from_millis(1));
        up.failure(ErrorKind::Timeout);
        up.failure(ErrorKind::Timeout);
        assert!(up.is_up());
        up.failure(ErrorKind::Timeout);
        assert!(!up.is_up());
        up.reached(Duration::from_millis(1));
        assert!(up.is_up() && up.has_answered());
    }

    #[test]
    fn the_attempt_timeout_is_four_times_the_smoothed_rtt_within_its_bounds() {
        let up = upstream();
        assert_eq!(
            up.attempt_timeout(),
            Duration::from_millis(500),
            "before any RTT"
        );
        up.reached(Duration::from_millis(40));
        assert_eq!(up.attempt_timeout(), Duration::from_millis(160));
        // SRTT gains an eighth of each sample: (7 * 40 + 200) / 8 = 60 ms.
        up.reached(Duration::from_millis(200));
        assert_eq!(up.attempt_timeout(), Duration::from_millis(240));
        let fast = upstream();
        fast.reached(Duration::from_millis(1));
        assert_eq!(
            fast.attempt_timeout(),
            Duration::from_millis(50),
            "at least the minimum"
        );
        let slow = upstream();
        slow.reached(Duration::from_secs(2));
        assert_eq!(
            slow.attempt_timeout(),
            Duration::from_secs(1),
            "at most the maximum"
        );
    }
}
