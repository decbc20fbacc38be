//! From the file as written ([`RawConfig`]) to a [`Config`]: defaults, units and ranges for
//! every section but `[[zones]]` (see `zones`), and the checks between sections.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_spanned::Spanned;

use super::admin::{admin, log};
use super::bounds::*;
use super::check::{Check, Field};
use super::intercept;
use super::raw::{
    Opt, RawAdmin, RawCache, RawConfig, RawForward, RawInterface, RawListen, RawLog, RawStats,
};
use super::ttl::{self, TtlFields};
use super::units::parse_listen;
use super::zones;
use super::{Cache, Config, DenyAction, ForwardSettings, Interface};
use crate::acl::Allow;
use crate::search_path::{self, Suffixes};

const DEFAULT_LISTEN: &str = "169.254.20.10:53";

/// Builds the config, or returns `None` when `check` has recorded problems.
pub fn build(
    check: &mut Check<'_>,
    raw: &RawConfig,
    base_dir: &Path,
    env: super::Env<'_>,
) -> Option<Config> {
    let mut listen = listen(check, raw.listen.as_ref().unwrap_or(&RawListen::default()));
    let no_interface = RawInterface::default();
    let raw_interface = raw.interface.as_ref().unwrap_or(&no_interface);
    let interface = interface(check, raw_interface, base_dir);
    let intercepted = intercept::addresses(check, &raw_interface.intercept, env);
    if let (Some(l), Some(ips)) = (listen.as_mut(), intercepted.as_ref()) {
        intercept::listen_on(l, ips);
    }
    if let Some(list) = raw_interface
        .intercept
        .as_ref()
        .filter(|l| !l.get_ref().is_empty())
        && raw_interface.manage != Some(true)
    {
        let reason = "needs `manage = true`: the intercepted addresses go on nodedns's link";
        check.error(Some(list.span()), "interface.intercept", reason);
    }
    let no_cache = RawCache::default();
    let (cache, ttl) = cache(check, raw.cache.as_ref().unwrap_or(&no_cache), base_dir);
    let forward = forward(
        check,
        raw.forward.as_ref().unwrap_or(&RawForward::default()),
    );
    let own: &[SocketAddr] = listen.as_ref().map_or(&[], |l| &l.addresses);
    let ips: &[std::net::IpAddr] = intercepted.as_deref().unwrap_or_default();
    let zones = zones::zones(check, &raw.zones, own, ttl.as_ref(), base_dir, env, ips);
    let admin = admin(
        check,
        raw.admin.as_ref().unwrap_or(&RawAdmin::default()),
        own,
        base_dir,
    );
    let log = log(check, raw.log.as_ref().unwrap_or(&RawLog::default()));
    let stats = stats(check, raw.stats.as_ref().unwrap_or(&RawStats::default()));
    if !check.diags.items.is_empty() {
        return None;
    }
    Some(Config {
        listen: listen?,
        interface: Interface {
            intercept: intercepted?,
            ..interface?
        },
        cache: cache?,
        forward: forward?,
        zones: zones?,
        admin: admin?,
        log: log?,
        stats: stats?,
    })
}

/// `[stats]`: what the counters are told about the cluster.
fn stats(c: &mut Check<'_>, raw: &RawStats) -> Option<super::Stats> {
    const KEY: &str = "stats.search_suffixes";
    let Some(raw) = &raw.search_suffixes else {
        let search_suffixes = Suffixes::parse(&search_path::DEFAULT).ok()?;
        return Some(super::Stats { search_suffixes });
    };
    let mut ok = true;
    for text in raw.get_ref() {
        if let Err(reason) = Suffixes::parse(&[text.get_ref()]) {
            c.error(Some(text.span()), KEY, reason);
            ok = false;
        }
    }
    let list: Vec<&str> = raw.get_ref().iter().map(|t| t.get_ref().as_str()).collect();
    let search_suffixes = ok.then(|| Suffixes::parse(&list).ok()).flatten()?;
    Some(super::Stats { search_suffixes })
}

fn listen(c: &mut Check<'_>, raw: &RawListen) -> Option<super::Listen> {
    let addresses = listen_addresses(c, &raw.addresses);
    let workers = c.count("listen.workers", &raw.workers, 0, (0, MAX_WORKERS));
    // RFC 6891 §6.2.5: a payload size below 512 is treated as 512.
    let udp_max_payload = c.count(
        "listen.udp_max_payload",
        &raw.udp_max_payload,
        1232,
        (512, 65535),
    );
    let tcp_max_connections = c.count(
        "listen.tcp_max_connections",
        &raw.tcp_max_connections,
        1000,
        (1, MAX_TCP_CONNECTIONS),
    );
    let tcp_idle = c.positive(
        "listen.tcp_idle_timeout",
        &raw.tcp_idle_timeout,
        10 * SECOND,
    );
    let tcp_idle = c.at_most(tcp_idle, 10 * MINUTE);
    let pipelined = c.count(
        "listen.tcp_max_pipelined",
        &raw.tcp_max_pipelined,
        64,
        (1, MAX_PIPELINED),
    );
    let max_inflight = c.count(
        "listen.max_inflight",
        &raw.max_inflight,
        10_000,
        (1, MAX_INFLIGHT),
    );
    let clients = client_limits(c, raw, max_inflight.as_ref().map(|f| f.value));
    let drain = c.duration("listen.drain_timeout", &raw.drain_timeout, 5 * SECOND);
    let drain = c.at_most(drain, 10 * MINUTE);
    let allow = listen_allow(c, &raw.allow);
    let deny_action = deny_action(c, &raw.deny_action);
    Some(super::Listen {
        addresses: addresses?,
        workers: workers?.value,
        udp_max_payload: udp_max_payload?.value,
        tcp_max_connections: tcp_max_connections?.value,
        tcp_idle_timeout: tcp_idle?.value,
        tcp_max_pipelined: pipelined?.value,
        max_inflight: max_inflight?.value,
        clients: clients?,
        drain_timeout: drain?.value,
        allow: allow?,
        deny_action: deny_action?,
    })
}

/// What one client may cost (`listen.max_inflight_per_client`, `client_miss_rate`,
/// `client_miss_burst`, `tcp_max_connections_per_client`). The in-flight limit defaults to a
/// tenth of `max_inflight` (`None`: that was bad, and is reported already).
fn client_limits(
    c: &mut Check<'_>,
    raw: &RawListen,
    max_inflight: Option<usize>,
) -> Option<super::ClientLimits> {
    let tenth = max_inflight.map_or(1, |m| (m / 10).max(1));
    let inflight = c.count(
        "listen.max_inflight_per_client",
        &raw.max_inflight_per_client,
        tenth,
        (1, MAX_INFLIGHT),
    );
    let rate = c.count(
        "listen.client_miss_rate",
        &raw.client_miss_rate,
        200u32,
        (0, MAX_CLIENT_MISS_RATE),
    );
    let burst = c.count(
        "listen.client_miss_burst",
        &raw.client_miss_burst,
        1000u32,
        (1, MAX_CLIENT_MISS_RATE),
    );
    let tcp = c.count(
        "listen.tcp_max_connections_per_client",
        &raw.tcp_max_connections_per_client,
        32,
        (1, MAX_TCP_CONNECTIONS),
    );
    Some(super::ClientLimits {
        max_inflight: inflight?.value,
        miss_rate: rate?.value,
        miss_burst: burst?.value,
        tcp_max_connections: tcp?.value,
    })
}

/// `listen.allow`: address blocks, each checked on its own so every bad one is reported.
fn listen_allow(c: &mut Check<'_>, raw: &Opt<Vec<Spanned<String>>>) -> Option<Allow> {
    const KEY: &str = "listen.allow";
    let Some(raw) = raw else {
        return Some(Allow::default());
    };
    let mut ok = true;
    for text in raw.get_ref() {
        if let Err(reason) = Allow::parse(&[text.get_ref()]) {
            c.error(Some(text.span()), KEY, reason);
            ok = false;
        }
    }
    let list: Vec<&str> = raw.get_ref().iter().map(|t| t.get_ref().as_str()).collect();
    ok.then(|| Allow::parse(&list).ok()).flatten()
}

fn deny_action(c: &mut Check<'_>, raw: &Opt<String>) -> Option<DenyAction> {
    let action = c.plain("listen.deny_action", raw, "refuse".to_owned());
    match action.value.as_str() {
        "refuse" => Some(DenyAction::Refuse),
        "drop" => Some(DenyAction::Drop),
        other => {
            let reason = format!("{other:?} is not one of \"refuse\", \"drop\"");
            c.error(action.span.clone(), &action.key, reason);
            None
        }
    }
}

fn listen_addresses(
    c: &mut Check<'_>,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Option<Vec<SocketAddr>> {
    const KEY: &str = "listen.addresses";
    let Some(raw) = raw else {
        return parse_listen(DEFAULT_LISTEN).ok().map(|a| vec![a]);
    };
    if raw.get_ref().is_empty() {
        c.error(
            Some(raw.span()),
            KEY,
            "at least one listen address is needed",
        );
        return None;
    }
    let mut addresses = Vec::new();
    let mut ok = true;
    for text in raw.get_ref() {
        match parse_listen(text.get_ref()) {
            Ok(addr) if addresses.contains(&addr) && addr.port() != 0 => {
                c.error(Some(text.span()), KEY, format!("{addr} is listed twice"));
                ok = false;
            }
            Ok(addr) => addresses.push(addr),
            Err(reason) => {
                c.error(Some(text.span()), KEY, reason);
                ok = false;
            }
        }
    }
    ok.then_some(addresses)
}

fn interface(c: &mut Check<'_>, raw: &RawInterface, base_dir: &Path) -> Option<Interface> {
    let name = c.plain("interface.name", &raw.name, "nodedns".to_owned());
    let name_ok = valid_interface_name(&name.value);
    if !name_ok {
        let reason = format!(
            "`{}` is not an interface name: 1 to 15 letters, digits, `-`, `_` or `.`",
            name.value
        );
        c.error(name.span.clone(), &name.key, reason);
    }
    let fallback = c.plain("interface.fallback", &raw.fallback, "lo".to_owned());
    let fallback_ok = fallback.value.is_empty() || valid_interface_name(&fallback.value);
    if !fallback_ok {
        let reason = format!(
            "`{}` is not an interface name (or \"\" for no fallback): 1 to 15 letters, digits, `-`, `_` or `.`",
            fallback.value
        );
        c.error(fallback.span.clone(), &fallback.key, reason);
    }
    let check_interval = c.positive("interface.check_interval", &raw.check_interval, 60 * SECOND);
    let check_interval = c.at_most(check_interval, HOUR);
    Some(Interface {
        manage: raw.manage.unwrap_or(false),
        name: name_ok.then_some(name.value)?,
        fallback: fallback_ok.then_some(fallback.value)?,
        notrack: raw.notrack.unwrap_or(false),
        check_interval: check_interval?.value,
        teardown_on_exit: raw.teardown_on_exit.unwrap_or(false),
        intercept: Vec::new(),
        instance_lock: intercept::instance_lock(c, &raw.instance_lock, base_dir)?,
    })
}

/// Linux interface names fit `IFNAMSIZ` (16 bytes with the NUL).
fn valid_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
}

fn cache(c: &mut Check<'_>, raw: &RawCache, base_dir: &Path) -> (Option<Cache>, Option<TtlFields>) {
    let capacity = c.count("cache.capacity", &raw.capacity, 100_000, (1, MAX_CAPACITY));
    let max_bytes = c.size("cache.max_bytes", &raw.max_bytes, 64 << 20);
    if let Some(field) = max_bytes.as_ref().filter(|f| f.value < 4096) {
        c.error(field.span.clone(), &field.key, "at least 4KiB is needed");
    }
    if let Some(field) = max_bytes.as_ref().filter(|f| f.value > MAX_CACHE_BYTES) {
        c.error(
            field.span.clone(),
            &field.key,
            "above the most allowed, 64GiB",
        );
    }
    let ttl = ttl::global_ttl(c, raw);
    let stale_max = c.duration("cache.stale_max", &raw.stale_max, 3600 * SECOND);
    let stale_max = c.at_most(stale_max, MAX_STALE);
    let stale_timeout = c.duration(
        "cache.stale_client_timeout",
        &raw.stale_client_timeout,
        Duration::from_millis(1800),
    );
    let stale_timeout = c.at_most(stale_timeout, MINUTE);
    let waiters = c.count(
        "cache.max_waiters_per_key",
        &raw.max_waiters_per_key,
        256,
        (1, MAX_WAITERS),
    );
    let snapshot = raw.snapshot.as_ref().map(|s| base_dir.join(s.get_ref()));
    if let Some(s) = raw.snapshot.as_ref().filter(|s| s.get_ref().is_empty()) {
        c.error(
            Some(s.span()),
            "cache.snapshot",
            "empty path: leave the key out for none",
        );
    }
    let snapshot_interval = c.duration(
        "cache.snapshot_interval",
        &raw.snapshot_interval,
        5 * MINUTE,
    );
    let snapshot_interval = c.at_most(snapshot_interval, 24 * HOUR);
    let cache = (|| {
        Some(Cache {
            capacity: capacity?.value,
            max_bytes: max_bytes?.value,
            ttl: ttl.as_ref()?.values(),
            stale_max: stale_max?.value,
            stale_client_timeout: stale_timeout?.value,
            prefetch: raw.prefetch.unwrap_or(true),
            max_waiters_per_key: waiters?.value,
            snapshot,
            snapshot_interval: snapshot_interval?.value,
        })
    })();
    (cache, ttl)
}

fn forward(c: &mut Check<'_>, raw: &RawForward) -> Option<ForwardSettings> {
    let ms = Duration::from_millis;
    let attempts = c.count("forward.attempts", &raw.attempts, 3, (1, MAX_ATTEMPTS));
    let deadline = c.positive("forward.deadline", &raw.deadline, 2 * SECOND);
    let deadline = c.at_most(deadline, MINUTE);
    let min = c.positive(
        "forward.min_attempt_timeout",
        &raw.min_attempt_timeout,
        ms(50),
    );
    let max = c.positive(
        "forward.max_attempt_timeout",
        &raw.max_attempt_timeout,
        SECOND,
    );
    let initial = c.positive(
        "forward.initial_attempt_timeout",
        &raw.initial_attempt_timeout,
        ms(500),
    );
    let (min, max, initial) = (
        c.at_most(min, MINUTE),
        c.at_most(max, MINUTE),
        c.at_most(initial, MINUTE),
    );
    let down_after = c.count(
        "forward.down_after",
        &raw.down_after,
        3,
        (1, MAX_DOWN_AFTER),
    );
    let probe = c.positive("forward.probe_interval", &raw.probe_interval, SECOND);
    let probe = c.at_most(probe, HOUR);
    let probe_max = c.positive(
        "forward.probe_max_interval",
        &raw.probe_max_interval,
        30 * SECOND,
    );
    let probe_max = c.at_most(probe_max, HOUR);
    let tcp_idle = c.positive(
        "forward.tcp_idle_timeout",
        &raw.tcp_idle_timeout,
        10 * SECOND,
    );
    let tcp_idle = c.at_most(tcp_idle, HOUR);
    let timeouts_ok = ordered(c, &[&min, &initial, &max]);
    let probes_ok = ordered(c, &[&probe, &probe_max]);
    if !(timeouts_ok && probes_ok) {
        return None;
    }
    Some(ForwardSettings {
        attempts: attempts?.value,
        deadline: deadline?.value,
        min_attempt_timeout: min?.value,
        max_attempt_timeout: max?.value,
        initial_attempt_timeout: initial?.value,
        down_after: down_after?.value,
        probe_interval: probe?.value,
        probe_max_interval: probe_max?.value,
        tcp_idle_timeout: tcp_idle?.value,
    })
}

/// Checks each valid field is not above the next valid one.
fn ordered(c: &mut Check<'_>, fields: &[&Option<Field<Duration>>]) -> bool {
    let present: Vec<&Field<Duration>> = fields.iter().filter_map(|f| f.as_ref()).collect();
    let mut ok = true;
    for pair in present.windows(2) {
        ok &= c.not_above(pair[0], pair[1]);
    }
    ok
}
