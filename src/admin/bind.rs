//! Binding the admin listeners: the TCP port, held by one process at a time and taken over
//! when it frees up, and the unix socket file, replaced when stale and removed at exit.

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use super::Routes;
use super::serve;
use crate::config;

/// Connections the kernel queues for the admin TCP listener while every slot is busy.
const TCP_BACKLOG: i32 = 128;
/// While another process holds the admin port, binding is retried after this, doubling up
/// to [`RETRY_MAX`]: the port is free again once a draining predecessor exits.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The admin listeners, bound and not serving yet.
pub struct Endpoint {
    tcp: Option<Tcp>,
    unix: Option<(UnixListener, SocketFile)>,
}

/// The admin TCP listener, or the address it waits to take over.
enum Tcp {
    Bound(TcpListener, SocketAddr),
    InUse(SocketAddr),
}

impl Endpoint {
    /// Binds what `cfg` asks for; `None` when both listeners are off. An admin address in
    /// use by another process is not an error: it is retried once serving ([`Endpoint::serve`]).
    pub fn bind(cfg: &config::Admin) -> anyhow::Result<Option<Endpoint>> {
        let unix = match &cfg.socket {
            Some(path) => Some(
                bind_unix(path)
                    .with_context(|| format!("binding admin socket {}", path.display()))?,
            ),
            None => None,
        };
        let tcp = match cfg.address {
            Some(addr) => Some(
                match crate::listener::bind_tcp_exclusive(addr, TCP_BACKLOG) {
                    Ok(l) => {
                        let local = l.local_addr()?;
                        Tcp::Bound(l, local)
                    }
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        tracing::warn!(
                            "admin address {addr} in use (another nodedns draining?): serving DNS, retrying"
                        );
                        Tcp::InUse(addr)
                    }
                    Err(e) => return Err(e).with_context(|| format!("binding admin {addr}")),
                },
            ),
            None => None,
        };
        Ok((tcp.is_some() || unix.is_some()).then_some(Endpoint { tcp, unix }))
    }

    /// The admin TCP address (with the real port where the config said 0), if enabled; the
    /// configured address while another process holds it.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| match t {
            Tcp::Bound(_, a) | Tcp::InUse(a) => *a,
        })
    }

    /// Serves both listeners until `stop`; an admin port in use is retried meanwhile.
    pub(super) async fn serve(self, routes: Arc<Routes>, stop: CancellationToken) {
        let tcp = async {
            let (listener, addr) = match self.tcp {
                Some(Tcp::Bound(l, a)) => (l, a),
                Some(Tcp::InUse(a)) => match take_over(a, &stop).await {
                    Some(l) => (l, a),
                    None => return,
                },
                None => return,
            };
            tracing::info!(address = %addr, "admin endpoint serving /metrics /health /ready");
            serve::accept_loop(listener, routes.clone(), stop.clone()).await;
        };
        let unix = async {
            if let Some((listener, file)) = self.unix {
                tracing::info!(socket = %file.path.display(), "admin socket serving /metrics /health /ready");
                serve::accept_loop(listener, routes.clone(), stop.clone()).await;
                drop(file);
            }
        };
        tokio::join!(tcp, unix);
    }
}

/// Binds `addr` once it is free: retried with a bounded back-off until `stop`.
async fn take_over(addr: SocketAddr, stop: &CancellationToken) -> Option<TcpListener> {
    let mut pause = RETRY_FIRST;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return None,
        }
        match crate::listener::bind_tcp_exclusive(addr, TCP_BACKLOG) {
            Ok(l) => {
                tracing::info!("admin address {addr} bound: it was free again");
                return Some(l);
            }
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                tracing::debug!("admin address {addr} still in use: retrying in {pause:?}");
            }
            Err(e) => tracing::warn!("binding admin {addr}: {e}: retrying"),
        }
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// The socket file this process created; removed when dropped, unless another process has
/// replaced it meanwhile (then the file is theirs).
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if ours && let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!("removing admin socket {}: {e}", self.path.display());
        }
    }
}

/// Binds a unix socket at `path`. A file left there by an earlier process (a container
/// restart keeps the pod's volume) is removed first; a socket a live process still answers
/// on is not taken from it.
fn bind_unix(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    match probe_socket_file(path) {
        SocketFileState::Absent => {}
        SocketFileState::Live => {
            anyhow::bail!("another process is serving on it");
        }
        SocketFileState::Stale => {
            std::fs::remove_file(path).context("removing the stale socket file")?;
            tracing::info!("removed stale admin socket {}", path.display());
        }
    }
    let listener = UnixListener::bind(path)?;
    let meta = std::fs::symlink_metadata(path)?;
    let file = SocketFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok((listener, file))
}

enum SocketFileState {
    Absent,
    Live,
    Stale,
}

/// Whether a process accepts connections on the socket at `path`. The connect does not
/// block: a full backlog (`EAGAIN`) means a live, busy process.
fn probe_socket_file(path: &Path) -> SocketFileState {
    let Ok(addr) = SockAddr::unix(path) else {
        return SocketFileState::Stale;
    };
    let sock = match Socket::new(Domain::UNIX, Type::STREAM, None) {
        Ok(s) => s,
        Err(_) => return SocketFileState::Stale,
    };
    let _ = sock.set_nonblocking(true);
    match sock.connect(&addr) {
        Ok(()) => SocketFileState::Live,
        Err(e) if e.kind() == io::ErrorKind::NotFound => SocketFileState::Absent,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => SocketFileState::Live,
        Err(_) => SocketFileState::Stale,
    }
}
