//! What the control loop does to a running server: apply a reload (load the config again,
//! bind what it adds, then switch; on any error nothing changes), and join the listen
//! addresses deferred while another process serves them.

use std::sync::atomic::Ordering;

use super::lifecycle::Lifecycle;
use super::{Server, unix_now, worker_count};
use crate::handover;
use crate::listener::bind_address;
use crate::reload;
use crate::reload::ReloadError;
use crate::stats::inc;

impl Server {
    /// Loads the config again and applies it, counting and logging the result. New listen
    /// addresses are bound before any old one is closed; on any error nothing changes.
    pub(super) fn reload(&mut self, life: &mut Lifecycle) -> Result<(), ReloadError> {
        let stats = self.resolver.stats().clone();
        let result = self.try_reload(life);
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
                for line in e.to_string().lines() {
                    tracing::error!("config reload refused, old config keeps serving: {line}");
                }
            }
        }
        result
    }

    fn try_reload(&mut self, life: &mut Lifecycle) -> Result<(), ReloadError> {
        let source = self.reloads.source.as_ref().ok_or(ReloadError::NoSource)?;
        let cfg = source.load()?;
        if worker_count(&cfg) != self.runtimes.len() {
            tracing::warn!("listen.workers changed: applies at the next restart");
        }
        let mut fresh = Vec::new();
        for &addr in cfg
            .listen
            .addresses
            .iter()
            .filter(|a| !life.is_serving(a) && !self.deferred.contains(a))
        {
            fresh.push((addr, bind_address(addr, self.runtimes.len())?));
        }
        self.current = cfg;
        for (addr, bound) in fresh {
            life.serve(addr, bound, &self.current.listen);
        }
        life.set_limits(&self.current.listen);
        let keep = &self.current.listen.addresses;
        life.keep_only(keep);
        self.deferred.retain(|a| keep.contains(a));
        self.update_local(life);
        self.resolver.reconfigure(&self.current);
        self.resolver.probe_unanswered();
        Ok(())
    }

    /// Binds the deferred addresses that may be joined now: all of them once every zone has
    /// an upstream that answered, any one another process no longer serves. Serving (and so
    /// readiness) begins when none is left.
    pub(super) fn join_deferred(&mut self, life: &mut Lifecycle) {
        let answered = self.resolver.unanswered_zone().is_none();
        for addr in std::mem::take(&mut self.deferred) {
            if !answered && handover::served_elsewhere(addr) {
                self.deferred.push(addr);
                continue;
            }
            match bind_address(addr, self.runtimes.len()) {
                Ok(bound) => {
                    tracing::info!(address = %addr, upstreams_answered = answered, "joined the listen address");
                    life.serve(addr, bound, &self.current.listen);
                }
                Err(e) => {
                    // Held by something that does not share it (another program, another
                    // user): stay not ready, and say why each time it is tried.
                    tracing::warn!(address = %addr, "binding a deferred listen address failed: {e}");
                    self.deferred.push(addr);
                }
            }
        }
        self.update_local(life);
        if self.deferred.is_empty() {
            self.admin.ready.set_serving();
            tracing::info!(addresses = ?self.local_addrs(), "nodedns serving");
        }
    }

    /// The bound addresses in config order, from what is running.
    pub(super) fn update_local(&self, life: &Lifecycle) {
        *self.local.lock() = life.local_addrs(&self.current.listen.addresses);
    }

    pub(super) fn fingerprint(&self) -> u32 {
        (self.reloads.source.as_ref()).map_or(0, |s| reload::fingerprint(s, &self.current))
    }
}
