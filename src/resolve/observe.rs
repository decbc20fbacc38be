//! What one listener loop keeps of the replies it sends, for the counters one packet alone
//! cannot give: the client latency of a batch's replies, and the retransmit table.
//!
//! A hit is timed without reading the clock: [`Resolver::fast`] only counts it here under
//! its zone, and [`Resolver::settle`] reads the clock once after the batch's replies are
//! sent and records every reply of the batch with that one duration, from the batch's
//! receipt to its send. The retransmit table ([`crate::retransmit`]) is the loop's own,
//! shared with the miss replies it sends so they can mark their query answered.

use std::net::IpAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::{Proto, Resolver};
use crate::cache::MAX_ZONE_INDEX;
use crate::querylog::Source;
use crate::retransmit::{Retransmits, Seen};
use crate::stats::{Hot, Served, ZoneCounters};
use crate::wire::Query;

const ZONES: usize = MAX_ZONE_INDEX as usize + 1;

/// One listener loop's pending replies and retransmit table.
pub struct Observer {
    /// Replies written since the last [`Resolver::settle`], by zone index: hits, errors.
    pending: Box<[[u32; 2]; ZONES]>,
    /// One past the highest zone index pending (0: nothing is).
    high: usize,
    retransmits: Option<Table>,
}

/// A retransmit table and what its milliseconds count from.
#[derive(Clone)]
pub(super) struct Table {
    slots: Arc<Mutex<Retransmits>>,
    epoch: Instant,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            slots: Arc::default(),
            epoch: Instant::now(),
        }
    }
}

impl Table {
    fn ms(&self, now: Instant) -> u32 {
        // Wraps after 49 days; the table compares with wrapping differences.
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }
}

/// A miss's query in its loop's retransmit table, marked answered when the reply goes.
pub(super) struct Asked {
    table: Table,
    seen: Seen,
}

impl std::fmt::Debug for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Asked").finish()
    }
}

impl Asked {
    /// The reply to the query was sent at `now`.
    pub fn answered(self, now: Instant) {
        let now = self.table.ms(now);
        self.table.slots.lock().answered(self.seen, now);
    }
}

impl Observer {
    /// For a UDP loop: with a retransmit table of its own (a client's retry comes from the
    /// same socket, so the same loop reads it).
    pub fn udp() -> Observer {
        Observer::with(Some(Table::default()))
    }

    /// For a test or a fuzz target: nothing is remembered between calls.
    pub fn without_retransmits() -> Observer {
        Observer::with(None)
    }

    fn with(retransmits: Option<Table>) -> Observer {
        Observer {
            pending: Box::new([[0; 2]; ZONES]),
            high: 0,
            retransmits,
        }
    }

    /// A reply written for zone `index` (0: unrouted), to be timed at [`Resolver::settle`].
    pub(super) fn pending(&mut self, index: u8, served: Served) {
        let i = usize::from(index);
        if let Some(counts) = self.pending.get_mut(i) {
            let at = usize::from(served == Served::Error);
            counts[at] = counts[at].saturating_add(1);
            self.high = self.high.max(i + 1);
        }
    }

    /// Records `q` from `client` as asked at `now`: true when it is a retransmit. The
    /// returned handle marks it answered.
    pub(super) fn asked(
        &mut self,
        client: IpAddr,
        q: &Query<'_>,
        now: Instant,
    ) -> (bool, Option<Asked>) {
        let Some(table) = &self.retransmits else {
            return (false, None);
        };
        let now = table.ms(now);
        let mut slots = table.slots.lock();
        let seen = slots.hash(client, q.header.id, q.question);
        let again = slots.asked(seen, now);
        drop(slots);
        let asked = Asked {
            table: table.clone(),
            seen,
        };
        (again, Some(asked))
    }

    /// Whether `q`, answered now from a cache entry inserted under a second ago, repeats a
    /// query still unanswered or answered less than a second ago. Older entries cannot: the
    /// miss that inserted one was answered when it was inserted.
    pub(super) fn is_retransmit(&self, client: IpAddr, q: &Query<'_>, now: Instant) -> bool {
        let Some(table) = &self.retransmits else {
            return false;
        };
        let now = table.ms(now);
        let slots = table.slots.lock();
        let seen = slots.hash(client, q.header.id, q.question);
        slots.is_again(seen, now)
    }
}

impl Resolver {
    /// For a TCP connection: the table every TCP connection shares (a stub that retries
    /// over TCP opens a new connection, which another loop may read).
    pub fn tcp_observer(&self) -> Observer {
        Observer::with(Some(self.tcp_retransmits.clone()))
    }

    /// Records the replies `obs` holds as sent now, `received` being when their queries
    /// were read: once per UDP batch, after its `sendmmsg`; after each TCP reply.
    pub fn settle(&self, obs: &mut Observer, proto: Proto, received: Instant) {
        if obs.high == 0 {
            return;
        }
        let took = Instant::now().saturating_duration_since(received);
        let routing = self.routing.load();
        let p = proto_index(proto);
        for (i, counts) in obs.pending.iter_mut().take(obs.high).enumerate() {
            let Some(zone) = routing.counters.get(i) else {
                continue;
            };
            for (at, served) in [(0, Served::Hit), (1, Served::Error)] {
                if counts[at] > 0 {
                    zone.observe(p, served, took, u64::from(counts[at]));
                }
            }
            *counts = [0; 2];
        }
        obs.high = 0;
    }

    /// A reply to a query read at `received` over `proto`, sent just now: timed in `zone`.
    /// For replies sent one at a time (misses), which read the clock anyway; returns the
    /// reading, for the retransmit table's mark.
    pub(super) fn observe_sent(
        &self,
        zone: &ZoneCounters,
        proto: Proto,
        source: Source,
        received: Instant,
    ) -> Instant {
        let served = match source {
            Source::Cache => Served::Hit,
            Source::Upstream => Served::Miss,
            Source::Stale => Served::Stale,
            Source::Local => Served::Error,
        };
        let now = Instant::now();
        zone.observe(
            proto_index(proto),
            served,
            now.saturating_duration_since(received),
            1,
        );
        now
    }

    /// Counts a retransmit over `proto`.
    pub(super) fn retransmit(&self, proto: Proto) {
        self.stats.inc(match proto {
            Proto::Udp => Hot::RetransmitsUdp,
            Proto::Tcp => Hot::RetransmitsTcp,
        });
    }
}

/// `proto` as a counter slot index.
pub(super) fn proto_index(proto: Proto) -> usize {
    match proto {
        Proto::Udp => 0,
        Proto::Tcp => 1,
    }
}
