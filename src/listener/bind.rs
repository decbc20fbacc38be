//! Binding one listen address: a UDP socket per worker and one TCP listener, on one port.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

use super as listener;

/// How often binding a port-0 address is retried when the UDP port picked by the kernel is
/// taken for TCP.
const PORT_ZERO_TRIES: usize = 8;

/// The sockets of one configured listen address.
pub struct Bound {
    pub local: SocketAddr,
    /// One per worker; registered with a runtime by the worker that serves it.
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: TcpListener,
}

/// Why a listen address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding {proto} {addr}: {source}")]
pub struct BindError {
    proto: &'static str,
    addr: SocketAddr,
    source: io::Error,
}

impl BindError {
    fn udp(addr: SocketAddr) -> impl FnOnce(io::Error) -> BindError {
        move |source| BindError {
            proto: "UDP",
            addr,
            source,
        }
    }
}

/// Binds one address: `workers` UDP sockets and one TCP listener on the same port.
pub fn bind_address(addr: SocketAddr, workers: usize) -> Result<Bound, BindError> {
    let tries = if addr.port() == 0 { PORT_ZERO_TRIES } else { 1 };
    let mut last_err = None;
    for _ in 0..tries {
        let first = listener::bind_udp_std(addr).map_err(BindError::udp(addr))?;
        let local = first.local_addr().map_err(BindError::udp(addr))?;
        match listener::bind_tcp(local) {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..workers {
                    udp.push(listener::bind_udp_std(local).map_err(BindError::udp(local))?);
                }
                return Ok(Bound { local, udp, tcp });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(BindError {
        proto: "TCP",
        addr,
        source: last_err.unwrap_or_else(|| io::Error::other("unknown error")),
    })
}
