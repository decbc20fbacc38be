//! One lane: a connected socket to one upstream, the queries in flight on it matched by ID,
//! and the inline queries' timeouts it keeps (see the parent module; its reader task is
//! `reader`).

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::stats::{Stats, inc};
use crate::sys::UdpFd;
use crate::wire;

use super::{InlineWaiter, LANE_AGE, LANE_QUERIES, Reply, SEND_RETRY};

/// One connected socket and the queries in flight on it.
pub(super) struct Lane {
    pub(super) sock: UdpFd,
    pub(super) born: Instant,
    pub(super) state: Mutex<LaneState>,
    /// Wakes the reader when a retired lane may have become idle.
    pub(super) idle: Notify,
}

pub(super) struct LaneState {
    /// Every ID used on this socket: at most [`LANE_QUERIES`] (plus a few racing queries).
    pub(super) slots: hashbrown::HashMap<u16, Slot, foldhash::fast::RandomState>,
    /// Inline queries' attempt deadlines, oldest first. Answered ones are popped when they
    /// reach the front, so the queue holds about the queries in flight.
    pub(super) timeouts: VecDeque<(Instant, u16)>,
    pub(super) waiting: usize,
    pub(super) sent: u32,
    /// No new queries; the reader ends once `waiting` is 0.
    pub(super) retired: bool,
}

pub(super) enum Slot {
    Waiting {
        sent: Vec<u8>,
        reply: oneshot::Sender<Reply>,
    },
    Inline {
        sent: Vec<u8>,
        waiter: Box<dyn InlineWaiter>,
    },
    /// Answered or abandoned: a datagram for it is late, not forged.
    Done,
}

impl Lane {
    pub(super) fn open(addr: SocketAddr) -> io::Result<Arc<Lane>> {
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        // Port 0: the kernel picks a random free ephemeral port.
        let sock = std::net::UdpSocket::bind(local)?;
        sock.connect(addr)?;
        Ok(Arc::new(Lane {
            sock: UdpFd::new(sock)?,
            born: Instant::now(),
            state: Mutex::new(LaneState {
                slots: hashbrown::HashMap::default(),
                timeouts: VecDeque::new(),
                waiting: 0,
                sent: 0,
                retired: false,
            }),
            idle: Notify::new(),
        }))
    }

    pub(super) fn usable(&self, now: Instant) -> bool {
        let st = self.state.lock();
        !st.retired && st.sent < LANE_QUERIES && now.saturating_duration_since(self.born) < LANE_AGE
    }

    pub(super) fn retire(&self) {
        self.state.lock().retired = true;
        self.idle.notify_one();
    }

    /// Takes an ID never used on this socket for a copy of `query`.
    pub(super) fn register(&self, query: &[u8]) -> (u16, oneshot::Receiver<Reply>) {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock();
        let (id, sent) = st.stamp(query);
        st.track(id, Slot::Waiting { sent, reply: tx });
        (id, rx)
    }

    /// Hands `datagram` to the query it answers; an inline query's waiter is returned, to
    /// be called once the lock is released.
    pub(super) fn deliver(&self, datagram: &[u8], stats: &Stats) -> Option<Box<dyn InlineWaiter>> {
        let Some(id) = datagram.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            inc(&stats.spoof_mismatches);
            return None;
        };
        let mut st = self.state.lock();
        let genuine = match st.slots.get(&id) {
            Some(Slot::Waiting { sent, .. } | Slot::Inline { sent, .. }) => {
                wire::check_reply(sent, datagram).is_ok()
            }
            // A second or late answer to a query that is over.
            Some(Slot::Done) => return None,
            None => false,
        };
        // A forged or stray datagram is counted and the query keeps waiting for the genuine
        // one, which an off-path attacker racing us must not be able to displace.
        if !genuine {
            inc(&stats.spoof_mismatches);
            return None;
        }
        match st.slots.insert(id, Slot::Done) {
            Some(Slot::Waiting { reply, .. }) => {
                st.waiting -= 1;
                let _ = reply.send(Ok(datagram.to_vec()));
                None
            }
            Some(Slot::Inline { waiter, .. }) => {
                st.waiting -= 1;
                Some(waiter)
            }
            Some(Slot::Done) | None => None,
        }
    }

    /// A socket error (ECONNREFUSED after an ICMP port unreachable: the upstream is not
    /// listening) fails every query waiting on this socket: they all went to that upstream.
    pub(super) fn fail_waiting(&self, kind: io::ErrorKind) {
        let mut inline = Vec::new();
        let mut st = self.state.lock();
        for slot in st.slots.values_mut() {
            match std::mem::replace(slot, Slot::Done) {
                Slot::Waiting { reply, .. } => {
                    let _ = reply.send(Err(io::Error::from(kind).into()));
                }
                Slot::Inline { waiter, .. } => inline.push(waiter),
                Slot::Done => {}
            }
        }
        st.waiting = 0;
        st.timeouts.clear();
        drop(st);
        for waiter in inline {
            waiter.failed(io::Error::from(kind).into());
        }
    }

    /// The deadline the reader's timer should wait for: the oldest inline query's, once the
    /// answered ones at the front are dropped.
    pub(super) fn next_timeout(&self) -> Option<Instant> {
        let mut st = self.state.lock();
        let LaneState {
            slots, timeouts, ..
        } = &mut *st;
        while let Some(&(at, id)) = timeouts.front() {
            if matches!(slots.get(&id), Some(Slot::Inline { .. })) {
                return Some(at);
            }
            timeouts.pop_front();
        }
        None
    }

    /// Times out the inline queries whose deadline is not after `now`: each keeps its slot,
    /// now awaited through a [`LateReply`] that its waiter is given.
    pub(super) fn expire(self: &Arc<Self>, now: Instant) {
        let mut due = Vec::new();
        let mut st = self.state.lock();
        while let Some(&(at, id)) = st.timeouts.front() {
            if at > now {
                break;
            }
            st.timeouts.pop_front();
            // Only inline queries are queued here; one answered or abandoned since is done.
            let Some(slot) = st.slots.get_mut(&id) else {
                continue;
            };
            let Slot::Inline { .. } = slot else {
                continue;
            };
            let Slot::Inline { sent, waiter } = std::mem::replace(slot, Slot::Done) else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            *slot = Slot::Waiting { sent, reply: tx };
            due.push((waiter, rx, id));
        }
        drop(st);
        for (waiter, rx, id) in due {
            let late = LateReply {
                lane: self.clone(),
                id,
                rx,
            };
            waiter.timed_out(late);
        }
    }

    /// Marks `id` done if it is still awaited: answered, timed out or cancelled, a datagram
    /// for it from now on is late, not forged.
    pub(super) fn abandon(&self, id: u16) {
        let mut st = self.state.lock();
        if let Some(slot) = st.slots.get_mut(&id)
            && !matches!(slot, Slot::Done)
        {
            *slot = Slot::Done;
            st.waiting -= 1;
        }
        if st.retired && st.waiting == 0 {
            drop(st);
            self.idle.notify_one();
        }
    }

    pub(super) fn finished(&self) -> bool {
        let st = self.state.lock();
        st.retired && st.waiting == 0
    }
}

/// A query registered on a lane; dropping it (answered, timed out or cancelled) marks its
/// ID done.
pub(super) struct Registered<'a> {
    pub(super) lane: &'a Lane,
    pub(super) id: u16,
}

/// Sends `datagram` on a connected socket. An ICMP error (port or host unreachable) for an
/// earlier datagram is kept by the kernel and returned by the next call on the socket, which
/// then sends nothing; the reader only wakes for data, so after an upstream's outage each
/// lane would fail one later query with an error that is not its own. Such an error is
/// consumed by being returned, so one more try sends this datagram, and an error that
/// persists is its own.
pub(super) fn send_past_stale_error(
    sock: &std::net::UdpSocket,
    datagram: &[u8],
) -> io::Result<usize> {
    match sock.send(datagram) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::HostUnreachable
                    | io::ErrorKind::NetworkUnreachable
            ) =>
        {
            sock.send(datagram)
        }
        r => r,
    }
}

impl Registered<'_> {
    pub(super) async fn send(&self) -> io::Result<()> {
        loop {
            {
                let st = self.lane.state.lock();
                let Some(Slot::Waiting { sent, .. }) = st.slots.get(&self.id) else {
                    // Failed by the reader already (socket error): the answer is in the
                    // channel.
                    return Ok(());
                };
                match send_past_stale_error(self.lane.sock.socket(), sent) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    r => return r.map(drop),
                }
            }
            // A full send buffer; the socket is watched for readability only ([`UdpFd`]), so
            // try again shortly, until the caller's deadline drops this attempt.
            tokio::time::sleep(SEND_RETRY).await;
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.lane.abandon(self.id);
    }
}

/// The reply to an inline query whose attempt timed out, awaited by whoever took over;
/// dropping it gives the query up.
pub struct LateReply {
    lane: Arc<Lane>,
    id: u16,
    rx: oneshot::Receiver<Reply>,
}

impl Future for LateReply {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(reply) => reply,
            // The reader ended without an answer (its runtime is shutting down).
            Err(_) => Err(io::Error::from(io::ErrorKind::ConnectionAborted).into()),
        })
    }
}

impl Drop for LateReply {
    fn drop(&mut self) {
        self.lane.abandon(self.id);
    }
}

impl LaneState {
    /// An ID never used on this socket, and a copy of `query` carrying it. At most a little
    /// over [`LANE_QUERIES`] of 65536 IDs are taken: a free one is found within a try or two.
    pub(super) fn stamp(&self, query: &[u8]) -> (u16, Vec<u8>) {
        let id = loop {
            let id: u16 = rand::random();
            if !self.slots.contains_key(&id) {
                break id;
            }
        };
        let mut sent = query.to_vec();
        sent[..2].copy_from_slice(&id.to_be_bytes());
        (id, sent)
    }

    /// Registers a query sent (or about to be) under `id` as awaited.
    pub(super) fn track(&mut self, id: u16, slot: Slot) {
        self.slots.insert(id, slot);
        self.waiting += 1;
        self.sent += 1;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod stale_error_tests {
    use super::*;
    use std::time::Duration;

    /// An upstream that was down (ICMP port unreachable for a query then) and is back: the
    /// next query on the lane is sent, not failed with the old error.
    #[test]
    pub(super) fn a_query_after_an_outage_is_sent_despite_the_old_icmp_error() {
        let gone = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let lane = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        lane.connect(addr).unwrap();
        lane.send(b"while down").unwrap();
        // The ICMP error arrives and waits on the socket; nothing reads it.
        std::thread::sleep(Duration::from_millis(50));
        let back = std::net::UdpSocket::bind(addr).unwrap();
        back.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        send_past_stale_error(&lane, b"after").unwrap();
        let mut buf = [0u8; 16];
        let n = back.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
    }
}
