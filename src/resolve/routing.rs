//! What a config reload replaces in one piece: the zones ready to forward, the forwarder and
//! the per-query settings; and the pieces of the config the resolver turns into its own
//! types.

use std::sync::Arc;
use std::time::Duration;

use crate::acl::Allow;
use crate::cache::{self, TtlPolicy};
use crate::config::{self, Config, DenyAction};
use crate::forward::{Forwarder, UpstreamSet, ZoneUpstreams};
use crate::querylog::Sampler;
use crate::search_path::Suffixes;
use crate::stats::{Stats, ZoneCounters};
use crate::wire;
use crate::zones::ZoneTable;

/// A zone, ready to forward.
pub(super) struct Zone {
    pub upstreams: ZoneUpstreams,
    pub ttl: TtlPolicy,
    /// This zone's counters (queries routed to it, hits, misses, client latency); kept by
    /// name across reloads.
    pub counters: Arc<ZoneCounters>,
}

/// Everything a config reload replaces, swapped in one piece so a query sees either the old
/// config or the new one, never a mix.
pub(super) struct Routing {
    pub zones: ZoneTable<Arc<Zone>>,
    /// The same zones by name, in config order, for readiness.
    pub listed: Vec<(String, Arc<Zone>)>,
    pub forwarder: Forwarder,
    pub udp_cap: u16,
    pub stale_client_timeout: Duration,
    pub prefetch: bool,
    pub querylog: Sampler,
    /// The sources answered, and what the others get.
    pub allow: Allow,
    pub deny: DenyAction,
    /// Every zone's counters by the index its entries carry ([`TtlPolicy::zone`]): 0 is the
    /// unrouted queries', then every zone ever configured, in [`Stats::zones`] order. A hit
    /// finds its zone's counters here by the entry's index, without routing its name.
    pub counters: Box<[Arc<ZoneCounters>]>,
    /// What marks a query as a search-list expansion (`[stats] search_suffixes`).
    pub search: Suffixes,
}

impl Routing {
    pub fn build(cfg: &Config, upstreams: &mut UpstreamSet, stats: &Arc<Stats>) -> Routing {
        let mut zones = ZoneTable::new();
        let mut listed = Vec::new();
        for z in &cfg.zones {
            let index = stats.zone_index(&z.name) + 1;
            // Past what an entry can carry, hits are counted as unrouted (index 0).
            let index = u8::try_from(index)
                .ok()
                .filter(|&i| i <= cache::MAX_ZONE_INDEX)
                .unwrap_or(0);
            let zone = Arc::new(Zone {
                upstreams: upstreams.zone(z),
                ttl: TtlPolicy {
                    zone: index,
                    ..ttl_policy(&z.cache)
                },
                counters: stats.zone(&z.name),
            });
            zones.insert(&z.name, zone.clone());
            listed.push((z.name.clone(), zone));
        }
        upstreams.apply_budgets();
        let counters = std::iter::once(stats.unrouted().clone())
            .chain(stats.zones().into_iter().map(|(_, c)| c))
            .take(usize::from(cache::MAX_ZONE_INDEX) + 1)
            .collect();
        Routing {
            zones,
            listed,
            counters,
            search: cfg.stats.search_suffixes.clone(),
            forwarder: Forwarder::new(cfg.forward.clone(), stats.clone()),
            udp_cap: cfg.listen.udp_max_payload,
            stale_client_timeout: cfg.cache.stale_client_timeout,
            prefetch: cfg.cache.prefetch,
            querylog: Sampler::new(cfg.log.queries),
            allow: cfg.listen.allow.clone(),
            deny: cfg.listen.deny_action,
        }
    }
}

/// This build's version and the node's hostname, read once at start. The hostname comes from
/// the kernel (`/proc`), which needs no libc call; with host networking it is the node's name.
pub(super) fn identity() -> wire::Identity {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    wire::Identity {
        version: concat!("nodedns ", env!("CARGO_PKG_VERSION")).to_owned(),
        hostname,
    }
}

/// Whole seconds of a zone's TTL clamps, saturating at `u32::MAX`.
fn ttl_policy(t: &config::CacheTtl) -> TtlPolicy {
    let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    TtlPolicy {
        min_ttl: secs(t.min_ttl),
        max_ttl: secs(t.max_ttl),
        negative_max_ttl: secs(t.negative_max_ttl),
        servfail_ttl: secs(t.servfail_ttl),
        zone: 0,
    }
}

pub(super) fn cache_limits(cfg: &Config) -> cache::Limits {
    cache::Limits {
        max_entries: cfg.cache.capacity,
        max_bytes: usize::try_from(cfg.cache.max_bytes).unwrap_or(usize::MAX),
        stale_max: cfg.cache.stale_max,
    }
}
