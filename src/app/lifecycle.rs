//! The lifecycle state of a running server, in one place: the shutdown signal every
//! listener watches, the tracker of every task the drain waits for, the shared cap on client
//! TCP connections, the worker runtimes, and which listen addresses are served.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::listener::{self, Bound, TcpClients, tcp};
use crate::resolve::Resolver;
use crate::sys::UdpFd;

pub(super) struct Lifecycle {
    resolver: Arc<Resolver>,
    /// One per worker: each serves its worker's UDP socket of every address, and the misses
    /// those sockets start.
    runtimes: Vec<Handle>,
    /// Cancelled when shutdown begins; each address's token is a child.
    shutdown: CancellationToken,
    /// Listeners, client TCP connections and every task a query starts (the resolver's
    /// tracker): what the drain waits for.
    tasks: TaskTracker,
    /// Client TCP connections, capped across every listener.
    connections: Arc<Semaphore>,
    /// Client TCP connections by client, across every listener.
    tcp_clients: Arc<TcpClients>,
    /// Serving listen addresses, by address as configured: the bound address and the token
    /// that stops its listeners.
    running: HashMap<SocketAddr, (SocketAddr, CancellationToken)>,
}

impl Lifecycle {
    pub fn new(resolver: Arc<Resolver>, runtimes: Vec<Handle>, cfg: &config::Listen) -> Self {
        Lifecycle {
            tasks: resolver.tasks().clone(),
            resolver,
            runtimes,
            shutdown: CancellationToken::new(),
            connections: Arc::new(Semaphore::new(cfg.tcp_max_connections)),
            tcp_clients: TcpClients::new(cfg.clients.tcp_max_connections),
            running: HashMap::new(),
        }
    }

    /// Serves `bound`, the sockets of listen address `addr`, with the limits of `cfg`: each
    /// UDP socket on its worker's runtime, TCP on the caller's.
    pub fn serve(&mut self, addr: SocketAddr, bound: Bound, cfg: &config::Listen) {
        let token = self.shutdown.child_token();
        self.running.insert(addr, (bound.local, token.clone()));
        let limits = tcp::Limits {
            idle_timeout: cfg.tcp_idle_timeout,
            max_pipelined: cfg.tcp_max_pipelined,
        };
        for (sock, rt) in bound.udp.into_iter().zip(self.runtimes.iter().cycle()) {
            let (r, c) = (self.resolver.clone(), token.clone());
            // Registered inside the task, so with the reactor of the runtime that serves it.
            let serve = async move {
                match UdpFd::new(sock) {
                    Ok(sock) => listener::udp::serve(Arc::new(sock), r, c).await,
                    Err(e) => tracing::error!(error = %e, "registering a UDP socket failed"),
                }
            };
            self.tasks.spawn_on(serve, rt);
        }
        let (r, c, t) = (self.resolver.clone(), token, self.tasks.clone());
        let conns = (self.connections.clone(), self.tcp_clients.clone());
        self.tasks
            .spawn(tcp::serve(bound.tcp, r, limits, conns, c, t));
    }

    /// Applies the reloaded per-client TCP limit to connections opened from now on.
    pub fn set_limits(&self, cfg: &config::Listen) {
        self.tcp_clients.set_limit(cfg.clients.tcp_max_connections);
    }

    pub fn is_serving(&self, addr: &SocketAddr) -> bool {
        self.running.contains_key(addr)
    }

    /// Stops serving every address not in `keep`.
    pub fn keep_only(&mut self, keep: &[SocketAddr]) {
        self.running.retain(|addr, (_, token)| {
            let keep = keep.contains(addr);
            if !keep {
                token.cancel();
            }
            keep
        });
    }

    /// The bound addresses of `order` (addresses as configured) that are served, in order.
    pub fn local_addrs(&self, order: &[SocketAddr]) -> Vec<SocketAddr> {
        order
            .iter()
            .filter_map(|a| self.running.get(a).map(|r| r.0))
            .collect()
    }

    /// Stops reading on every address and waits up to `grace` for what is in flight.
    pub async fn drain(self, grace: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain grace ran out with queries still in flight");
        } else {
            tracing::info!("drained");
        }
    }
}
