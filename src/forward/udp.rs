//! One query over UDP to one upstream (RFC 5452 §9): a fresh socket per query, so the source
//! port is random, `connect()`ed so the kernel drops datagrams from any other address, and a
//! reply accepted only when [`wire::check_reply`] says it answers what we sent.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::timeout_at;

use crate::stats::{Stats, inc};
use crate::wire;

use super::ExchangeError;

/// Largest upstream datagram we read. We advertise 1232, but an upstream may ignore it; a
/// datagram longer than this is cut by the kernel, fails the checks and is ignored.
const RECV_BUF: usize = 4096;

/// Sends `query` (ID already set) to `addr` and waits up to `limit` for a matching reply.
pub async fn exchange(
    addr: SocketAddr,
    query: &[u8],
    limit: Duration,
    stats: &Stats,
) -> Result<Vec<u8>, ExchangeError> {
    let deadline = tokio::time::Instant::now() + limit;
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(addr).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let n = match timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Err(ExchangeError::Timeout),
            // ECONNREFUSED after an ICMP port unreachable: the upstream is not listening.
            Ok(Err(e)) => return Err(ExchangeError::Network(e)),
            Ok(Ok(n)) => n,
        };
        let reply = buf.get(..n).unwrap_or_default();
        match wire::check_reply(query, reply) {
            Ok(()) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // A forged or stale datagram: count it and keep waiting for the genuine one,
            // which an off-path attacker racing us must not be able to displace.
            Err(_) => inc(&stats.spoof_mismatches),
        }
    }
}
