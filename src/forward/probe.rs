//! Health probes: the one task per upstream that asks its probe question at start (until
//! it has answered once, what readiness waits for) and while it is down, backing off.

use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Probe;
use crate::wire;

use super::Upstream;
use super::budget::Spender;

/// Asks `upstream` its probe question after `first`, then on an interval backing off from
/// `probe_interval` to `probe_max_interval`, until it has answered and is up. Any well-formed
/// reply counts (marking it up); a probe that gets none is not counted as a failure, so an
/// idle node's probes never take an upstream down by themselves. A probe leaves clients the
/// reserve of the upstream's query budget (`budget`): below it the round is skipped. Ends
/// early if the upstream was dropped (a reload removed it).
pub(super) async fn run(upstream: Weak<Upstream>, first: Duration) {
    let mut delay = first;
    let mut interval: Option<Duration> = None;
    loop {
        let restarted = match upstream.upgrade() {
            Some(up) => {
                // Not holding the upstream while asleep: a reload that removes it ends this.
                let restart = up.probe_restart.clone();
                drop(up);
                tokio::select! {
                    () = tokio::time::sleep(delay) => false,
                    () = restart.notified() => true,
                }
            }
            None => return,
        };
        if restarted {
            // Marked down meanwhile: start the back-off again from `probe_interval`.
            interval = None;
            delay = match upstream.upgrade() {
                Some(up) => up.settings.load().probe_interval,
                None => return,
            };
            continue;
        }
        let Some(up) = upstream.upgrade() else { return };
        if up.probe_done() {
            return;
        }
        let settings = up.settings.load_full();
        let query = up.probe.load_full();
        let started = Instant::now();
        let deadline = started + settings.max_attempt_timeout;
        // Probes are the first to wait for a budget: below its reserve this round is skipped,
        // as if unanswered, and the next comes at the next interval.
        let sent = if up.budget.spend(started, Spender::Background) {
            Some(up.exchange(&query, Some(deadline), started).await)
        } else {
            None
        };
        match sent {
            Some(Ok(reply)) if wire::Header::parse(&reply).is_some() => {
                up.reached(started.elapsed());
                continue;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::debug!(upstream = %up.addr, error = %e, "probe got no reply"),
            None => {
                tracing::debug!(upstream = %up.addr, "probe skipped: query budget at its reserve")
            }
        }
        let next = match interval {
            None => settings.probe_interval,
            Some(i) => (i * 2).min(settings.probe_max_interval),
        };
        interval = Some(next);
        delay = next;
    }
}

/// The probe question with RD set, in the form every upstream query has (our OPT).
pub(super) fn query(probe: &Probe) -> Vec<u8> {
    let mut packet = vec![0, 0, 0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    packet.extend(crate::zones::to_wire(&probe.name).unwrap_or_else(|| vec![0]));
    packet.extend(u16::from(probe.qtype).to_be_bytes());
    packet.extend(1u16.to_be_bytes());
    let mut out = Vec::new();
    if let Ok(q) = wire::parse_query(&packet) {
        wire::build_upstream_query(&q, 0, &mut out);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_asks_the_zone_question_with_rd() {
        let probe = crate::config::parse_probe("kubernetes.default.svc.cluster.local. A").unwrap();
        let q = query(&probe);
        let parsed = wire::parse_query(&q).unwrap();
        assert_eq!(parsed.qtype, 1);
        assert!(wire::Header::parse(&q).unwrap().rd());
        let apex = query(&Probe::apex("."));
        assert_eq!(wire::parse_query(&apex).unwrap().qtype, 2);
    }

    /// Datagrams waiting on `sock` (non-blocking), read and counted.
    fn received(sock: &std::net::UdpSocket) -> usize {
        let mut buf = [0u8; 512];
        std::iter::from_fn(|| sock.recv(&mut buf).ok()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_waits_while_the_budget_is_at_its_reserve() {
        // A resolver on loopback that never answers, so the probe keeps going.
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let text = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:9\"]\n";
        let cfg = crate::config::parse_str(text, "t").unwrap();
        let settings = std::sync::Arc::new(cfg.forward.clone());
        let stats = std::sync::Arc::new(crate::stats::Stats::default());
        let addr = sock.local_addr().unwrap();
        let up = std::sync::Arc::new(Upstream::new(
            addr,
            crate::config::Transport::Udp,
            settings,
            stats,
        ));
        // 4 a second: clients spend 2, the reserve is the other 2.
        up.budget.set(Some(4.0));
        let now = Instant::now();
        assert!(up.budget.spend(now, Spender::Client) && up.budget.spend(now, Spender::Client));
        let probe = tokio::spawn(run(std::sync::Arc::downgrade(&up), Duration::ZERO));
        let settle = || async {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
        };
        settle().await;
        assert_eq!(received(&sock), 0, "skipped: it would spend the reserve");
        // A second refills the bucket: the next round, at `probe_interval`, goes.
        tokio::time::advance(cfg.forward.probe_interval).await;
        settle().await;
        assert_eq!(received(&sock), 1);
        probe.abort();
    }
}
