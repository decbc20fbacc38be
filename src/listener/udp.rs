//! The UDP serving loop: one per socket, several sockets per address (one per worker).
//!
//! Cache hits and malformed queries are answered inline, with one receive buffer and one
//! reply buffer reused for every packet. Misses are handed to a task that replies from the
//! same socket when the upstream answer arrives.
//!
//! On shutdown the loop returns and the listening socket closes at once, even with misses
//! still in flight: while it stays open the kernel keeps handing it a share of new queries
//! (`SO_REUSEPORT`), which a draining process would never answer. A miss that completes
//! after that replies from a short-lived socket bound to the same address and connected to
//! the client, so the reply still leaves from the address the client asked.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::handler::{Fast, Handler, Proto};
use crate::stats::DropReason;

/// Largest datagram read; anything longer is cut by the kernel and fails parsing.
const RECV_BUF: usize = 4096;

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
            _ = shutdown.cancelled() => return,
        };
        let (n, src) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        // A reply to port 0 cannot be delivered, and answering it would only reflect.
        if src.port() == 0 {
            continue;
        }
        let pkt = buf.get(..n).unwrap_or_default();
        match handler.fast(pkt, Proto::Udp, &mut out) {
            Fast::Reply => send(&sock, &out, src, &handler).await,
            Fast::Drop => {}
            Fast::Slow => {
                // Weak: an in-flight miss must not keep the listening socket open on shutdown.
                let (weak, handler, pkt) = (Arc::downgrade(&sock), handler.clone(), pkt.to_vec());
                let Ok(local) = sock.local_addr() else {
                    continue;
                };
                tasks.spawn(async move {
                    if let Some(reply) = handler.slow(&pkt, Proto::Udp).await {
                        send_late(&weak, local, &reply, src, &handler).await;
                    }
                });
            }
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

/// Sends a miss's reply: from the listening socket while it is open, else (draining) from a
/// new socket on the same local address, connected to the client so it receives nothing
/// meant for the new process.
async fn send_late(
    listening: &Weak<UdpSocket>,
    local: SocketAddr,
    reply: &[u8],
    dst: SocketAddr,
    handler: &Handler,
) {
    if let Some(sock) = listening.upgrade() {
        return send(&sock, reply, dst, handler).await;
    }
    let sent = super::bind_udp(local).and_then(|s| {
        s.into_std()
            .and_then(|s| s.connect(dst).and_then(|()| s.send(reply)))
    });
    if sent.is_err() {
        handler.stats().dropped_one(DropReason::Send);
    }
}
