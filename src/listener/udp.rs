//! The UDP serving loop: one per socket, several sockets per address (one per worker).
//!
//! Cache hits and malformed queries are answered inline, with one receive buffer and one
//! reply buffer reused for every packet. Misses are handed to a task that replies from the
//! same socket when the upstream answer arrives.
//!
//! On shutdown the socket is connected to its own address before it is given up: the kernel's
//! `SO_REUSEPORT` selection skips connected sockets, so from then on every new query goes to
//! the sockets still listening (the successor's, during a rollout), while the datagrams
//! already queued on this one stay queued (`connect` does not flush them) and are answered.
//! Closing instead would drop that queue, and a socket left listening would keep receiving a
//! share of new queries it would never answer. Misses still in flight reply from the same
//! socket afterwards: a connected UDP socket may still `sendto` any address on Linux.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{Fast, Handler, Proto};
use crate::stats::DropReason;

/// Largest datagram read; anything longer is cut by the kernel and fails parsing.
const RECV_BUF: usize = 4096;

/// Queued datagrams answered at most after shutdown; the receive buffer bounds the queue to
/// far fewer, this only bounds the loop.
const RETIRE_MAX: usize = 1 << 16;

/// After shutdown, the queue counts as empty once nothing came for this long. A wait, not
/// one non-blocking try: the reactor may not have seen the readiness of the last datagrams.
const RETIRE_POLL: Duration = Duration::from_millis(50);

/// Serves `sock` until `shutdown` fires. Tasks for misses are tracked by `tasks` so the
/// caller can drain them.
pub async fn serve(
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut buf = vec![0u8; RECV_BUF];
    let mut out = Vec::with_capacity(RECV_BUF);
    loop {
        let received = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = shutdown.cancelled() => break,
        };
        match received {
            Ok((n, src)) => {
                let pkt = buf.get(..n).unwrap_or_default();
                answer(&sock, &handler, &tasks, pkt, src, &mut out).await;
            }
            Err(e) => tracing::debug!(error = %e, "udp receive failed"),
        }
    }
    retire(&sock, &handler, &tasks, &mut buf, &mut out).await;
}

/// Stops new queries from arriving on `sock` (see the module doc), then answers the ones
/// the kernel had already queued on it.
async fn retire(
    sock: &Arc<UdpSocket>,
    handler: &Arc<Handler>,
    tasks: &TaskTracker,
    buf: &mut [u8],
    out: &mut Vec<u8>,
) {
    let connected = match sock.local_addr() {
        Ok(local) => sock.connect(local).await,
        Err(e) => Err(e),
    };
    if let Err(e) = connected {
        tracing::warn!(error = %e, "could not retire a UDP socket; queries queued on it are lost");
        return;
    }
    for _ in 0..RETIRE_MAX {
        match tokio::time::timeout(RETIRE_POLL, sock.recv_from(buf)).await {
            Ok(Ok((n, src))) => {
                let pkt = buf.get(..n).unwrap_or_default();
                answer(sock, handler, tasks, pkt, src, out).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "udp receive failed"),
            Err(_) => return,
        }
    }
}

/// Answers one datagram: inline when the cache or a refusal can, else from a task.
async fn answer(
    sock: &Arc<UdpSocket>,
    handler: &Arc<Handler>,
    tasks: &TaskTracker,
    pkt: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
) {
    // A reply to port 0 cannot be delivered, and answering it would only reflect.
    if src.port() == 0 {
        return;
    }
    match handler.fast(pkt, Proto::Udp, src, out) {
        Fast::Reply => send(sock, out, src, handler).await,
        Fast::Drop => {}
        Fast::Slow => {
            let (sock, handler, pkt) = (sock.clone(), handler.clone(), pkt.to_vec());
            tasks.spawn(async move {
                if let Some(reply) = handler.slow(&pkt, Proto::Udp, src).await {
                    send(&sock, &reply, src, &handler).await;
                }
            });
        }
    }
}

async fn send(sock: &UdpSocket, reply: &[u8], dst: SocketAddr, handler: &Handler) {
    let sent = match sock.try_send_to(reply, dst) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => sock.send_to(reply, dst).await,
        r => r,
    };
    if sent.is_err() {
        handler.stats().dropped_one(DropReason::Send);
    }
}
