//! The TCP serving loop (RFC 7766): framing, pipelining, limits.
//!
//! Each connection reads 2-byte-length frames and answers them as they complete, out of
//! order when a miss is slower than a later hit (RFC 7766 §6.2.1.1), up to
//! `tcp_max_pipelined` at once. A frame shorter than a DNS header or longer than any query
//! can be closes the connection: the stream can no longer be trusted to be in sync. Idle
//! connections close after `tcp_idle_timeout`; connections beyond `tcp_max_connections`
//! are closed on accept. One client holds at most `tcp_max_connections_per_client`: one
//! more closes its oldest idle connection, or is closed on accept when none is idle
//! ([`TcpClients`]).
//!
//! On shutdown nothing a client already sent is dropped: connections the kernel completed
//! but nobody accepted yet are accepted before the listener closes (closing would reset
//! them), and open connections go on answering until they have been idle for
//! [`SHUTDOWN_IDLE`], so a query written just before the signal still gets its answer.
//! A handshake that completes between that last accept and the close is still reset unless
//! the node sets `net.ipv4.tcp_migrate_req = 1`, which moves it to the successor's listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tcp_clients::{Opened, Seat, TcpClients};
use crate::resolve::{Fast, Observer, Proto, ReplyTo, Resolver};
use crate::stats::{DropReason, Stats};
use crate::wire;

/// Largest client frame accepted. A query is one question plus at most an OPT with a few
/// options (and perhaps a TSIG, which we ignore); nothing legitimate comes near this.
pub const MAX_QUERY_FRAME: usize = 4096;

/// After shutdown, a connection closes once no query arrived for this long.
pub const SHUTDOWN_IDLE: Duration = Duration::from_millis(500);

/// After shutdown, the listener closes once no connection was waiting for this long.
const SHUTDOWN_POLL: Duration = Duration::from_millis(50);

/// Connections accepted at most after shutdown (the listen backlog).
const SHUTDOWN_ACCEPT_MAX: usize = 1024;

/// Limits for one client TCP connection. The cap on connections is the semaphore
/// [`serve`] is given, shared by every listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_pipelined: usize,
}

/// Accepts connections on `listener` until `shutdown` fires. `connections` caps them
/// across every listener, and `clients` per client.
pub async fn serve(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    limits: Limits,
    (connections, clients): (Arc<Semaphore>, Arc<TcpClients>),
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let spawn = |stream: TcpStream, peer: SocketAddr| {
        let stats = resolver.stats();
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            stats.dropped_one(DropReason::TcpConnections);
            return; // dropping the stream closes it
        };
        let slots = limits.max_pipelined.max(1);
        let pipelined = Arc::new(Semaphore::new(slots));
        let seat = match clients.open(peer.ip(), pipelined.clone(), slots) {
            Opened::Seated { seat, closed_idle } => {
                if closed_idle {
                    stats.client_limited.tcp_idle_closed();
                }
                seat
            }
            Opened::Refused => {
                stats.dropped_one(DropReason::TcpConnections);
                return;
            }
        };
        let (resolver, shutdown) = (resolver.clone(), shutdown.clone());
        tasks.spawn(async move {
            let stats = resolver.stats();
            stats.tcp_connections.fetch_add(1, Ordering::Relaxed);
            let conn = Connection {
                pipelined,
                seat,
                limits,
            };
            connection(stream, &resolver, conn, shutdown).await;
            stats.tcp_connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        if let Ok((stream, peer)) = accepted {
            spawn(stream, peer);
        }
    }
    // Connections the kernel already completed are taken before the listener closes. The
    // short wait (rather than one non-blocking try) lets the reactor see a connection whose
    // readiness event it has not processed yet; the count bounds it while the listener, still
    // in the SO_REUSEPORT group, keeps getting new ones.
    for _ in 0..SHUTDOWN_ACCEPT_MAX {
        match tokio::time::timeout(SHUTDOWN_POLL, listener.accept()).await {
            Ok(Ok((stream, peer))) => spawn(stream, peer),
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
}

/// What one connection is given: its pipelining slots (which say whether it is idle) and
/// its seat among its client's connections.
struct Connection {
    pipelined: Arc<Semaphore>,
    seat: Seat,
    limits: Limits,
}

async fn connection(
    stream: TcpStream,
    resolver: &Arc<Resolver>,
    conn: Connection,
    shutdown: CancellationToken,
) {
    let Connection {
        pipelined,
        seat,
        limits,
    } = conn;
    let _ = stream.set_nodelay(true);
    // For the query log only; a connection whose peer is already gone logs the unspecified
    // address.
    let peer = stream
        .peer_addr()
        .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
    let (rd, wr) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Vec<u8>>(limits.max_pipelined.max(1));
    // Not tracked: it ends with this connection, which awaits it.
    let writer = tokio::spawn(write_frames(wr, rx));
    let mut rd = BufReader::new(rd);
    let mut out = Vec::new();
    let mut obs = resolver.tcp_observer();
    let (mut idle, mut draining) = (limits.idle_timeout, false);
    loop {
        let read = tokio::time::timeout(idle, read_frame(&mut rd));
        tokio::pin!(read);
        let frame = tokio::select! {
            f = &mut read => f,
            // The frame being read is not abandoned (that would lose it, or desynchronise
            // the stream): it gets SHUTDOWN_IDLE more, and so does each one after it.
            _ = shutdown.cancelled(), if !draining => {
                (idle, draining) = (SHUTDOWN_IDLE, true);
                tokio::time::timeout(SHUTDOWN_IDLE, &mut read).await.and_then(|f| f)
            }
            // A newer connection of this client took its seat while it was idle.
            _ = seat.close.cancelled() => break,
        };
        let frame = match frame {
            Ok(Ok(frame)) => frame,
            Ok(Err(FrameError::Closed)) => break,
            Ok(Err(FrameError::Bad)) => {
                resolver.stats().dropped_one(DropReason::TcpFrame);
                break;
            }
            // Idle. Answers still owed are sent before the close: the writer runs until the
            // last task holding a sender is done.
            Err(_) => break,
        };
        if !answer(resolver, &frame, peer, &tx, &pipelined, &mut out, &mut obs).await {
            break;
        }
    }
    // The writer ends once every pending answer has been sent and every sender is gone.
    drop(tx);
    let _ = writer.await;
}

/// Answers one query frame: a reply ready at once is queued on `tx`, a miss goes to the
/// resolver once a pipelining slot is free. False: the connection is closing.
async fn answer(
    resolver: &Arc<Resolver>,
    frame: &[u8],
    peer: SocketAddr,
    tx: &mpsc::Sender<Vec<u8>>,
    pipelined: &Arc<Semaphore>,
    out: &mut Vec<u8>,
    obs: &mut Observer,
) -> bool {
    let received = Instant::now();
    let ready = match resolver.fast(frame, Proto::Tcp, peer, received, out, obs) {
        Fast::Reply => true,
        Fast::Drop => false,
        Fast::Slow(miss) => {
            // Waiting for a permit stops reading: back-pressure instead of unbounded tasks.
            let Ok(permit) = pipelined.clone().acquire_owned().await else {
                return false;
            };
            let reply_to = TcpReply {
                tx: tx.clone(),
                _permit: permit,
            };
            resolver.resolve(miss, reply_to, out)
        }
    };
    let sent = !ready || tx.send(out.clone()).await.is_ok();
    // Queued for the connection's writer: as far as a reply's time is followed here.
    resolver.settle(obs, Proto::Tcp, received);
    sent
}

/// The way back for a miss: the connection's writer, and the pipelining slot the miss holds
/// until its answer is queued.
struct TcpReply {
    tx: mpsc::Sender<Vec<u8>>,
    _permit: OwnedSemaphorePermit,
}

impl ReplyTo for TcpReply {
    async fn send(self, reply: Vec<u8>, _stats: &Arc<Stats>) {
        // A closed writer: the client is gone, nothing to count.
        let _ = self.tx.send(reply).await;
    }
}

enum FrameError {
    Closed,
    Bad,
}

async fn read_frame(rd: &mut BufReader<OwnedReadHalf>) -> Result<Vec<u8>, FrameError> {
    let len = usize::from(rd.read_u16().await.map_err(|_| FrameError::Closed)?);
    if !(wire::HEADER_LEN..=MAX_QUERY_FRAME).contains(&len) {
        return Err(FrameError::Bad);
    }
    let mut frame = vec![0u8; len];
    rd.read_exact(&mut frame)
        .await
        .map_err(|_| FrameError::Closed)?;
    Ok(frame)
}

async fn write_frames(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    let mut wr = BufWriter::new(wr);
    while let Some(msg) = rx.recv().await {
        let Ok(len) = u16::try_from(msg.len()) else {
            continue;
        };
        if wr.write_all(&len.to_be_bytes()).await.is_err() || wr.write_all(&msg).await.is_err() {
            return;
        }
        // Flush when nothing else is queued, so pipelined answers share segments.
        if rx.is_empty() && wr.flush().await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}
