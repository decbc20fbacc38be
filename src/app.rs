//! Lifecycle: bind everything, then run; on a signal, stop reading and drain.
//!
//! [`Server::bind`] validates nothing (the config already is) but binds every socket before
//! anything is served, so a start-up failure leaves nothing half running. [`Server::run`]
//! serves until its shutdown future completes, then stops accepting, lets in-flight queries
//! finish for `drain_timeout`, and returns. Tests call `bind` and `run` in-process;
//! [`run_blocking`] is what the binary calls.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::handler::Handler;
use crate::listener::{self, tcp};
use crate::stats::Stats;

/// How often binding a port-0 address is retried when the UDP port picked by the kernel is
/// taken for TCP.
const PORT_ZERO_TRIES: usize = 8;

/// Every socket bound, nothing running yet.
pub struct Server {
    handler: Arc<Handler>,
    udp: Vec<Arc<tokio::net::UdpSocket>>,
    tcp: Vec<tokio::net::TcpListener>,
    local: Vec<SocketAddr>,
    limits: tcp::Limits,
    drain: std::time::Duration,
}

impl Server {
    /// Binds UDP (one socket per worker) and TCP on every listen address. Must run inside a
    /// tokio runtime.
    pub fn bind(cfg: &Config) -> anyhow::Result<Server> {
        let workers = match cfg.listen.workers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let mut server = Server {
            handler: Arc::new(Handler::new(cfg, Arc::new(Stats::default()))),
            udp: Vec::new(),
            tcp: Vec::new(),
            local: Vec::new(),
            limits: tcp::Limits {
                max_connections: cfg.listen.tcp_max_connections,
                idle_timeout: cfg.listen.tcp_idle_timeout,
                max_pipelined: cfg.listen.tcp_max_pipelined,
            },
            drain: cfg.listen.drain_timeout,
        };
        for &addr in &cfg.listen.addresses {
            let (udp, tcp, local) = bind_address(addr, workers)?;
            server.udp.extend(udp.into_iter().map(Arc::new));
            server.tcp.push(tcp);
            server.local.push(local);
        }
        Ok(server)
    }

    /// The bound addresses, in config order (with the real port where the config said 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    pub fn handler(&self) -> &Arc<Handler> {
        &self.handler
    }

    /// Serves until `shutdown` completes, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let conns = Arc::new(Semaphore::new(self.limits.max_connections));
        for sock in self.udp {
            let (h, c, t) = (self.handler.clone(), cancel.clone(), tasks.clone());
            tasks.spawn(listener::udp::serve(sock, h, c, t));
        }
        for l in self.tcp {
            let (h, c, t) = (self.handler.clone(), cancel.clone(), tasks.clone());
            tasks.spawn(tcp::serve(l, h, self.limits, conns.clone(), c, t));
        }
        tracing::info!(addresses = ?self.local, "nodedns serving");
        shutdown.await;
        tracing::info!(grace = ?self.drain, "shutting down: stopped reading, draining in-flight queries");
        cancel.cancel();
        tasks.close();
        if tokio::time::timeout(self.drain, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain grace ran out with queries still in flight");
        } else {
            tracing::info!("drained");
        }
    }
}

/// Binds one address: `workers` UDP sockets and one TCP listener on the same port.
fn bind_address(
    addr: SocketAddr,
    workers: usize,
) -> anyhow::Result<(
    Vec<tokio::net::UdpSocket>,
    tokio::net::TcpListener,
    SocketAddr,
)> {
    let tries = if addr.port() == 0 { PORT_ZERO_TRIES } else { 1 };
    let mut last_err = None;
    for _ in 0..tries {
        let first = listener::bind_udp(addr).with_context(|| format!("binding UDP {addr}"))?;
        let local = first.local_addr()?;
        match listener::bind_tcp(local) {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..workers {
                    udp.push(
                        listener::bind_udp(local)
                            .with_context(|| format!("binding UDP {local}"))?,
                    );
                }
                return Ok((udp, tcp, local));
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "binding TCP {addr}: {}",
        last_err.map_or_else(|| "unknown error".to_string(), |e| e.to_string())
    ))
}

/// Runs the daemon until SIGTERM or SIGINT: the binary's main loop.
pub fn run_blocking(cfg: Config) -> anyhow::Result<()> {
    let workers = match cfg.listen.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let server = Server::bind(&cfg)?;
        let shutdown = signal()?;
        server.run(shutdown).await;
        Ok(())
    })
}

/// Completes on the first SIGTERM or SIGINT.
fn signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
