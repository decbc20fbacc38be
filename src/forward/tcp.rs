//! Reused, pipelined TCP connections to one upstream (RFC 7766 §6.2).
//!
//! Each upstream keeps at most one open connection. Queries are written to it as they come
//! and replies are matched by ID, in any order. The connection closes after an idle period
//! with nothing pending, or when the upstream closes it; the next query opens a new one.
//! Used for zones with `transport = "tcp"` (kube-dns, to stay clear of UDP conntrack) and to
//! retry a truncated UDP reply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::stats::{Stats, inc};
use crate::wire;

use super::ExchangeError;

/// Queries pending on one connection at most; beyond it a query fails fast rather than
/// queueing without bound behind a stalled upstream.
const MAX_PENDING: usize = 1024;

struct Request {
    query: Vec<u8>,
    reply: oneshot::Sender<Vec<u8>>,
}

/// The TCP side of one upstream.
pub struct TcpPool {
    addr: SocketAddr,
    idle: Duration,
    conn: Mutex<Option<mpsc::Sender<Request>>>,
    stats: Arc<Stats>,
}

impl TcpPool {
    pub fn new(addr: SocketAddr, idle: Duration, stats: Arc<Stats>) -> TcpPool {
        TcpPool {
            addr,
            idle,
            conn: Mutex::new(None),
            stats,
        }
    }

    /// Sends `query` over the shared connection (opening one if needed) and waits until
    /// `deadline` (or until dropped, without one) for the reply that matches it. The ID in
    /// `query` is replaced by one unused on the connection.
    pub async fn exchange(
        &self,
        query: &[u8],
        deadline: Option<Instant>,
    ) -> Result<Vec<u8>, ExchangeError> {
        let work = async {
            let tx = self.connection().await?;
            let (reply_tx, reply_rx) = oneshot::channel();
            let req = Request {
                query: query.to_vec(),
                reply: reply_tx,
            };
            tx.send(req).await.map_err(|_| closed())?;
            reply_rx.await.map_err(|_| closed())
        };
        let Some(deadline) = deadline else {
            return work.await;
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(r) => r,
            Err(_) => Err(ExchangeError::Timeout),
        }
    }

    async fn connection(&self) -> Result<mpsc::Sender<Request>, ExchangeError> {
        if let Some(tx) = self.conn.lock().as_ref().filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let stream = TcpStream::connect(self.addr).await?;
        // Queries are small and latency-bound: never wait to coalesce segments.
        stream.set_nodelay(true)?;
        let (tx, rx) = mpsc::channel(64);
        // Not tracked: the connection closes itself once idle, and the misses the drain
        // waits for are what it serves.
        tokio::spawn(run_connection(stream, rx, self.idle, self.stats.clone()));
        *self.conn.lock() = Some(tx.clone());
        Ok(tx)
    }
}

fn closed() -> ExchangeError {
    ExchangeError::Network(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "upstream TCP connection closed",
    ))
}

/// Owns one connection: writes queries, dispatches replies, closes when idle.
async fn run_connection(
    stream: TcpStream,
    mut requests: mpsc::Receiver<Request>,
    idle: Duration,
    stats: Arc<Stats>,
) {
    let (rd, mut wr) = stream.into_split();
    let (frames_tx, mut frames) = mpsc::channel(64);
    // Reading runs in its own task because a frame read is not cancel-safe inside select!.
    // Not tracked: aborted when this connection ends.
    let reader = tokio::spawn(read_frames(rd, frames_tx));
    let mut pending: HashMap<u16, (Vec<u8>, oneshot::Sender<Vec<u8>>)> = HashMap::new();
    loop {
        tokio::select! {
            req = requests.recv() => {
                let Some(req) = req else { break };
                if send_query(&mut wr, &mut pending, req).await.is_err() {
                    break;
                }
            }
            frame = frames.recv() => {
                let Some(frame) = frame else { break };
                dispatch(&mut pending, frame, &stats);
            }
            _ = tokio::time::sleep(idle), if pending.is_empty() => break,
        }
    }
    reader.abort();
}

async fn send_query(
    wr: &mut OwnedWriteHalf,
    pending: &mut HashMap<u16, (Vec<u8>, oneshot::Sender<Vec<u8>>)>,
    mut req: Request,
) -> std::io::Result<()> {
    // Callers that gave up (timed out) leave entries behind; sweep them before adding.
    pending.retain(|_, (_, tx)| !tx.is_closed());
    if pending.len() >= MAX_PENDING || req.query.len() < wire::HEADER_LEN {
        return Ok(()); // dropping `req.reply` fails that caller fast
    }
    let id = loop {
        let id: u16 = rand::random();
        if !pending.contains_key(&id) {
            break id;
        }
    };
    req.query[..2].copy_from_slice(&id.to_be_bytes());
    let len = u16::try_from(req.query.len()).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(req.query.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&req.query);
    wr.write_all(&frame).await?;
    pending.insert(id, (req.query, req.reply));
    Ok(())
}

fn dispatch(
    pending: &mut HashMap<u16, (Vec<u8>, oneshot::Sender<Vec<u8>>)>,
    frame: Vec<u8>,
    stats: &Stats,
) {
    let Some(id) = frame.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
        return;
    };
    let Some((sent, _)) = pending.get(&id) else {
        inc(&stats.spoof_mismatches);
        return;
    };
    if wire::check_reply(sent, &frame).is_err() {
        inc(&stats.spoof_mismatches);
        return;
    }
    if let Some((_, tx)) = pending.remove(&id) {
        let _ = tx.send(frame);
    }
}

async fn read_frames(rd: OwnedReadHalf, frames: mpsc::Sender<Vec<u8>>) {
    let mut rd = BufReader::new(rd);
    loop {
        let len = match rd.read_u16().await {
            Ok(len) => usize::from(len),
            Err(_) => return,
        };
        let mut frame = vec![0u8; len];
        if rd.read_exact(&mut frame).await.is_err() || frames.send(frame).await.is_err() {
            return;
        }
    }
}
