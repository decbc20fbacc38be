//! Per-client limits on the miss path: a miss takes a ticket from the client table
//! ([`crate::limit`]) before it joins a flight, and the ticket travels with its way back
//! ([`Ticketed`]) so that the client's in-flight count drops when the client is answered
//! (or the miss is given up), however the miss went. A miss past a limit is answered at
//! once: its stale entry if it has one, else REFUSED with Extended DNS Error 18
//! (Prohibited, RFC 8914) naming the limit. Never silence: a stub resolver that gets no
//! answer waits seconds and asks again.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::task::TaskTracker;

use super::fast::client_of;
use super::miss::ReplyTo;
use super::{Miss, Resolver};
use crate::config::Config;
use crate::limit::{Limits, Ticket};
use crate::querylog::Source;
use crate::stats::{LimitedAnswer, LimitedReason, Stats, ZoneCounters};
use crate::wire::{self, Ede};

/// The Extended DNS Error texts, one per limit: what `dig` shows the operator.
const INFLIGHT_TEXT: &str = "nodedns: per-client limit on misses in flight";
const RATE_TEXT: &str = "nodedns: per-client limit on miss rate";

/// At most one warning naming a limited client this often, for the whole process.
const WARN_EVERY_SECS: u64 = 5;

/// Unix second of the last warning (0: none yet).
static LAST_WARN: AtomicU64 = AtomicU64::new(0);

/// The client-table limits of `cfg`.
pub(super) fn limits(cfg: &Config) -> Limits {
    let c = &cfg.listen.clients;
    Limits {
        max_inflight: u32::try_from(c.max_inflight).unwrap_or(u32::MAX),
        rate: f64::from(c.miss_rate),
        burst: f64::from(c.miss_burst),
    }
}

/// A miss's way back, holding the client's ticket until the reply is handed to it.
pub(super) struct Ticketed<R> {
    pub reply_to: R,
    pub ticket: Ticket,
}

impl<R: ReplyTo> ReplyTo for Ticketed<R> {
    async fn send(self, reply: Vec<u8>, stats: &Arc<Stats>) {
        self.reply_to.send(reply, stats).await;
        drop(self.ticket);
    }

    fn send_now(self, reply: &[u8], stats: &Arc<Stats>, tasks: &TaskTracker) {
        self.reply_to.send_now(reply, stats, tasks);
        drop(self.ticket);
    }
}

impl Resolver {
    /// Admits `miss` for its client, or says which limit it hit.
    pub(super) fn admit(&self, miss: &Miss<'_>) -> Result<Ticket, LimitedReason> {
        self.clients
            .load()
            .admit(miss.client.ip(), miss.now.into_std())
    }

    /// Writes to `out` what a miss past limit `reason` gets: its stale entry, else REFUSED with
    /// an Extended DNS Error naming the limit. Counts it, and now and then names the client
    /// in a warning.
    pub(super) fn limited(
        &self,
        miss: &Miss<'_>,
        reason: LimitedReason,
        udp_cap: u16,
        zone: &ZoneCounters,
        out: &mut Vec<u8>,
    ) -> Source {
        let (text, limit) = match reason {
            LimitedReason::Inflight => (INFLIGHT_TEXT, "client_inflight"),
            LimitedReason::Rate => (RATE_TEXT, "client_rate"),
        };
        let source = if miss.stale.is_some() {
            let client = client_of(&miss.query, miss.proto, udp_cap);
            let stale = miss.stale.clone();
            self.serve(&client, miss.pkt, None, stale, zone, miss.expansion, out)
        } else {
            let ede = Ede {
                code: wire::ede::PROHIBITED,
                text,
            };
            wire::error_reply_ede(miss.pkt, wire::rcode::REFUSED, Some(ede), out);
            self.count_reply(out, miss.expansion);
            Source::Local
        };
        let answer = match source {
            Source::Stale => LimitedAnswer::Stale,
            _ => LimitedAnswer::Refused,
        };
        self.stats.client_limited.inc(reason, answer);
        if warn_now() {
            tracing::warn!(
                client = %miss.client.ip(),
                limit,
                "a client is past its miss limit: answered stale or REFUSED"
            );
        }
        source
    }
}

/// Whether a warning may go out now: true at most once every [`WARN_EVERY_SECS`].
fn warn_now() -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_WARN.load(Ordering::Relaxed);
    now >= last.saturating_add(WARN_EVERY_SECS)
        && LAST_WARN
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::parse_str;

    fn config(listen: &str) -> Config {
        let text = format!(
            "[listen]\naddresses = [\"127.0.0.1:0\"]\n{listen}\n\
             [[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:5300\"]\n"
        );
        parse_str(&text, "test.toml").unwrap()
    }

    #[tokio::test]
    async fn a_reload_applies_changed_client_limits_and_keeps_the_table_otherwise() {
        let first = config("client_miss_rate = 50");
        let resolver = Resolver::new(&first, Arc::new(Stats::default()));
        let table = resolver.clients.load_full();
        assert_eq!(table.limits().rate, 50.0);
        assert_eq!(table.limits().max_inflight, 1000);

        // The same limits: the same table, so what clients have in flight carries over.
        resolver.reconfigure(&config("client_miss_rate = 50\nworkers = 2"));
        assert!(Arc::ptr_eq(&table, &resolver.clients.load_full()));

        resolver.reconfigure(&config("client_miss_rate = 0\nmax_inflight = 40"));
        let limits = resolver.clients.load().limits();
        assert_eq!((limits.rate, limits.max_inflight), (0.0, 4));
    }
}
