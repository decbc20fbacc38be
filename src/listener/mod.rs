//! Client-facing sockets: binding, and the UDP and TCP serving loops.
//!
//! This module owns how packets get in and out: `SO_REUSEPORT` so several workers (and,
//! during a rollout, two processes) share one DNS address, `IP_FREEBIND` so an address that
//! is not configured yet can be bound, and replies sent from the socket the query came in on,
//! so they always leave from the address the client asked; and one listen address's sockets
//! bound together on one port ([`bind_address`]). What to answer, and everything a miss
//! becomes, is [`crate::resolve`]'s job: a listener hands it each packet and, for a miss, its
//! way back to the client. It also binds the admin endpoint's TCP listener, which is never
//! shared ([`bind_tcp_exclusive`]).

mod bind;
pub mod tcp;
mod tcp_clients;
pub mod udp;

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys;

pub use bind::{BindError, Bound, bind_address};
pub use tcp_clients::TcpClients;

/// Kernel receive buffer asked for on UDP listeners: a burst of CI pods starting at once
/// must queue, not drop, while a worker is busy.
const UDP_RCVBUF: usize = 4 << 20;

fn socket(addr: SocketAddr, ty: Type, proto: Protocol, shared: bool) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(shared)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
        sock.set_freebind_v6(true)?;
    } else {
        sock.set_freebind_v4(true)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// A non-blocking UDP socket on `addr` that shares the address with its siblings, not yet
/// registered with any runtime (each worker registers its own with its runtime).
pub fn bind_udp_std(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = socket(addr, Type::DGRAM, Protocol::UDP, true)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = sock.set_recv_buffer_size(UDP_RCVBUF);
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// [`bind_udp_std`], registered with the current tokio runtime for reading.
pub fn bind_udp(addr: SocketAddr) -> io::Result<sys::UdpFd> {
    sys::UdpFd::new(bind_udp_std(addr)?)
}

/// A TCP listener on `addr` that shares the address with its siblings.
pub fn bind_tcp(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let sock = socket(addr, Type::STREAM, Protocol::TCP, true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    tokio::net::TcpListener::from_std(sock.into())
}

/// A TCP listener on `addr` that no other socket may share: without `SO_REUSEPORT`, a second
/// process binding the same address gets `EADDRINUSE` instead of half the connections.
/// `SO_REUSEADDR` still lets it bind while connections of an exited process linger in
/// TIME_WAIT. At most `backlog` connections wait in the kernel to be accepted.
pub fn bind_tcp_exclusive(addr: SocketAddr, backlog: i32) -> io::Result<tokio::net::TcpListener> {
    let sock = socket(addr, Type::STREAM, Protocol::TCP, false)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    tokio::net::TcpListener::from_std(sock.into())
}
