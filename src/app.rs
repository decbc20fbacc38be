//! Lifecycle: bind everything, then run; reload in place; on a signal, stop reading, drain,
//! and save the cache.
//!
//! [`Server::bind`] binds every socket (and restores a cache snapshot) before anything is
//! served, so a start-up failure leaves nothing half running. [`Server::run`] serves until
//! its shutdown future completes, applying reloads asked for through [`Control`] or noticed
//! by the file watch; then it stops accepting, lets in-flight queries finish for
//! `drain_timeout`, and writes the snapshot. Tests call `bind` and `run` in-process, where
//! everything runs on the caller's runtime; [`run_blocking`] is what the binary calls: the
//! caller's thread runs TCP, reloads and signals, and each worker gets an OS thread with its
//! own single-threaded runtime that owns the worker's UDP sockets and the misses they start,
//! so a cache hit never wakes another thread (DESIGN.md §2).
//! A listen address another process already serves (the pod this one replaces) is joined
//! only once every zone has an upstream that answered, or once the other lets go
//! ([`crate::handover`]); serving, and so readiness, begins when every address is bound.
//! The admin endpoint (`/metrics`, `/health`, `/ready`) is bound with the DNS sockets, is
//! never shared with another process (an admin port held by a draining predecessor is taken
//! over once it is free, see [`crate::admin`]), says not-ready as soon as shutdown begins,
//! and closes (removing its unix socket file) last.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Readiness};
use crate::config::Config;
use crate::handler::Handler;
use crate::handover;
use crate::listener::{self, tcp};
use crate::metrics::Metrics;
use crate::netsetup::Keeper;
use crate::reload::{self, Control, Source};
use crate::snapshot;
use crate::stats::{Stats, inc};

/// How often binding a port-0 address is retried when the UDP port picked by the kernel is
/// taken for TCP.
const PORT_ZERO_TRIES: usize = 8;

/// The sockets of one configured listen address.
struct Bound {
    local: SocketAddr,
    /// One per worker; registered with a runtime by the worker that serves it.
    udp: Vec<std::net::UdpSocket>,
    tcp: TcpListener,
}

/// Serving listen addresses, by address as configured: the bound address and the token
/// that stops its listeners.
type Running = HashMap<SocketAddr, (SocketAddr, CancellationToken)>;

/// Every socket bound, nothing running yet.
pub struct Server {
    handler: Arc<Handler>,
    /// In config order, keyed by the address as configured (port 0 stays 0 here).
    bound: Vec<(SocketAddr, Bound)>,
    /// Listen addresses another process serves (the pod this one replaces in a rollout):
    /// bound once every zone has an upstream that answered, or once the other lets go, so a
    /// process that cannot forward never takes a share of the node's queries.
    deferred: Vec<SocketAddr>,
    current: Config,
    workers: usize,
    source: Option<Source>,
    watch_interval: Duration,
    requests: (
        mpsc::Sender<reload::Request>,
        mpsc::Receiver<reload::Request>,
    ),
    local: Arc<Mutex<Vec<SocketAddr>>>,
    /// Runtimes of the worker threads, by worker; empty: UDP is served on the caller's.
    worker_rts: Vec<tokio::runtime::Handle>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    /// The admin listeners, when `[admin] address` or `socket` is set.
    admin: Option<admin::Endpoint>,
}

impl Server {
    /// Binds UDP (one socket per worker) and TCP on every listen address and restores the
    /// cache snapshot if one is configured. Must run inside a tokio runtime.
    pub fn bind(cfg: &Config) -> anyhow::Result<Server> {
        let workers = worker_count(cfg);
        let stats = Arc::new(Stats::default());
        stats
            .last_reload_ok_unix
            .store(unix_now(), Ordering::Relaxed);
        let handler = Arc::new(Handler::new(cfg, stats.clone()));
        let mut bound = Vec::new();
        let mut deferred = Vec::new();
        for &addr in &cfg.listen.addresses {
            if handover::served_elsewhere(addr) {
                tracing::info!(address = %addr, "served by another process (a rollout?): joining once every zone's upstreams answer");
                deferred.push(addr);
                continue;
            }
            bound.push((addr, bind_address(addr, workers)?));
        }
        let admin = admin::bind(&cfg.admin)?;
        log_config(cfg);
        if let Some(path) = &cfg.cache.snapshot {
            // Before serving, so readiness means warm: the serving process's copy, or the file.
            snapshot::warm_start(handler.cache(), path, |qname| handler.ttl_policy(qname));
        }
        let local = bound.iter().map(|(_, b)| b.local).collect();
        let zones = handler.clone();
        let ready = Arc::new(Readiness::new(Box::new(move || zones.unanswered_zone())));
        Ok(Server {
            metrics: Arc::new(Metrics::new(handler.clone())),
            handler,
            bound,
            deferred,
            current: cfg.clone(),
            workers,
            source: None,
            watch_interval: reload::WATCH_INTERVAL,
            requests: mpsc::channel(4),
            local: Arc::new(Mutex::new(local)),
            worker_rts: Vec::new(),
            ready,
            admin,
        })
    }

    /// Enables reloading from `source`: on [`Control::reload`] and whenever the config file
    /// or a resolv.conf it names changes (checked every `watch_interval`).
    pub fn with_source(mut self, source: Source, watch_interval: Duration) -> Server {
        self.source = Some(source);
        self.watch_interval = watch_interval;
        self
    }

    /// The bound addresses, in config order (with the real port where the config said 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local.lock().clone()
    }

    /// The addresses this process serves or will serve: the bound ones and those it joins
    /// once ready ([`handover`]), for the node's interface.
    pub fn planned_addrs(&self) -> Vec<SocketAddr> {
        let mut all = self.local_addrs();
        all.extend(&self.deferred);
        all
    }

    pub fn handler(&self) -> &Arc<Handler> {
        &self.handler
    }

    /// The admin address (with the real port where the config said 0), if enabled; the
    /// configured address while another process still holds it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(admin::Endpoint::tcp_addr)
    }

    /// The exporter behind `/metrics`, to render without HTTP.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A handle to ask the running server to reload, and to see its addresses.
    pub fn control(&self) -> Control {
        Control {
            tx: self.requests.0.clone(),
            local: self.local.clone(),
        }
    }

    /// Serves until `shutdown` completes, then drains and saves the cache snapshot.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let conns = Arc::new(Semaphore::new(self.current.listen.tcp_max_connections));
        let mut running: Running = HashMap::new();
        for (addr, bound) in std::mem::take(&mut self.bound) {
            let token = cancel.child_token();
            running.insert(addr, (bound.local, token.clone()));
            self.spawn(bound, &token, &tasks, &conns);
        }
        let admin_stop = CancellationToken::new();
        let admin_task = self.admin.take().map(|endpoint| {
            let (m, r, s) = (self.metrics.clone(), self.ready.clone(), admin_stop.clone());
            tokio::spawn(admin::serve(endpoint, m, r, s))
        });
        // Warm rollouts: periodic snapshot writes, and the next process's request answered.
        let snapshots = self.current.cache.snapshot.as_ref().map(|path| {
            let encode = snapshot_encoder(self.handler.clone());
            snapshot::Keeper::start(path, self.current.cache.snapshot_interval, encode)
        });
        // Readiness waits for every zone's upstreams to answer; ask them now rather than
        // waiting for a client's miss (an idle node may never send one).
        self.handler.upstreams().probe_unanswered();
        if self.deferred.is_empty() {
            self.ready.set_serving();
            tracing::info!(addresses = ?self.local_addrs(), "nodedns serving");
        }
        let mut join = tokio::time::interval(handover::CHECK_INTERVAL);
        join.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fingerprint = self.fingerprint();
        // The first check one interval from now, not at once: the fingerprint was just
        // taken, and an immediate tick would race a reload asked for meanwhile.
        let first = tokio::time::Instant::now() + self.watch_interval;
        let mut watch = tokio::time::interval_at(first, self.watch_interval);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = join.tick(), if !self.deferred.is_empty() => {
                    self.join_deferred(&mut running, &cancel, &tasks, &conns);
                }
                Some(reply) = self.requests.1.recv() => {
                    let result = self.reload(&mut running, &cancel, &tasks, &conns);
                    fingerprint = self.fingerprint();
                    let _ = reply.send(result);
                }
                _ = watch.tick(), if self.source.is_some() => {
                    let now = self.fingerprint();
                    if now != fingerprint {
                        tracing::info!("config or resolv.conf changed: reloading");
                        let _ = self.reload(&mut running, &cancel, &tasks, &conns);
                        // Taken after the attempt even when it failed: a bad file is
                        // reported once, not every interval until it is fixed.
                        fingerprint = self.fingerprint();
                    }
                }
            }
        }
        // Not ready first, so probes and the rollout move on while in-flight queries finish.
        self.ready.set_draining();
        let drain = self.current.listen.drain_timeout;
        tracing::info!(grace = ?drain, "shutting down: stopped reading, draining in-flight queries");
        cancel.cancel();
        tasks.close();
        if tokio::time::timeout(drain, tasks.wait()).await.is_err() {
            tracing::warn!("drain grace ran out with queries still in flight");
        } else {
            tracing::info!("drained");
        }
        if let Some(keeper) = snapshots {
            keeper.stop().await;
        }
        if let Some(path) = &self.current.cache.snapshot {
            save(&self.handler, path, self.current.cache.stale_max);
        }
        admin_stop.cancel();
        // Awaited so the socket file is gone before the process exits.
        if let Some(task) = admin_task {
            let _ = task.await;
        }
    }

    fn spawn(
        &self,
        bound: Bound,
        token: &CancellationToken,
        tasks: &TaskTracker,
        conns: &Arc<Semaphore>,
    ) {
        let l = &self.current.listen;
        let limits = tcp::Limits {
            max_connections: l.tcp_max_connections,
            idle_timeout: l.tcp_idle_timeout,
            max_pipelined: l.tcp_max_pipelined,
        };
        for (i, sock) in bound.udp.into_iter().enumerate() {
            let (h, c, t) = (self.handler.clone(), token.clone(), tasks.clone());
            // Registered inside the task, so with the reactor of the runtime that serves it.
            let serve = async move {
                match listener::sys::UdpFd::new(sock) {
                    Ok(sock) => listener::udp::serve(Arc::new(sock), h, c, t).await,
                    Err(e) => tracing::error!(error = %e, "registering a UDP socket failed"),
                }
            };
            match self.worker_rts.get(i) {
                Some(rt) => tasks.spawn_on(serve, rt),
                None => tasks.spawn(serve),
            };
        }
        let (h, c, t) = (self.handler.clone(), token.clone(), tasks.clone());
        tasks.spawn(tcp::serve(bound.tcp, h, limits, conns.clone(), c, t));
    }

    /// Binds the deferred addresses that may be joined now: all of them once every zone has
    /// an upstream that answered, any one another process no longer serves. Serving (and so
    /// readiness) begins when none is left.
    fn join_deferred(
        &mut self,
        running: &mut Running,
        cancel: &CancellationToken,
        tasks: &TaskTracker,
        conns: &Arc<Semaphore>,
    ) {
        let answered = self.handler.unanswered_zone().is_none();
        for addr in std::mem::take(&mut self.deferred) {
            if !answered && handover::served_elsewhere(addr) {
                self.deferred.push(addr);
                continue;
            }
            match bind_address(addr, self.workers) {
                Ok(bound) => {
                    tracing::info!(address = %addr, upstreams_answered = answered, "joined the listen address");
                    let token = cancel.child_token();
                    running.insert(addr, (bound.local, token.clone()));
                    self.spawn(bound, &token, tasks, conns);
                }
                Err(e) => {
                    // Held by something that does not share it (another program, another
                    // user): stay not ready, and say why each time it is tried.
                    tracing::warn!(address = %addr, "binding a deferred listen address failed: {e:#}");
                    self.deferred.push(addr);
                }
            }
        }
        self.update_local(running);
        if self.deferred.is_empty() {
            self.ready.set_serving();
            tracing::info!(addresses = ?self.local_addrs(), "nodedns serving");
        }
    }

    /// The bound addresses in config order, from what is running.
    fn update_local(&self, running: &Running) {
        *self.local.lock() = self
            .current
            .listen
            .addresses
            .iter()
            .filter_map(|a| running.get(a).map(|r| r.0))
            .collect();
    }

    fn fingerprint(&self) -> u32 {
        self.source
            .as_ref()
            .map_or(0, |s| reload::fingerprint(s, &self.current))
    }

    /// Loads the config again and applies it. New listen addresses are bound before any
    /// old one is closed; on any error nothing changes.
    fn reload(
        &mut self,
        running: &mut Running,
        cancel: &CancellationToken,
        tasks: &TaskTracker,
        conns: &Arc<Semaphore>,
    ) -> Result<(), String> {
        let stats = self.handler.stats().clone();
        let result = self.try_reload(running, cancel, tasks, conns);
        match &result {
            Ok(()) => {
                inc(&stats.reloads_ok);
                stats
                    .last_reload_ok_unix
                    .store(unix_now(), Ordering::Relaxed);
                let zones: Vec<&str> = self.current.zones.iter().map(|z| z.name.as_str()).collect();
                tracing::info!(zones = ?zones, addresses = ?self.local_addrs(), "config reloaded");
            }
            Err(e) => {
                inc(&stats.reloads_failed);
                for line in e.lines() {
                    tracing::error!("config reload refused, old config keeps serving: {line}");
                }
            }
        }
        result
    }

    fn try_reload(
        &mut self,
        running: &mut Running,
        cancel: &CancellationToken,
        tasks: &TaskTracker,
        conns: &Arc<Semaphore>,
    ) -> Result<(), String> {
        let source = self
            .source
            .as_ref()
            .ok_or("no config source to reload from")?;
        let cfg = source.load().map_err(|e| e.to_string())?;
        if worker_count(&cfg) != self.workers {
            tracing::warn!("listen.workers changed: applies at the next restart");
        }
        let mut fresh = Vec::new();
        for &addr in cfg
            .listen
            .addresses
            .iter()
            .filter(|a| !running.contains_key(a) && !self.deferred.contains(a))
        {
            fresh.push((
                addr,
                bind_address(addr, self.workers).map_err(|e| format!("{e:#}"))?,
            ));
        }
        self.current = cfg;
        for (addr, bound) in fresh {
            let token = cancel.child_token();
            running.insert(addr, (bound.local, token.clone()));
            self.spawn(bound, &token, tasks, conns);
        }
        let keep = &self.current.listen.addresses;
        running.retain(|addr, (_, token)| {
            let keep = keep.contains(addr);
            if !keep {
                token.cancel();
            }
            keep
        });
        self.deferred.retain(|a| keep.contains(a));
        self.update_local(running);
        self.handler.reconfigure(&self.current);
        self.handler.upstreams().probe_unanswered();
        Ok(())
    }
}

/// One line per zone at start-up: what this process forwards where (a reload logs its own).
fn log_config(cfg: &Config) {
    for z in &cfg.zones {
        tracing::info!(
            zone = %z.name,
            upstreams = ?z.upstreams,
            transport = ?z.transport,
            policy = ?z.policy,
            "zone configured"
        );
    }
}

fn worker_count(cfg: &Config) -> usize {
    match cfg.listen.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The current cache in the snapshot format, for the periodic writes and the hand-over.
fn snapshot_encoder(handler: Arc<Handler>) -> impl Fn() -> snapshot::Encoded + Clone + Send + Sync {
    move || snapshot::encode(handler.cache(), handler.cache().stale_max())
}

fn save(handler: &Handler, path: &std::path::Path, stale_max: Duration) {
    match snapshot::write(handler.cache(), path, stale_max) {
        Ok(n) => tracing::info!(entries = n, "cache snapshot written to {}", path.display()),
        Err(e) => tracing::warn!("cache snapshot {} not written: {e}", path.display()),
    }
}

/// Binds one address: `workers` UDP sockets and one TCP listener on the same port.
fn bind_address(addr: SocketAddr, workers: usize) -> anyhow::Result<Bound> {
    let tries = if addr.port() == 0 { PORT_ZERO_TRIES } else { 1 };
    let mut last_err = None;
    for _ in 0..tries {
        let first = listener::bind_udp_std(addr).with_context(|| format!("binding UDP {addr}"))?;
        let local = first.local_addr()?;
        match listener::bind_tcp(local) {
            Ok(tcp) => {
                let mut udp = vec![first];
                for _ in 1..workers {
                    let sock = listener::bind_udp_std(local)
                        .with_context(|| format!("binding UDP {local}"))?;
                    udp.push(sock);
                }
                return Ok(Bound { local, udp, tcp });
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "binding TCP {addr}: {}",
        last_err.map_or_else(|| "unknown error".to_string(), |e| e.to_string())
    ))
}

/// Runs the daemon until SIGTERM or SIGINT, reloading on SIGHUP: the binary's main loop.
/// The calling thread is the control thread; each worker gets its own thread and runtime.
pub fn run_blocking(cfg: Config, source: Source) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let mut threads = Vec::new();
    let mut handles = Vec::new();
    for i in 0..worker_count(&cfg) {
        let (handle, thread) = match start_worker(i, stop.clone()) {
            Ok(w) => w,
            Err(e) => {
                stop.cancel();
                return Err(e);
            }
        };
        handles.push(handle);
        threads.push(thread);
    }
    let served = current_thread_runtime().and_then(|rt| {
        rt.block_on(async {
            let mut server = Server::bind(&cfg)?.with_source(source, reload::WATCH_INTERVAL);
            server.worker_rts = handles;
            forward_sighup(server.control())?;
            // After binding (IP_FREEBIND makes the order free), before serving.
            let interface = Keeper::start(&cfg.interface, &server.planned_addrs()).await?;
            let shutdown = signal()?;
            server.run(shutdown).await;
            if let Some(interface) = interface {
                interface.stop().await;
            }
            Ok(())
        })
    });
    // `run` has drained the workers' tasks (or its grace ran out): stop their runtimes.
    stop.cancel();
    for t in threads {
        let _ = t.join();
    }
    served
}

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

/// Starts worker `index`: a thread driving its own runtime until `stop`. Work arrives
/// through the returned handle.
fn start_worker(
    index: usize,
    stop: CancellationToken,
) -> anyhow::Result<(tokio::runtime::Handle, std::thread::JoinHandle<()>)> {
    let rt = current_thread_runtime()?;
    let handle = rt.handle().clone();
    let thread = std::thread::Builder::new()
        .name(format!("nodedns-w{index}"))
        .spawn(move || rt.block_on(stop.cancelled()))
        .context("starting a worker thread")?;
    Ok((handle, thread))
}

/// Turns every SIGHUP into a reload request.
fn forward_sighup(control: Control) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading");
            // The outcome is logged by the server.
            let _ = control.reload().await;
        }
    });
    Ok(())
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
