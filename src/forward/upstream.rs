//! One upstream resolver: its address, smoothed RTT, health state and counters.
//!
//! Health is passive: consecutive failures (timeout, network error, REFUSED, FORMERR, NOTIMP)
//! mark an upstream down after `down_after` of them. While down, one probe task at a time
//! asks it `. NS` on a backing-off interval and marks it up on a usable answer. SERVFAIL
//! does not count: broken domains legitimately SERVFAIL, and a healthy resolver must not be
//! taken out of service for them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::Transport;
use crate::stats::{LatencyHistogram, Stats};
use crate::wire;

use super::udp::{InlineWaiter, UdpPool};
use super::{ExchangeError, Settings, tcp::TcpPool};

/// Why an attempt at an upstream failed, for `nodedns_upstream_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Timeout,
    Network,
    /// REFUSED, FORMERR or NOTIMP: the upstream will not answer this.
    Rcode,
    ServFail,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 4] = [
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::Rcode,
        ErrorKind::ServFail,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::Rcode => "refused",
            ErrorKind::ServFail => "servfail",
        }
    }
}

/// Counters of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    pub requests_udp: AtomicU64,
    pub requests_tcp: AtomicU64,
    errors: [AtomicU64; ErrorKind::ALL.len()],
    /// `nodedns_upstream_duration_seconds{upstream}`: exchanges that got a reply.
    pub latency: LatencyHistogram,
}

impl UpstreamCounters {
    pub fn error(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.errors[kind as usize].load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct Health {
    srtt: Option<Duration>,
    failures: u32,
    down: bool,
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
    settings: ArcSwap<Settings>,
    stats: Arc<Stats>,
}

impl Upstream {
    pub fn new(
        addr: SocketAddr,
        transport: Transport,
        settings: Arc<Settings>,
        stats: Arc<Stats>,
    ) -> Upstream {
        let label = label(addr, transport);
        Upstream {
            addr,
            transport,
            counters: stats.upstream(&label),
            health: Mutex::new(Health::default()),
            tcp: TcpPool::new(addr, settings.tcp_idle_timeout, stats.clone()),
            udp: UdpPool::new(addr, stats.clone()),
            settings: ArcSwap::new(settings),
            stats,
        }
    }

    /// Applies reloaded settings.
    pub fn set_settings(&self, settings: Arc<Settings>) {
        self.settings.store(settings);
    }

    pub fn is_up(&self) -> bool {
        !self.health.lock().down
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

    /// Records a usable answer after `rtt`.
    pub fn success(&self, rtt: Duration) {
        self.stats.upstream_answered();
        let mut h = self.health.lock();
        // EWMA with gain 1/8, as TCP's SRTT (RFC 6298 §2).
        h.srtt = Some(match h.srtt {
            Some(srtt) => (srtt * 7 + rtt) / 8,
            None => rtt,
        });
        h.failures = 0;
    }

    /// Records a failed attempt; the `down_after`-th in a row marks the upstream down and
    /// starts its probe.
    pub fn failure(self: &Arc<Self>, kind: ErrorKind) {
        self.counters.error(kind);
        if kind == ErrorKind::ServFail {
            return;
        }
        let mut h = self.health.lock();
        h.failures = h.failures.saturating_add(1);
        let down_after = self.settings.load().down_after;
        if h.down || h.failures < down_after {
            return;
        }
        h.down = true;
        drop(h);
        tracing::warn!(upstream = %self.addr, "upstream marked down after {down_after} consecutive failures");
        tokio::spawn(probe(Arc::downgrade(self)));
    }

    fn mark_up(&self) {
        let mut h = self.health.lock();
        h.down = false;
        h.failures = 0;
        drop(h);
        tracing::info!(upstream = %self.addr, "upstream marked up: probe answered");
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

fn label(addr: SocketAddr, transport: Transport) -> String {
    match transport {
        Transport::Tcp => format!("tcp://{addr}"),
        Transport::Udp => addr.to_string(),
    }
}

/// Asks a down upstream `. NS` until it answers usefully, backing off from `probe_interval`
/// to `probe_max_interval`. Ends when the upstream is up again or has been dropped (a reload
/// removed it).
async fn probe(upstream: Weak<Upstream>) {
    let Some(first) = upstream.upgrade() else {
        return;
    };
    let settings = first.settings.load_full();
    let (mut interval, max) = (settings.probe_interval, settings.probe_max_interval);
    drop(first);
    let query = probe_query();
    loop {
        tokio::time::sleep(interval).await;
        let Some(up) = upstream.upgrade() else { return };
        let started = Instant::now();
        let deadline = started + up.settings.load().max_attempt_timeout;
        if let Ok(reply) = up.exchange(&query, Some(deadline), started).await {
            let rcode = wire::Header::parse(&reply).map(|h| h.rcode());
            if !matches!(
                rcode,
                None | Some(wire::rcode::SERVFAIL | wire::rcode::REFUSED)
            ) {
                up.success(started.elapsed());
                up.mark_up();
                return;
            }
        }
        interval = (interval * 2).min(max);
    }
}

/// `. NS IN` with RD set, in the form every upstream query has (our OPT).
fn probe_query() -> Vec<u8> {
    const PROBE: [u8; 17] = [0, 0, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
    let mut out = Vec::new();
    if let Ok(q) = wire::parse_query(&PROBE) {
        wire::build_upstream_query(&q, 0, &mut out);
    }
    out
}
