//! Lifecycle: bind everything, then run; reload in place; on a signal, stop reading, drain,
//! and save the cache.
//!
//! [`Server::bind`] binds every socket (and restores a cache snapshot) before anything is
//! served, so a start-up failure leaves nothing half running. [`Server::run`] serves until
//! its shutdown future completes, applying reloads asked for through [`Control`], by SIGHUP
//! ([`Server::reload_on_sighup`]) or noticed by the file watch (`apply`); then it stops
//! accepting, lets in-flight queries finish for `drain_timeout`, and writes the snapshot.
//! What a running server holds (shutdown signal, task tracker, connection cap, worker
//! runtimes, served addresses) lives in one struct (`lifecycle`).
//!
//! Each worker has a runtime that serves its UDP socket of every address and the misses
//! those sockets start. [`run_blocking`], what the binary calls, gives each worker an OS
//! thread with its own single-threaded runtime (`workers`), so a cache hit never wakes
//! another thread (DESIGN.md §2), while the caller's thread runs TCP, reloads and signals.
//! Tests bind with [`Server::bind`] in-process: every worker then runs on the caller's
//! runtime, through the same per-worker path.
//!
//! A listen address another process already serves (the pod this one replaces) is joined
//! only once every zone has an upstream that answered, or once the other lets go
//! ([`crate::handover`]); serving, and so readiness, begins when every address is bound.
//! The admin endpoint (`/metrics`, `/health`, `/ready`, `/top`) is bound with the DNS
//! sockets, is never shared with another process (an admin port held by a draining
//! predecessor is taken over once it is free, see [`crate::admin`]), says not-ready as soon
//! as shutdown begins, and closes (removing its unix socket file) last.

mod apply;
mod lifecycle;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Readiness};
use crate::config::Config;
use crate::handover;
use crate::listener::{Bound, bind_address};
use crate::metrics::Metrics;
use crate::netsetup::Keeper;
use crate::reload::{self, ConfigSource, Control};
use crate::resolve::Resolver;
use crate::snapshot;
use crate::stats::Stats;

use lifecycle::Lifecycle;
use workers::{Workers, current_thread_runtime};

/// Every socket bound, nothing running yet.
pub struct Server {
    resolver: Arc<Resolver>,
    /// In config order, keyed by the address as configured (port 0 stays 0 here).
    bound: Vec<(SocketAddr, Bound)>,
    /// Listen addresses another process serves (the pod this one replaces in a rollout):
    /// bound once every zone has an upstream that answered, or once the other lets go, so a
    /// process that cannot forward never takes a share of the node's queries.
    deferred: Vec<SocketAddr>,
    current: Config,
    /// One per worker (and so one UDP socket per worker on every address).
    runtimes: Vec<Handle>,
    /// The bound addresses, in config order, shared with [`Control`].
    local: Arc<Mutex<Vec<SocketAddr>>>,
    reloads: Reloads,
    admin: Admin,
}

/// Where reloads come from.
struct Reloads {
    /// Where the config is read again; `None`: reloads are refused.
    source: Option<ConfigSource>,
    /// How often the config file and the resolv.conf files it names are checked.
    watch_interval: Duration,
    requests: (
        mpsc::Sender<reload::Request>,
        mpsc::Receiver<reload::Request>,
    ),
    /// SIGHUP, once [`Server::reload_on_sighup`] installed it.
    hangup: Option<Signal>,
}

/// The admin endpoint and what it answers from.
struct Admin {
    /// The listeners, when `[admin] address` or `socket` is set.
    endpoint: Option<admin::Endpoint>,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

impl Server {
    /// Binds UDP (one socket per worker) and TCP on every listen address and restores the
    /// cache snapshot if one is configured; every worker runs on the current runtime. Must
    /// run inside a tokio runtime.
    pub fn bind(cfg: &Config) -> anyhow::Result<Server> {
        Server::bind_on(cfg, vec![Handle::current(); worker_count(cfg)])
    }

    /// [`Server::bind`] with one runtime per worker, `runtimes` (at least one).
    fn bind_on(cfg: &Config, runtimes: Vec<Handle>) -> anyhow::Result<Server> {
        anyhow::ensure!(!runtimes.is_empty(), "no worker runtime");
        let stats = Arc::new(Stats::default());
        stats
            .last_reload_ok_unix
            .store(unix_now(), Ordering::Relaxed);
        let resolver = Arc::new(Resolver::new(cfg, stats.clone()));
        let mut bound = Vec::new();
        let mut deferred = Vec::new();
        for &addr in &cfg.listen.addresses {
            if handover::served_elsewhere(addr) {
                tracing::info!(address = %addr, "served by another process (a rollout?): joining once every zone's upstreams answer");
                deferred.push(addr);
                continue;
            }
            bound.push((addr, bind_address(addr, runtimes.len())?));
        }
        let endpoint = admin::bind(&cfg.admin)?;
        log_config(cfg);
        if let Some(path) = &cfg.cache.snapshot {
            // Before serving, so readiness means warm: the serving process's copy, or the file.
            snapshot::warm_start(resolver.cache(), path, |qname| resolver.ttl_policy(qname));
        }
        let local = bound.iter().map(|(_, b)| b.local).collect();
        let zones = resolver.clone();
        let ready = Arc::new(Readiness::new(Box::new(move || zones.unanswered_zone())));
        let metrics = Metrics::new(stats, resolver.cache(), &resolver.upstream_status());
        Ok(Server {
            resolver,
            bound,
            deferred,
            current: cfg.clone(),
            runtimes,
            local: Arc::new(Mutex::new(local)),
            reloads: Reloads {
                source: None,
                watch_interval: reload::WATCH_INTERVAL,
                requests: mpsc::channel(4),
                hangup: None,
            },
            admin: Admin {
                endpoint,
                metrics: Arc::new(metrics),
                ready,
            },
        })
    }

    /// Enables reloading from `source`: on [`Control::reload`] and whenever the config file
    /// or a resolv.conf it names changes (checked every `watch_interval`).
    pub fn with_source(mut self, source: ConfigSource, watch_interval: Duration) -> Server {
        self.reloads.source = Some(source);
        self.reloads.watch_interval = watch_interval;
        self
    }

    /// Reloads on every SIGHUP too (the binary's behaviour).
    pub fn reload_on_sighup(mut self) -> anyhow::Result<Server> {
        let hangup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
        self.reloads.hangup = Some(hangup);
        Ok(self)
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

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// The admin address (with the real port where the config said 0), if enabled; the
    /// configured address while another process still holds it.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .endpoint
            .as_ref()
            .and_then(admin::Endpoint::tcp_addr)
    }

    /// A handle to ask the running server to reload, and to see its addresses.
    pub fn control(&self) -> Control {
        Control {
            tx: self.reloads.requests.0.clone(),
            local: self.local.clone(),
        }
    }

    /// Serves until `shutdown` completes, then drains and saves the cache snapshot.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let (runtimes, listen) = (self.runtimes.clone(), &self.current.listen);
        let mut life = Lifecycle::new(self.resolver.clone(), runtimes, listen);
        for (addr, bound) in std::mem::take(&mut self.bound) {
            life.serve(addr, bound, &self.current.listen);
        }
        let admin_stop = CancellationToken::new();
        let admin_task = self.serve_admin(admin_stop.clone());
        // Warm rollouts: periodic snapshot writes, and the next process's request answered.
        let snapshots = self.current.cache.snapshot.as_ref().map(|path| {
            let encode = snapshot_encoder(self.resolver.clone());
            snapshot::Keeper::start(path, self.current.cache.snapshot_interval, encode)
        });
        // Readiness waits for every zone's upstreams to answer; ask them now rather than
        // waiting for a client's miss (an idle node may never send one).
        self.resolver.probe_unanswered();
        if self.deferred.is_empty() {
            self.admin.ready.set_serving();
            tracing::info!(addresses = ?self.local_addrs(), "nodedns serving");
        }
        self.serve_until(&mut life, shutdown).await;
        // Not ready first, so probes and the rollout move on while in-flight queries finish.
        self.admin.ready.set_draining();
        let drain = self.current.listen.drain_timeout;
        tracing::info!(grace = ?drain, "shutting down: stopped reading, draining in-flight queries");
        life.drain(drain).await;
        if let Some(keeper) = snapshots {
            keeper.stop().await;
        }
        if let Some(path) = &self.current.cache.snapshot {
            save(&self.resolver, path, self.current.cache.stale_max);
        }
        admin_stop.cancel();
        // Awaited so the socket file is gone before the process exits.
        if let Some(task) = admin_task {
            let _ = task.await;
        }
    }

    /// Starts the admin endpoint, if one is bound, until `stop`.
    fn serve_admin(&mut self, stop: CancellationToken) -> Option<JoinHandle<()>> {
        let endpoint = self.admin.endpoint.take()?;
        let (metrics, resolver) = (self.admin.metrics.clone(), self.resolver.clone());
        let scrape =
            Box::new(move || metrics.render(resolver.cache(), &resolver.upstream_status()));
        let ready = self.admin.ready.clone();
        let resolver = self.resolver.clone();
        let top = Box::new(move |seconds, n| {
            let now = tokio::time::Instant::now();
            resolver.top().report(seconds, n, now).to_json()
        });
        // Not tracked: it serves through the drain and is awaited after it.
        Some(tokio::spawn(admin::serve(
            endpoint, scrape, ready, top, stop,
        )))
    }

    /// Joins deferred addresses and applies reloads until `shutdown` completes.
    async fn serve_until(&mut self, life: &mut Lifecycle, shutdown: impl Future<Output = ()>) {
        let mut join = tokio::time::interval(handover::CHECK_INTERVAL);
        join.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fingerprint = self.fingerprint();
        // The first check one interval from now, not at once: the fingerprint was just
        // taken, and an immediate tick would race a reload asked for meanwhile.
        let every = self.reloads.watch_interval;
        let mut watch = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = join.tick(), if !self.deferred.is_empty() => self.join_deferred(life),
                Some(reply) = self.reloads.requests.1.recv() => {
                    let result = self.reload(life);
                    fingerprint = self.fingerprint();
                    let _ = reply.send(result);
                }
                Some(()) = hangup(&mut self.reloads.hangup) => {
                    tracing::info!("SIGHUP received: reloading");
                    // The outcome is logged by `reload`.
                    let _ = self.reload(life);
                    fingerprint = self.fingerprint();
                }
                _ = watch.tick(), if self.reloads.source.is_some() => {
                    if self.fingerprint() != fingerprint {
                        tracing::info!("config or resolv.conf changed: reloading");
                        let _ = self.reload(life);
                        // Taken after the attempt even when it failed: a bad file is
                        // reported once, not every interval until it is fixed.
                        fingerprint = self.fingerprint();
                    }
                }
            }
        }
    }
}

/// The next SIGHUP, if it is watched; never otherwise.
async fn hangup(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
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

/// Workers the config asks for: `listen.workers`, or one per CPU for 0.
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
fn snapshot_encoder(
    resolver: Arc<Resolver>,
) -> impl Fn() -> snapshot::Encoded + Clone + Send + Sync {
    move || snapshot::encode(resolver.cache(), resolver.cache().stale_max())
}

fn save(resolver: &Resolver, path: &std::path::Path, stale_max: Duration) {
    match snapshot::write(resolver.cache(), path, stale_max) {
        Ok(n) => tracing::info!(entries = n, "cache snapshot written to {}", path.display()),
        Err(e) => tracing::warn!("cache snapshot {} not written: {e}", path.display()),
    }
}

/// Runs the daemon until SIGTERM or SIGINT, reloading on SIGHUP: the binary's main loop.
/// The calling thread is the control thread; each worker gets its own thread and runtime.
pub fn run_blocking(cfg: Config, source: ConfigSource) -> anyhow::Result<()> {
    let workers = Workers::start(worker_count(&cfg))?;
    let served = current_thread_runtime()?.block_on(async {
        let server = Server::bind_on(&cfg, workers.runtimes())?
            .with_source(source, reload::WATCH_INTERVAL)
            .reload_on_sighup()?;
        // After binding (IP_FREEBIND makes the order free), before serving.
        let interface = Keeper::start(&cfg.interface, &server.planned_addrs()).await?;
        let shutdown = terminated()?;
        server.run(shutdown).await;
        if let Some(interface) = interface {
            interface.stop().await;
        }
        Ok(())
    });
    // `run` has drained the workers' tasks (or its grace ran out): stop their runtimes.
    drop(workers);
    served
}

/// Completes on the first SIGTERM or SIGINT.
fn terminated() -> anyhow::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
