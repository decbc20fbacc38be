//! The UDP serving loop: one per socket, several sockets per address (one per worker).
//!
//! Each wake-up drains the socket in batches: one `recvmmsg` reads up to
//! [`sys::BATCH`] queries, cache hits and malformed queries are answered inline into
//! preallocated reply buffers, and all of a batch's replies leave in one `sendmmsg`. Nothing
//! is allocated and nothing is awaited for a hit. Misses go to [`Resolver::resolve`], with
//! the way back ([`UdpReply`]): the reply leaves from the same socket when the upstream
//! answer arrives. This module knows nothing of what a miss becomes.
//!
//! On shutdown the socket is connected to its own address before it is given up: the kernel's
//! `SO_REUSEPORT` selection skips connected sockets, so from then on every new query goes to
//! the sockets still listening (the successor's, during a rollout), while the datagrams
//! already queued on this one stay queued (`connect` does not flush them) and are answered.
//! Closing instead would drop that queue, and a socket left listening would keep receiving a
//! share of new queries it would never answer. Misses still in flight reply from the same
//! socket afterwards: a connected UDP socket may still `sendto` any address on Linux.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::resolve::{Fast, Observer, Proto, ReplyTo, Resolver};
use crate::stats::{DropReason, Stats};
use crate::sys::{RecvBatch, SendBatch, UdpFd};

/// Batches served back to back before the loop yields, so misses' tasks on the same
/// runtime still run under a flood.
const BATCHES_PER_YIELD: usize = 16;

/// Queued datagrams answered at most after shutdown; the receive buffer bounds the queue to
/// far fewer, this only bounds the loop.
const RETIRE_MAX: usize = 1 << 16;

/// After shutdown, the queue counts as empty once nothing came for this long. A wait, not
/// one non-blocking try: the reactor may not have seen the readiness of the last datagrams.
const RETIRE_POLL: Duration = Duration::from_millis(50);

/// Serves `sock` until `shutdown` fires, then retires it (see the module doc).
pub async fn serve(sock: Arc<UdpFd>, resolver: Arc<Resolver>, shutdown: CancellationToken) {
    let mut rx = RecvBatch::new();
    let mut tx = SendBatch::new();
    let mut obs = Observer::udp();
    loop {
        let ready = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = sock.readable() => r,
        };
        if let Err(e) = ready {
            tracing::warn!(error = %e, "udp socket failed");
            return;
        }
        let batches = BATCHES_PER_YIELD;
        let (_, emptied) = drain(&sock, &resolver, &mut rx, &mut tx, &mut obs, batches).await;
        // Emptied: waiting for readiness lets the misses' tasks run. Not emptied: yield, or a
        // flood would starve them. Yielding always would cost a zero-timeout `epoll_wait`
        // per wake-up, as tokio polls its driver before resuming a yielded task.
        if !emptied {
            tokio::task::yield_now().await;
        }
    }
    retire(&sock, &resolver, &mut rx, &mut tx, &mut obs).await;
}

/// Serves up to `max_batches` batches queued on `sock`; returns how many queries were read
/// and whether the socket's queue was found empty (or failed) before the limit.
async fn drain(
    sock: &Arc<UdpFd>,
    resolver: &Arc<Resolver>,
    rx: &mut RecvBatch,
    tx: &mut SendBatch,
    obs: &mut Observer,
    max_batches: usize,
) -> (usize, bool) {
    let mut read = 0;
    for _ in 0..max_batches {
        let more = match rx.read(sock) {
            Ok((n, more)) => {
                read += n;
                more
            }
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                return (read, true);
            }
        };
        // One clock reading for the batch: it arrived at once, and TTLs age in seconds.
        let now = Instant::now();
        for (pkt, src) in rx.packets() {
            handle(sock, pkt, src, now, resolver, tx, obs);
        }
        flush(sock, tx, resolver.stats()).await;
        // The batch's replies are sent: one more clock reading times them all.
        resolver.settle(obs, Proto::Udp, now);
        if !more {
            return (read, true);
        }
    }
    (read, false)
}

/// Stops new queries from arriving on `sock` (see the module doc), then answers the ones
/// the kernel had already queued on it.
async fn retire(
    sock: &Arc<UdpFd>,
    resolver: &Arc<Resolver>,
    rx: &mut RecvBatch,
    tx: &mut SendBatch,
    obs: &mut Observer,
) {
    let connected = sock
        .socket()
        .local_addr()
        .and_then(|l| sock.socket().connect(l));
    if let Err(e) = connected {
        tracing::warn!(error = %e, "could not retire a UDP socket; queries queued on it are lost");
        return;
    }
    let mut answered = 0;
    // Bounded in rounds as well as datagrams: a round may read nothing.
    for _ in 0..RETIRE_MAX {
        if answered >= RETIRE_MAX {
            return;
        }
        match tokio::time::timeout(RETIRE_POLL, sock.readable()).await {
            Ok(Ok(())) => answered += drain(sock, resolver, rx, tx, obs, 1).await.0,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "udp socket failed while retiring");
                return;
            }
            Err(_) => return,
        }
    }
}

/// One query of a batch: a reply is queued in `tx`, a miss goes to the resolver.
fn handle(
    sock: &Arc<UdpFd>,
    pkt: &[u8],
    src: Option<SocketAddr>,
    now: Instant,
    resolver: &Arc<Resolver>,
    tx: &mut SendBatch,
    obs: &mut Observer,
) {
    // A reply to port 0 cannot be delivered, and answering it would only reflect.
    let Some(src) = src.filter(|s| s.port() != 0) else {
        return;
    };
    let Some(out) = tx.next_buf() else {
        resolver.stats().dropped_one(DropReason::Send);
        return;
    };
    match resolver.fast(pkt, Proto::Udp, src, now, out, obs) {
        Fast::Reply => tx.commit(src),
        Fast::Drop => {}
        Fast::Slow(miss) => {
            let reply_to = UdpReply {
                sock: sock.clone(),
                dst: src,
            };
            if resolver.resolve(miss, reply_to, out) {
                tx.commit(src);
            }
        }
    }
}

/// The way back for a miss: the socket its query came in on, and the client's address.
struct UdpReply {
    sock: Arc<UdpFd>,
    dst: SocketAddr,
}

impl ReplyTo for UdpReply {
    async fn send(self, reply: Vec<u8>, stats: &Arc<Stats>) {
        send(&self.sock, &reply, self.dst, stats).await;
    }

    fn send_now(self, reply: &[u8], stats: &Arc<Stats>, tasks: &TaskTracker) {
        if try_send(&self.sock, reply, self.dst, stats) {
            // A full socket buffer: the retry waits in a task rather than here, in the
            // upstream socket's reader.
            let (reply, stats) = (reply.to_vec(), stats.clone());
            tasks.spawn(async move { resend(&self.sock, &reply, self.dst, &stats).await });
        }
    }
}

/// How long a send that found the socket buffer full waits before its one retry. Sockets
/// are watched for readability only ([`UdpFd`]), so there is no writability to wait for.
const SEND_PAUSE: Duration = Duration::from_millis(1);

/// Sends a batch's replies in as few `sendmmsg` calls as the kernel allows. On a full socket
/// buffer it pauses once, then drops (and counts) what is left: a client retries, and a loop
/// stuck on one slow batch would stop reading everyone else's queries.
async fn flush(sock: &UdpFd, tx: &mut SendBatch, stats: &Stats) {
    let mut waited = false;
    while tx.pending() > 0 {
        match tx.send(sock.socket().as_fd()) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock && !waited => {
                waited = true;
                tokio::time::sleep(SEND_PAUSE).await;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => {
                stats.dropped_one(DropReason::Send);
                tx.skip_one();
            }
        }
    }
    for _ in 0..tx.pending() {
        stats.dropped_one(DropReason::Send);
    }
    tx.clear();
}

/// Sends one reply; on a full socket buffer, once more after [`SEND_PAUSE`].
async fn send(sock: &UdpFd, reply: &[u8], dst: SocketAddr, stats: &Stats) {
    if try_send(sock, reply, dst, stats) {
        resend(sock, reply, dst, stats).await;
    }
}

/// Sends one reply now. True when the socket buffer was full (the caller retries once);
/// any other failure is counted.
fn try_send(sock: &UdpFd, reply: &[u8], dst: SocketAddr, stats: &Stats) -> bool {
    match sock.socket().send_to(reply, dst) {
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Err(_) => {
            stats.dropped_one(DropReason::Send);
            false
        }
    }
}

/// The one retry of a reply that found the socket buffer full: after [`SEND_PAUSE`], then
/// dropped and counted.
async fn resend(sock: &UdpFd, reply: &[u8], dst: SocketAddr, stats: &Stats) {
    tokio::time::sleep(SEND_PAUSE).await;
    if sock.socket().send_to(reply, dst).is_err() {
        stats.dropped_one(DropReason::Send);
    }
}
