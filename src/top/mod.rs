//! Who is doing it: the heaviest clients and names of the last few minutes, for
//! `nodedns top`, in fixed space whatever the traffic (space-saving sketches,
//! [`crate::sketch`]), and never as metric labels.
//!
//! This module owns what is recorded, how often, and over which window; the report it reads
//! back is [`report`]. Five boards are kept:
//!
//! - clients by queries (every query, hits included, *sampled*: each thread records one query
//!   in [`QUERY_SAMPLE`] on average, with that weight, so a hit costs one thread-local
//!   decrement). The gap to the next sampled query is drawn uniformly from 1 to
//!   `2 * QUERY_SAMPLE - 1`: a fixed gap would alias with clients that take turns in a
//!   fixed pattern, and always pick the same one;
//! - clients by misses (every query the cache did not answer fresh);
//! - names by NXDOMAIN (every NXDOMAIN reply, hits included, sampled the same way: with
//!   `ndots:5` most of a node's answers can be NXDOMAIN from the cache, as frequent as any
//!   other hit);
//! - names by SERVFAIL (every SERVFAIL reply: rare, each one counted);
//! - search-list expansion base names ([`crate::search_path`]) of the sampled NXDOMAIN
//!   replies: the expansions that cost a lookup for nothing.
//!
//! Clients are whole IP addresses (an IPv6 client is its full address, not its /64): on a
//! node, each pod has its own. Names are lowercased wire form without the root label.
//!
//! Time is cut in slices of [`SLICE_SECS`]; [`SLICES`] of them (5 minutes) are kept. Each
//! thread records into its own current slice, behind a mutex only it and a rare reader take
//! (no lock is shared between workers on the query path). When a thread's slice is over, the
//! thread merges it into the shared ring once. A read merges the ring's slices and every
//! thread's current one that fall in the window asked for: the window is whole slices, so
//! "the last 60 s" covers between 60 and 70 s.
//!
//! Memory is bounded by the slices: at most [`LANES`] current ones and [`SLICES`] in the
//! ring, each five sketches of [`CAPACITY`] counters (about 50 KB with everyday names, 125 KB
//! with every name 255 bytes long): under 2 MB with a few workers, 8 MB at the very most.

pub mod report;

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::sketch::SpaceSaving;
use crate::wire;

pub use report::Report;

/// Seconds per slice: the resolution of a window.
pub const SLICE_SECS: u64 = 10;
/// Slices kept: the longest window is `SLICES * SLICE_SECS` (5 minutes).
pub const SLICES: u64 = 30;
/// Counters per sketch: every key with more than 1/64 of a board's total is on it.
pub const CAPACITY: usize = 64;
/// One query, and one NXDOMAIN reply, in this many (on average) is recorded in its board,
/// with this weight.
pub const QUERY_SAMPLE: u32 = 16;
/// Threads that own a recorder; the threads after them share the last one.
const LANES: usize = 32;

/// A name in lowercased wire form, without the root label.
pub type Name = Box<[u8]>;

/// One board's sketch per kind, for one slice of time.
#[derive(Debug, Clone)]
struct Slice {
    /// Which slice of time: seconds since start divided by [`SLICE_SECS`].
    epoch: u64,
    /// When it ends, so a recording thread compares instants instead of computing the
    /// epoch of every event.
    ends: Option<Instant>,
    clients_by_queries: SpaceSaving<IpAddr>,
    clients_by_misses: SpaceSaving<IpAddr>,
    names_by_nxdomain: SpaceSaving<Name>,
    names_by_servfail: SpaceSaving<Name>,
    search_bases: SpaceSaving<Name>,
}

impl Slice {
    fn new(epoch: u64) -> Slice {
        Slice {
            epoch,
            ends: None,
            clients_by_queries: SpaceSaving::new(CAPACITY),
            clients_by_misses: SpaceSaving::new(CAPACITY),
            names_by_nxdomain: SpaceSaving::new(CAPACITY),
            names_by_servfail: SpaceSaving::new(CAPACITY),
            search_bases: SpaceSaving::new(CAPACITY),
        }
    }

    fn merge(&mut self, other: &Slice) {
        self.clients_by_queries.merge(&other.clients_by_queries);
        self.clients_by_misses.merge(&other.clients_by_misses);
        self.names_by_nxdomain.merge(&other.names_by_nxdomain);
        self.names_by_servfail.merge(&other.names_by_servfail);
        self.search_bases.merge(&other.search_bases);
    }

    /// Starts `epoch` afresh, keeping the allocations.
    fn restart(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.clients_by_queries.clear();
        self.clients_by_misses.clear();
        self.names_by_nxdomain.clear();
        self.names_by_servfail.clear();
        self.search_bases.clear();
    }
}

/// What one event adds to a slice. The sampled ones count [`QUERY_SAMPLE`].
enum Event<'a> {
    Query(IpAddr),
    Miss(IpAddr),
    Nxdomain {
        name: &'a [u8],
        base: Option<&'a [u8]>,
    },
    Servfail(&'a [u8]),
}

impl Event<'_> {
    fn add_to(&self, s: &mut Slice) {
        let sampled = u64::from(QUERY_SAMPLE);
        match *self {
            Event::Query(client) => s.clients_by_queries.add(&client, sampled),
            Event::Miss(client) => s.clients_by_misses.add(&client, 1),
            Event::Nxdomain { name, base } => {
                s.names_by_nxdomain.add(name, sampled);
                if let Some(base) = base {
                    s.search_bases.add(base, sampled);
                }
            }
            Event::Servfail(name) => s.names_by_servfail.add(name, 1),
        }
    }
}

static NEXT_LANE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's recorder index, the same in every [`Top`].
    static LANE: usize = NEXT_LANE.fetch_add(1, Ordering::Relaxed).min(LANES - 1);
    /// Queries this thread still lets pass before it records one.
    static QUERIES: Cell<u32> = const { Cell::new(1) };
    /// NXDOMAIN replies this thread still lets pass before it records one.
    static NXDOMAINS: Cell<u32> = const { Cell::new(1) };
    /// The state of this thread's xorshift generator for the gaps between sampled queries.
    static GAPS: Cell<u32> = const { Cell::new(0x9E37_79B9) };
}

/// Counts one event down on `countdown`: `true` when this one is sampled, and then the
/// countdown starts again from a new gap.
#[inline]
fn sampled(countdown: &'static std::thread::LocalKey<Cell<u32>>) -> bool {
    let left = countdown.with(|c| {
        let left = c.get().saturating_sub(1);
        c.set(left);
        left
    });
    if left == 0 {
        countdown.with(|c| c.set(next_gap()));
    }
    left == 0
}

/// The next gap between sampled queries: uniform over `1..2 * QUERY_SAMPLE` (mean
/// [`QUERY_SAMPLE`]), from a xorshift32 generator (Marsaglia, 2003): statistical quality is
/// all it needs, not secrecy.
fn next_gap() -> u32 {
    GAPS.with(|g| {
        let mut x = g.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        g.set(x);
        1 + x % (2 * QUERY_SAMPLE - 1)
    })
}

/// The boards of one server: every thread's current slice and the ring of past ones.
pub struct Top {
    origin: Instant,
    /// Each thread's current slice, created on its first event.
    lanes: Box<[Mutex<Option<Slice>>]>,
    /// Finished slices, at `epoch % SLICES`.
    ring: Mutex<Vec<Option<Slice>>>,
}

impl Top {
    pub fn new() -> Top {
        Top {
            origin: Instant::now(),
            lanes: (0..LANES).map(|_| Mutex::new(None)).collect(),
            ring: Mutex::new((0..SLICES).map(|_| None).collect()),
        }
    }

    fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.origin)
    }

    /// One query from `client`, hits included: the queries board samples it
    /// ([`QUERY_SAMPLE`]). Costs a thread-local decrement when not sampled.
    #[inline]
    pub fn query(&self, client: IpAddr, now: Instant) {
        if sampled(&QUERIES) {
            self.record(Event::Query(client), now);
        }
    }

    /// A query from `client` the cache did not answer fresh.
    pub fn miss(&self, client: IpAddr, now: Instant) {
        self.record(Event::Miss(client), now);
    }

    /// A reply about to be sent: NXDOMAIN (sampled) and SERVFAIL count its question's name,
    /// and a sampled NXDOMAIN for a search-list expansion its base name. `base` is
    /// [`crate::search_path::Suffixes::base`] of the current config, as a length (the base
    /// is the qname's start); it is called on sampled NXDOMAIN replies only.
    #[inline]
    pub fn reply(&self, rcode: u16, reply: &[u8], base: impl FnOnce(&[u8]) -> Option<usize>) {
        if rcode == wire::rcode::SERVFAIL {
            self.servfail(reply);
        } else if rcode == wire::rcode::NXDOMAIN && sampled(&NXDOMAINS) {
            self.nxdomain(reply, base);
        }
    }

    #[cold]
    fn nxdomain(&self, reply: &[u8], base: impl FnOnce(&[u8]) -> Option<usize>) {
        let mut buf = [0u8; 256];
        let Some(qname) = question_name(reply, &mut buf) else {
            return;
        };
        let base = base(qname).and_then(|len| qname.get(..len));
        let name = qname.get(..qname.len() - 1).unwrap_or_default();
        self.record(Event::Nxdomain { name, base }, Instant::now());
    }

    #[cold]
    fn servfail(&self, reply: &[u8]) {
        let mut buf = [0u8; 256];
        let Some(qname) = question_name(reply, &mut buf) else {
            return;
        };
        let name = qname.get(..qname.len() - 1).unwrap_or_default();
        self.record(Event::Servfail(name), Instant::now());
    }

    fn record(&self, event: Event<'_>, now: Instant) {
        let lane = LANE.with(|l| *l);
        let Some(lane) = self.lanes.get(lane) else {
            return;
        };
        let mut current = lane.lock();
        let slice = match current.as_mut() {
            Some(s) if s.ends.is_some_and(|ends| now < ends) => s,
            _ => self.turn(current.get_or_insert_with(|| Slice::new(0)), now),
        };
        event.add_to(slice);
    }

    /// Makes `slice` the one of `now`, retiring what it held when that is another.
    #[cold]
    fn turn<'s>(&self, slice: &'s mut Slice, now: Instant) -> &'s mut Slice {
        let epoch = self.elapsed(now).as_secs() / SLICE_SECS;
        if slice.epoch != epoch {
            self.retire(slice);
            slice.restart(epoch);
        }
        let end = Duration::from_secs(epoch.saturating_add(1).saturating_mul(SLICE_SECS));
        slice.ends = self.origin.checked_add(end);
        slice
    }

    /// Moves a thread's finished slice into the ring (once per slice per thread).
    fn retire(&self, slice: &Slice) {
        if slice.is_empty() {
            return;
        }
        let mut ring = self.ring.lock();
        let Some(at) = ring.get_mut(ring_index(slice.epoch)) else {
            return;
        };
        match at {
            Some(kept) if kept.epoch == slice.epoch => kept.merge(slice),
            // Older than what the ring holds there: already out of every window.
            Some(kept) if kept.epoch > slice.epoch => {}
            _ => *at = Some(slice.clone()),
        }
    }

    /// The `n` heaviest of each board over the last `seconds` (whole slices, at most
    /// [`SLICES`]), read at `now`.
    pub fn report(&self, seconds: u64, n: usize, now: Instant) -> Report {
        self.report_at(seconds, n, self.elapsed(now))
    }

    /// The report `elapsed` after this `Top` began.
    fn report_at(&self, seconds: u64, n: usize, elapsed: Duration) -> Report {
        let secs = elapsed.as_secs();
        let now_epoch = secs / SLICE_SECS;
        let slices = seconds.div_ceil(SLICE_SECS).clamp(1, SLICES);
        let first = now_epoch.saturating_sub(slices - 1);
        let within = |s: &Slice| (first..=now_epoch).contains(&s.epoch);
        let mut merged = Slice::new(now_epoch);
        for s in self.ring.lock().iter().flatten().filter(|s| within(s)) {
            merged.merge(s);
        }
        for lane in self.lanes.iter() {
            if let Some(s) = lane.lock().as_ref().filter(|s| within(s)) {
                merged.merge(s);
            }
        }
        // From the start of the first slice (or of the process) to now, in whole seconds
        // begun.
        let span = elapsed.saturating_sub(Duration::from_secs(first * SLICE_SECS));
        let covered = span.as_secs() + u64::from(span.subsec_nanos() > 0);
        Report::of(&merged, seconds, covered, n)
    }
}

impl Default for Top {
    fn default() -> Top {
        Top::new()
    }
}

impl Slice {
    fn is_empty(&self) -> bool {
        self.clients_by_queries.is_empty()
            && self.clients_by_misses.is_empty()
            && self.names_by_nxdomain.is_empty()
            && self.names_by_servfail.is_empty()
            && self.search_bases.is_empty()
    }
}

fn ring_index(epoch: u64) -> usize {
    usize::try_from(epoch % SLICES).unwrap_or(0)
}

/// The question name of a message (its first name, uncompressed as a reply echoes it),
/// lowercased into `buf`, in wire form with its root label; `None` when it is not a plain
/// name of at most 255 bytes.
fn question_name<'b>(msg: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b [u8]> {
    let name = msg.get(wire::HEADER_LEN..)?;
    let mut at = 0;
    loop {
        let len = usize::from(*name.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = name.get(at..at + 1 + len)?;
        buf.get_mut(at..at + 1 + len)?.copy_from_slice(label);
        at += 1 + len;
    }
    if at >= 255 {
        return None;
    }
    *buf.get_mut(at)? = 0;
    let out = buf.get_mut(..=at)?;
    out.make_ascii_lowercase();
    // The length bytes are at most 63: lowercasing leaves them alone.
    Some(out)
}

#[cfg(test)]
mod tests;
