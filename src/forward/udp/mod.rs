//! Queries over UDP to one upstream (RFC 5452 §9), on a few reused sockets per runtime.
//!
//! A socket of its own per query gives every query a fresh random source port, but costs a
//! `socket`, `bind`, `connect`, a reactor registration and a `close` on every miss: most of a
//! miss's CPU. Instead each runtime (one per worker) keeps [`LANES`] sockets per upstream,
//! each `connect()`ed (the kernel drops datagrams from any other address) and bound to a port
//! the kernel picks at random, and sends many queries on each, matched to replies by ID. A
//! socket is retired after [`LANE_QUERIES`] queries or [`LANE_AGE`], whichever comes first,
//! so ports keep changing: an off-path attacker must still hit one of a few random ports
//! *and* the random ID of a query in flight, and a port never lives long enough to be
//! learned and reused.
//!
//! One task per socket reads replies and hands each to the query whose ID it carries, if
//! [`wire::check_reply`] says it answers what was sent. IDs are never reused on a socket, so
//! a late reply to a query that gave up is recognised and dropped quietly, while a datagram
//! with an ID never sent, or with the wrong question, counts as a spoof mismatch.
//!
//! A query is awaited in one of two ways. [`UdpPool::exchange`] is a future for a task that
//! waits. [`UdpPool::send_inline`] has no task behind it: the reader calls its
//! [`InlineWaiter`] with the reply, and also keeps the attempt's timeout, in a queue per
//! socket ordered by deadline (one timeout applies to all of a socket's queries, so sending
//! order is deadline order), under one timer per socket instead of one per query.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::{Handle, Id as RuntimeId};
use tokio::time::{Instant, timeout_at};

use crate::stats::Stats;
use crate::wire;

use super::ExchangeError;

mod lane;
mod reader;

pub use lane::LateReply;
use lane::{Lane, Registered, Slot, send_past_stale_error};
use reader::read;

/// Sockets per upstream and runtime, used in turn.
pub const LANES: usize = 4;
/// Queries sent on one socket before it is retired for one on a new random port.
pub const LANE_QUERIES: u32 = 1024;
/// Age at which a socket is retired however few queries it carried.
pub const LANE_AGE: Duration = Duration::from_secs(10);

/// Batches read per wake-up before the reader lets other tasks run. We advertise 1232
/// bytes; a longer datagram is cut at [`crate::sys::DATAGRAM`] by the kernel, fails the checks and
/// is ignored.
const BATCHES_PER_WAKE: usize = 4;
/// How long a query that found its socket's send buffer full waits before trying again.
const SEND_RETRY: Duration = Duration::from_millis(1);
/// Runtimes remembered per upstream. The binary has one per worker plus one; only tests
/// that build a runtime per test go past it, and then the oldest sockets are dropped.
const MAX_RUNTIMES: usize = 64;

type Reply = Result<Vec<u8>, ExchangeError>;

/// A query sent by [`UdpPool::send_inline`] and what becomes of it: exactly one of the
/// methods taking `self` is called, outside any lock, unless the runtime shuts down first
/// (then it is dropped).
pub trait InlineWaiter: Send {
    /// The query to send (as built by [`wire::build_upstream_query`]; its ID is replaced).
    fn query(&self) -> &[u8];
    /// It could not be sent at once (no runtime, no socket, a full socket buffer).
    fn unsent(self: Box<Self>);
    /// `reply` answers the query (ID, question and class checked).
    fn answered(self: Box<Self>, reply: &[u8]);
    /// The attempt's timeout passed. A reply that comes later still arrives through `late`.
    fn timed_out(self: Box<Self>, late: LateReply);
    /// The socket failed before a reply came (e.g. ICMP port unreachable).
    fn failed(self: Box<Self>, error: ExchangeError);
}

/// The UDP side of one upstream.
pub struct UdpPool {
    addr: SocketAddr,
    stats: Arc<Stats>,
    runtimes: Mutex<Vec<(RuntimeId, Lanes)>>,
}

/// One runtime's sockets to this upstream.
struct Lanes {
    slots: [Option<Arc<Lane>>; LANES],
    next: usize,
}

impl UdpPool {
    pub fn new(addr: SocketAddr, stats: Arc<Stats>) -> UdpPool {
        UdpPool {
            addr,
            stats,
            runtimes: Mutex::new(Vec::new()),
        }
    }

    /// Sends `query` (as built by [`wire::build_upstream_query`]; its ID is replaced) at
    /// `now` and waits until `deadline` for the reply that answers it. Without a deadline
    /// it waits until dropped: the failover loop keeps the time itself, and one timer per
    /// miss is cheaper than two.
    pub async fn exchange(&self, query: &[u8], deadline: Option<Instant>, now: Instant) -> Reply {
        if query.len() < wire::HEADER_LEN {
            return Err(io::Error::from(io::ErrorKind::InvalidInput).into());
        }
        let lane = self.lane(now)?;
        let (id, reply) = lane.register(query);
        let registered = Registered { lane: &lane, id };
        registered.send().await?;
        let reply = match deadline {
            Some(deadline) => match timeout_at(deadline, reply).await {
                Err(_) => return Err(ExchangeError::Timeout),
                Ok(reply) => reply,
            },
            None => reply.await,
        };
        match reply {
            Ok(reply) => reply,
            // The reader ended without an answer for us (its runtime is shutting down).
            Err(_) => Err(io::Error::from(io::ErrorKind::ConnectionAborted).into()),
        }
    }

    /// Sends `waiter`'s query at `now` with no task waiting: the reader gives `waiter` the
    /// reply, or a timeout at `timeout_at`, or the socket's failure. True when sent; else
    /// the query could not be sent at once and `waiter` was told so ([`InlineWaiter::unsent`]).
    pub fn send_inline(
        &self,
        now: Instant,
        timeout_at: Instant,
        waiter: Box<dyn InlineWaiter>,
    ) -> bool {
        let query = waiter.query();
        let lane = match self.lane(now) {
            Ok(lane) if query.len() >= wire::HEADER_LEN => lane,
            _ => {
                waiter.unsent();
                return false;
            }
        };
        let mut st = lane.state.lock();
        let (id, sent) = st.stamp(query);
        if send_past_stale_error(lane.sock.socket(), &sent).is_err() {
            // Never registered: the ID stays free, no reply can be mistaken for it.
            drop(st);
            waiter.unsent();
            return false;
        }
        st.track(id, Slot::Inline { sent, waiter });
        let was_idle = st.timeouts.is_empty();
        st.timeouts.push_back((timeout_at, id));
        drop(st);
        if was_idle {
            // The reader's timer is disarmed while nothing inline is pending.
            lane.idle.notify_one();
        }
        true
    }

    /// The next lane of the current runtime, replacing it first if it is spent at `now`.
    fn lane(&self, now: Instant) -> io::Result<Arc<Lane>> {
        let runtime = Handle::try_current()
            .map_err(|_| io::Error::other("no async runtime"))?
            .id();
        let mut runtimes = self.runtimes.lock();
        let at = match runtimes.iter().position(|(id, _)| *id == runtime) {
            Some(at) => at,
            None => {
                if runtimes.len() >= MAX_RUNTIMES {
                    runtimes.remove(0);
                }
                runtimes.push((runtime, Lanes::default()));
                runtimes.len() - 1
            }
        };
        let lanes = &mut runtimes[at].1;
        let slot = &mut lanes.slots[lanes.next];
        lanes.next = (lanes.next + 1) % LANES;
        if let Some(lane) = slot.as_ref().filter(|l| l.usable(now)) {
            return Ok(lane.clone());
        }
        let lane = Lane::open(self.addr)?;
        // Not tracked: a reader ends by itself once its lane is retired and idle (or with
        // its runtime), and the misses the drain waits for are what it serves.
        tokio::spawn(read(lane.clone(), self.stats.clone()));
        if let Some(old) = slot.replace(lane.clone()) {
            old.retire();
        }
        Ok(lane)
    }
}

impl Default for Lanes {
    fn default() -> Self {
        Lanes {
            slots: std::array::from_fn(|_| None),
            next: 0,
        }
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        for lane in self.slots.iter().flatten() {
            lane.retire();
        }
    }
}
