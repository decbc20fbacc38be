//! Kubernetes node mode (`[interface] manage = true`): the link that carries the listen
//! addresses, kept in place, the optional NOTRACK rules, and transparent mode's interception.
//!
//! This module owns the node's network state that nodedns creates: a dummy link (default
//! `nodedns`) with every listen IP as a host address (/32 or /128), re-checked every
//! `check_interval` and repaired, and the nftables table `inet nodedns` when `notrack` is
//! on. Every step is idempotent, so a second process (a rollout) or a restart after a crash
//! runs the same steps harmlessly.
//!
//! Where the kernel has no dummy driver (`EOPNOTSUPP`), the addresses go on the existing link
//! named by `fallback` (default `lo`) instead, said once at warn level; `fallback = ""`
//! makes that a start-up error. A host address on `lo` is as local as one on a dummy link,
//! so serving is the same.
//!
//! Nothing is removed on exit unless `teardown_on_exit = true`: the listeners bind with
//! `IP_FREEBIND` and `SO_REUSEPORT`, so the next process takes over the address while this
//! one drains, and removing it would cut the successor off (and a crash could not remove it
//! anyway, so leaving it is the only state that is the same after every kind of exit).
//!
//! Transparent mode (`[interface] intercept`) is the exception: the intercepted addresses
//! (the kube-dns ClusterIP) go on the link next to the others, and the table
//! `inet nodedns-intercept` keeps their DNS out of conntrack, so kube-proxy's DNAT never
//! sees it. On a clean exit of the last nodedns of the node ([`instances`]) the table goes
//! first, then the addresses, and pods reach kube-dns through kube-proxy again; during a
//! rollout, or after a crash, both stay (the next process serves them).

pub mod instances;
pub mod link;
mod nfnl;
pub mod nft;

use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use rtnetlink::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::Interface;
use link::LinkError;

/// The link that carries the addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carrier {
    /// A dummy link nodedns created (or found) under the configured name.
    Dummy(String),
    /// An existing link used because the kernel has no dummy driver.
    Fallback(String),
}

/// The managed state of one process: what it ensures, and where.
pub struct Managed {
    handle: Handle,
    cfg: Interface,
    /// Listen addresses whose IPs are managed (not unspecified, not loopback).
    listen: Vec<SocketAddr>,
    ips: Vec<IpAddr>,
    carrier: Carrier,
    /// Whether the last NOTRACK apply worked, so a failure is logged once, not every check.
    notrack_ok: Option<bool>,
    /// Whether the last interception apply worked, likewise.
    intercept_ok: Option<bool>,
    /// Held while running in transparent mode; `None` otherwise.
    instance: Option<instances::InstanceLock>,
}

impl Managed {
    /// Opens a netlink connection (on the current tokio runtime) and ensures link, addresses
    /// and rules once. `None` when `manage` is off or no listen address can be managed.
    pub async fn start(cfg: &Interface, listen: &[SocketAddr]) -> anyhow::Result<Option<Managed>> {
        if !cfg.manage {
            return Ok(None);
        }
        let listen = manageable(listen);
        if listen.is_empty() {
            tracing::warn!("interface.manage is on but no listen address is a specific IP");
            return Ok(None);
        }
        let instance = if cfg.intercept.is_empty() {
            None
        } else {
            Some(acquire_instance_lock(&cfg.instance_lock).await?)
        };
        let (conn, handle, _) = rtnetlink::new_connection().context("opening netlink")?;
        // Not tracked: the netlink socket's driver ends when its last handle (ours) drops.
        tokio::spawn(conn);
        let mut ips: Vec<IpAddr> = listen.iter().map(SocketAddr::ip).collect();
        ips.sort();
        ips.dedup();
        let mut managed = Managed {
            handle,
            cfg: cfg.clone(),
            listen,
            ips,
            carrier: Carrier::Dummy(cfg.name.clone()),
            notrack_ok: None,
            intercept_ok: None,
            instance,
        };
        managed.ensure().await?;
        tracing::info!(carrier = ?managed.carrier, addresses = ?managed.ips, "link-local addresses in place");
        Ok(Some(managed))
    }

    /// Makes sure the link exists and is up, carries every address, and (with `notrack`)
    /// the rules are loaded. Repairs are logged at info; a failed rule load only warns.
    pub async fn ensure(&mut self) -> anyhow::Result<()> {
        let index = self.carrier_index().await?;
        let have = link::addresses(&self.handle, index).await?;
        for &ip in &self.ips {
            if !have.contains(&ip) {
                link::add_address(&self.handle, index, ip)
                    .await
                    .with_context(|| format!("adding {ip} to {:?}", self.carrier))?;
                tracing::info!(%ip, carrier = ?self.carrier, "address added");
            }
        }
        if self.cfg.notrack {
            // Not for intercepted addresses: their rules are withdrawn on their own.
            let own: Vec<SocketAddr> = self
                .listen
                .iter()
                .filter(|a| !self.cfg.intercept.contains(&a.ip()))
                .copied()
                .collect();
            let ok = match run_nft(Change::Load(nft::notrack_table(&own))).await {
                Ok(()) => true,
                Err(e) => {
                    if self.notrack_ok != Some(false) {
                        tracing::warn!(error = %e, "NOTRACK rules not loaded; DNS still works, tracked");
                    }
                    false
                }
            };
            self.notrack_ok = Some(ok);
        }
        if !self.cfg.intercept.is_empty() {
            // After the addresses: an untracked query to an address not yet local would be
            // routed away instead of reaching kube-dns through kube-proxy.
            let table = nft::intercept_table(&self.cfg.intercept);
            let ok = match run_nft(Change::Load(table)).await {
                Ok(()) => true,
                Err(e) => {
                    if self.intercept_ok != Some(false) {
                        tracing::error!(error = %e, "interception rules not loaded: pods asking the intercepted addresses still reach kube-dns through kube-proxy");
                    }
                    false
                }
            };
            if ok && self.intercept_ok != Some(true) {
                tracing::info!(addresses = ?self.cfg.intercept, "intercepting DNS to these addresses");
            }
            self.intercept_ok = Some(ok);
        }
        Ok(())
    }

    /// The index of the carrier link, created (or switched to the fallback) as needed.
    async fn carrier_index(&mut self) -> anyhow::Result<u32> {
        loop {
            let name = match &self.carrier {
                Carrier::Dummy(n) | Carrier::Fallback(n) => n.clone(),
            };
            if let Some((index, up)) = link::find(&self.handle, &name).await? {
                if !up {
                    link::set_up(&self.handle, index).await?;
                    tracing::info!(link = %name, "link set up");
                }
                return Ok(index);
            }
            if let Carrier::Fallback(_) = self.carrier {
                return Err(LinkError::NoSuchLink(name).into());
            }
            match link::add_dummy(&self.handle, &name).await {
                Ok(()) => tracing::info!(link = %name, "dummy link created"),
                Err(LinkError::NoDummyDriver) if !self.cfg.fallback.is_empty() => {
                    tracing::warn!(
                        link = %name, fallback = %self.cfg.fallback,
                        "the kernel has no dummy link driver: putting the addresses on the fallback link"
                    );
                    self.carrier = Carrier::Fallback(self.cfg.fallback.clone());
                }
                Err(e @ LinkError::NoDummyDriver) => {
                    return Err(anyhow::Error::new(e).context(
                        "interface.fallback is empty, so there is nowhere to put the addresses",
                    ));
                }
                Err(e) => {
                    return Err(
                        anyhow::Error::new(e).context(format!("creating dummy link `{name}`"))
                    );
                }
            }
        }
    }

    /// Re-ensures every `check_interval` until `stop` fires; failures warn and are retried.
    pub async fn keep(mut self, stop: CancellationToken) -> Managed {
        let mut tick = tokio::time::interval(self.cfg.check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => return self,
            }
            if let Err(e) = self.ensure().await {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "link-local address check failed; retrying next interval"
                );
            }
        }
    }

    /// On exit: withdraws the interception when no other nodedns serves the node; removes
    /// rules, addresses and the link only with `teardown_on_exit`.
    pub async fn finish(self) {
        self.withdraw_interception().await;
        if !self.cfg.teardown_on_exit {
            tracing::info!(carrier = ?self.carrier, "leaving the link-local addresses in place for the next process");
            return;
        }
        if self.cfg.notrack
            && let Err(e) = run_nft(Change::Remove(nft::TABLE)).await
        {
            tracing::warn!(error = %e, "removing the NOTRACK table failed");
        }
        if let Err(e) = self.remove().await {
            tracing::warn!(
                error = format!("{e:#}"),
                "teardown of the link-local addresses failed"
            );
        } else {
            tracing::info!(carrier = ?self.carrier, "link-local addresses removed");
        }
    }

    /// The interception table, then the intercepted addresses, when this process is the
    /// last nodedns of the node; the exclusive lock is held until the process exits.
    async fn withdraw_interception(&self) {
        let Some(lock) = &self.instance else { return };
        if lock.last() == instances::Last::Others {
            tracing::info!(addresses = ?self.cfg.intercept, "another nodedns serves this node: interception stays");
            return;
        }
        // Rules first: while the address is still here, an untracked query still reaches
        // a socket; the other order would route it away.
        if let Err(e) = run_nft(Change::Remove(nft::INTERCEPT_TABLE)).await {
            tracing::warn!(error = %e, "removing the interception rules failed");
            return;
        }
        let result = async {
            let name = match &self.carrier {
                Carrier::Dummy(n) | Carrier::Fallback(n) => n,
            };
            if let Some((index, _)) = link::find(&self.handle, name).await? {
                for &ip in &self.cfg.intercept {
                    link::remove_address(&self.handle, index, ip).await?;
                }
            }
            Ok::<(), LinkError>(())
        }
        .await;
        match result {
            Ok(()) => {
                tracing::info!(addresses = ?self.cfg.intercept, "last nodedns of the node: interception withdrawn, pods reach kube-dns through kube-proxy")
            }
            Err(e) => tracing::warn!(error = %e, "removing the intercepted addresses failed"),
        }
    }

    async fn remove(&self) -> Result<(), LinkError> {
        let name = match &self.carrier {
            Carrier::Dummy(n) | Carrier::Fallback(n) => n,
        };
        let Some((index, _)) = link::find(&self.handle, name).await? else {
            return Ok(());
        };
        match self.carrier {
            // The link is ours: deleting it takes its addresses along.
            Carrier::Dummy(_) => link::delete(&self.handle, index).await,
            // The link is not ours: take back only what we added.
            Carrier::Fallback(_) => {
                for &ip in &self.ips {
                    link::remove_address(&self.handle, index, ip).await?;
                }
                Ok(())
            }
        }
    }
}

/// Ensures once, then keeps checking in a task; `stop` it at shutdown.
pub struct Keeper {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Managed>,
}

impl Keeper {
    /// Starts interface management for `cfg` (nothing when `manage` is off).
    pub async fn start(cfg: &Interface, listen: &[SocketAddr]) -> anyhow::Result<Option<Keeper>> {
        let Some(managed) = Managed::start(cfg, listen).await? else {
            return Ok(None);
        };
        let stop = CancellationToken::new();
        // Not tracked: the binary calls `Keeper::stop` once the server has drained, which
        // cancels it and awaits its handle.
        let task = tokio::spawn(managed.keep(stop.clone()));
        Ok(Some(Keeper { stop, task }))
    }

    /// Stops the checks and tears down if configured.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Ok(managed) = self.task.await {
            managed.finish().await;
        }
    }
}

/// The listen addresses whose IPs can be put on a link: a wildcard is not an address, and a
/// loopback address is local already.
fn manageable(listen: &[SocketAddr]) -> Vec<SocketAddr> {
    listen
        .iter()
        .filter(|a| !a.ip().is_unspecified() && !a.ip().is_loopback())
        .copied()
        .collect()
}

/// A change to one of nodedns's nftables tables.
enum Change {
    Load(nft::Table),
    Remove(&'static str),
}

async fn run_nft(change: Change) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || match change {
        Change::Load(table) => nft::apply(&table),
        Change::Remove(name) => nft::remove(name),
    })
    .await
    .context("nft task")?
}

async fn acquire_instance_lock(path: &std::path::Path) -> anyhow::Result<instances::InstanceLock> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || instances::InstanceLock::acquire(&p))
        .await
        .context("instance lock task")?
        .with_context(|| format!("taking the instance lock {}", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_specific_non_loopback_addresses_are_managed() {
        let listen: Vec<SocketAddr> = [
            "0.0.0.0:53",
            "127.0.0.1:53",
            "169.254.20.10:53",
            "[::]:53",
            "[fd00::a]:53",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let managed: Vec<String> = manageable(&listen)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(managed, ["169.254.20.10:53", "[fd00::a]:53"]);
    }

    #[test]
    fn host_prefixes_are_32_and_128() {
        assert_eq!(link::host_prefix("169.254.20.10".parse().unwrap()), 32);
        assert_eq!(link::host_prefix("fd00::a".parse().unwrap()), 128);
    }
}
