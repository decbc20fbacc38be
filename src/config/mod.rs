//! Configuration: the TOML schema, its defaults, validation and the embedded default.
//!
//! This module owns turning a file (or the embedded default) into a validated [`Config`]:
//! unknown keys are errors, every error names file, line, column, key and reason, and
//! `resolv_conf` zones are resolved into upstream lists here, with the loop guard. It does not
//! own reloading or watching files; the runtime does that and calls [`load_file`] again.

mod admin;
mod bounds;
mod check;
mod intercept;
mod locate;
mod raw;
mod reference;
pub mod resolv;
mod structure;
mod ttl;
mod units;
mod validate;
mod zones;

pub use admin::is_plain_log_filter;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::regular_file::{self, Symlinks};

/// Largest config file or resolv.conf read: far beyond any real one, and small enough that
/// a reload never holds the control loop reading.
pub const MAX_FILE: u64 = 1 << 20;

pub use reference::{Env, process_env};
pub use units::{format_duration, parse_duration, parse_size, parse_upstream};
pub use zones::{normalize_zone_name, parse_probe};

/// A validated configuration. Every field has its default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: Listen,
    pub interface: Interface,
    pub cache: Cache,
    pub forward: ForwardSettings,
    pub zones: Vec<Zone>,
    pub admin: Admin,
    pub log: Log,
    pub stats: Stats,
}

/// `[listen]`: where nodedns answers and the limits of its listeners.
#[derive(Debug, Clone, PartialEq)]
pub struct Listen {
    /// UDP and TCP are bound on each (default `["169.254.20.10:53"]`).
    pub addresses: Vec<SocketAddr>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Largest UDP reply to an EDNS client (`udp_max_payload`, default 1232).
    pub udp_max_payload: u16,
    /// Open client TCP connections at most (default 1000).
    pub tcp_max_connections: usize,
    /// A client TCP connection idle this long is closed (default `10s`).
    pub tcp_idle_timeout: Duration,
    /// Queries in flight on one client TCP connection at most (default 64).
    pub tcp_max_pipelined: usize,
    /// Upstream queries in flight at most, all clients together (default 10000); beyond it a
    /// miss is answered SERVFAIL and counted.
    pub max_inflight: usize,
    /// What one client (a source address; an IPv6 /64) may cost.
    pub clients: ClientLimits,
    /// On SIGTERM/SIGINT, how long in-flight queries may finish (default `5s`).
    pub drain_timeout: Duration,
    /// The sources answered (default [`crate::acl::DEFAULT_ALLOW`]: loopback, link-local,
    /// RFC 1918, 100.64.0.0/10 and ULA).
    pub allow: crate::acl::Allow,
    /// What another source gets (default `refuse`).
    pub deny_action: DenyAction,
}

/// `[listen]` limits per client: misses are limited, hits never are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Misses in flight at once (`max_inflight_per_client`, default `max_inflight / 10`).
    pub max_inflight: usize,
    /// Misses started per second on average (`client_miss_rate`, default 200; 0 = no rate
    /// limit).
    pub miss_rate: u32,
    /// Misses that may start at once after a quiet spell (`client_miss_burst`, default 1000).
    pub miss_burst: u32,
    /// Open TCP connections (`tcp_max_connections_per_client`, default 32).
    pub tcp_max_connections: usize,
}

/// `listen.deny_action`: what a source outside `listen.allow` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyAction {
    /// REFUSED, with the query's ID: a misconfigured client learns why at once.
    Refuse,
    /// Nothing: an open-resolver scan or a reflection attempt gets no bytes at all.
    Drop,
}

/// `[interface]`: the node's link-local interface (Kubernetes node mode).
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    /// Create a dummy link carrying the listen IPs (default false).
    pub manage: bool,
    /// The link's name, at most 15 bytes (default `nodedns`).
    pub name: String,
    /// Existing link that carries the addresses when the kernel has no dummy driver (default
    /// `lo`); empty makes that a start-up error.
    pub fallback: String,
    /// Add NOTRACK rules for DNS to and from the listen IPs (default false).
    pub notrack: bool,
    /// Link, addresses and rules are re-checked this often (default `60s`).
    pub check_interval: Duration,
    /// Remove the link on exit (default false: a restarting pod keeps the address).
    pub teardown_on_exit: bool,
    /// Transparent mode: addresses (the kube-dns ClusterIP) nodedns takes over on port 53,
    /// with NOTRACK rules so kube-proxy's DNAT never sees their queries (default none).
    /// Each is also in `listen.addresses`, at port 53.
    pub intercept: Vec<std::net::IpAddr>,
    /// The file every nodedns of the node holds a shared lock on, so that one exiting
    /// knows whether another still serves (default `/run/nodedns-node/instances.lock`).
    pub instance_lock: PathBuf,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cache {
    /// Entries at most (default 100000; embedded default 10000).
    pub capacity: usize,
    /// Bytes at most, keys and answers together (default `64MiB`).
    pub max_bytes: u64,
    pub ttl: CacheTtl,
    /// Entries are kept this long past expiry for serve-stale (default `1h`; `0s` disables).
    pub stale_max: Duration,
    /// A miss on a stale entry waits this long for upstream before serving stale (default `1.8s`).
    pub stale_client_timeout: Duration,
    pub prefetch: bool,
    /// Clients waiting on one in-flight upstream query at most (default 256).
    pub max_waiters_per_key: usize,
    /// Warm-restart snapshot file (default none).
    pub snapshot: Option<PathBuf>,
    /// With `snapshot` set, the cache is also written this often while serving (default
    /// `5m`; `0s`: only at SIGTERM).
    pub snapshot_interval: Duration,
}

/// TTL clamps, global in `[cache]` and overridable per zone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheTtl {
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub negative_max_ttl: Duration,
    pub servfail_ttl: Duration,
}

/// `[forward]`: attempts, timeouts and health, for every zone.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSettings {
    /// Upstream attempts per client query at most (default 3).
    pub attempts: u32,
    /// Overall budget for one client query (default `2s`).
    pub deadline: Duration,
    /// Adaptive per-attempt timeout is `clamp(4 * SRTT, min, max)` (defaults `50ms`, `1s`),
    /// starting at `initial_attempt_timeout` (default `500ms`) before any RTT is known.
    pub min_attempt_timeout: Duration,
    pub max_attempt_timeout: Duration,
    pub initial_attempt_timeout: Duration,
    /// Consecutive failures that mark an upstream down (default 3).
    pub down_after: u32,
    /// Probe interval while down, doubling up to the max (defaults `1s`, `30s`).
    pub probe_interval: Duration,
    pub probe_max_interval: Duration,
    /// Idle reused upstream TCP connections are closed after this (default `10s`).
    pub tcp_idle_timeout: Duration,
}

/// How a zone reaches its upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP, retried over TCP when the reply is truncated.
    Udp,
    /// Always TCP, over reused connections.
    Tcp,
}

/// Which upstream a zone tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Sequential,
    Random,
    RoundRobin,
    Fastest,
}

/// One `[[zones]]` entry, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Lowercased, fully qualified, with a trailing dot; `"."` is the root.
    pub name: String,
    /// The upstreams (from `upstreams`, or read from `resolv_conf`), port defaulting to 53.
    pub upstreams: Vec<SocketAddr>,
    /// Where `upstreams` came from, when a resolv.conf (watched for changes at runtime).
    pub resolv_conf: Option<PathBuf>,
    pub transport: Transport,
    pub policy: Policy,
    /// The global clamps with this zone's `cache = { ... }` overrides applied.
    pub cache: CacheTtl,
    /// What health and readiness probes ask this zone's upstreams.
    pub probe: Probe,
    /// Queries a second each upstream of this zone may be sent, on average (a token bucket
    /// holding one second's worth); `None`, the default: no limit.
    pub max_qps: Option<f64>,
}

/// A zone's probe question (`probe = "NAME TYPE"`): by default the zone's apex `SOA`, or
/// `. NS` for the root, which any server that serves the zone answers. Any well-formed reply
/// counts as alive, so the question only has to be one the upstream does not drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Lowercased, fully qualified, with a trailing dot.
    pub name: String,
    pub qtype: hickory_proto::rr::RecordType,
}

impl Probe {
    /// The default probe of the zone `name` (normalized, with its trailing dot).
    pub fn apex(name: &str) -> Probe {
        use hickory_proto::rr::RecordType;
        let qtype = if name == "." {
            RecordType::NS
        } else {
            RecordType::SOA
        };
        Probe {
            name: name.to_owned(),
            qtype,
        }
    }
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.name, self.qtype)
    }
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// `/metrics`, `/health`, `/ready`; `None` when `address = ""` (disabled).
    pub address: Option<SocketAddr>,
    /// The same routes on a unix socket, for probes that must reach this very process
    /// (`nodedns probe`); `None` when the key is absent (the default).
    pub socket: Option<PathBuf>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub format: LogFormat,
    /// A tracing-subscriber `EnvFilter` directive (default `info`); `RUST_LOG` overrides it.
    pub level: String,
    /// Fraction of queries logged, 0.0 to 1.0 (default 0).
    pub queries: f64,
}

/// `[stats]`: what the counters need to know of the cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// The suffixes that mark a query as a search-list expansion (`search_suffixes`, default
    /// [`crate::search_path::DEFAULT`]).
    pub search_suffixes: crate::search_path::Suffixes,
}

/// The embedded default, printed by `nodedns print-default-config`: commented TOML that listens on
/// `127.0.0.1:5353`, takes upstreams from `/etc/resolv.conf`, caches 10k entries and serves
/// admin on `127.0.0.1:9253`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `zones[1].upstreams`.
    pub key: String,
    pub reason: String,
}

/// Every problem found in a config file (all are reported at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigError(pub Vec<Diagnostic>);

fn render(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| {
            let key = if d.key.is_empty() {
                String::new()
            } else {
                format!(" {}:", d.key)
            };
            format!("{}:{}:{}:{key} {}", d.file, d.line, d.column, d.reason)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and validates a config file, resolving `resolv_conf` zones.
///
/// Relative paths in the file (`resolv_conf`, `cache.snapshot`) are taken from the file's
/// directory, so a config and the resolv.conf beside it can move together.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load_file_with_env(path, &process_env)
}

/// As [`load_file`], with `${NAME}` references in upstreams looked up in `env` instead of
/// the process environment.
pub fn load_file_with_env(path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    // Symlinks followed: a ConfigMap mount is one. The target must be a regular file, read
    // without blocking (see `crate::regular_file`).
    let text = regular_file::read_text(path, MAX_FILE, Symlinks::Follow).map_err(|e| {
        ConfigError(vec![Diagnostic {
            file: origin.clone(),
            line: 1,
            column: 1,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        }])
    })?;
    let base_dir = path.parent().unwrap_or(Path::new(""));
    parse_str_with_env(&text, &origin, base_dir, env)
}

/// Parses and validates TOML text; `origin` names it in diagnostics. Relative paths in it are
/// taken from the current directory.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_str_in(text, origin, Path::new(""))
}

/// As [`parse_str`], with relative paths in the text taken from `base_dir`.
pub fn parse_str_in(text: &str, origin: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    parse_str_with_env(text, origin, base_dir, &process_env)
}

/// As [`parse_str_in`], with `${NAME}` references in upstreams looked up in `env`.
pub fn parse_str_with_env(
    text: &str,
    origin: &str,
    base_dir: &Path,
    env: Env<'_>,
) -> Result<Config, ConfigError> {
    let mut diags = locate::Diags::new(origin, text);
    // Parsed once into a spanned tree, which maps an error's offset to its key path and is
    // then deserialized into the schema. Config files are small and read rarely.
    let tree = match toml::de::DeTable::parse(text) {
        Ok(tree) => tree,
        Err(error) => {
            let (partial, _) = toml::de::DeTable::parse_recoverable(text);
            locate::toml_error(&mut diags, &error, Some(partial.get_ref()));
            return Err(ConfigError(diags.items));
        }
    };
    // Every unknown key and wrong type, not only the first; what is left is validated too.
    let raw = structure::deserialize(&mut diags, &tree);
    let Some(raw) = raw else {
        return Err(ConfigError(diags.items));
    };
    let structural = diags.items.len();
    let mut check = check::Check { diags };
    let config = validate::build(&mut check, &raw, base_dir, env);
    let mut items = check.diags.items;
    // A key cut for its shape is missing to validation: its problem is said once.
    let (shape, checked) = items.split_at(structural);
    let checked: Vec<Diagnostic> = checked
        .iter()
        .filter(|d| !shape.iter().any(|s| s.key == d.key))
        .cloned()
        .collect();
    items.truncate(structural);
    items.extend(checked);
    match config {
        Some(config) if items.is_empty() => Ok(config),
        _ => {
            if items.is_empty() {
                items.push(Diagnostic {
                    file: origin.to_owned(),
                    line: 1,
                    column: 1,
                    key: String::new(),
                    reason: "invalid configuration".to_owned(),
                });
            }
            // Checks run section by section; report in file order.
            items.sort_by_key(|d| (d.line, d.column));
            Err(ConfigError(items))
        }
    }
}

/// The embedded default, parsed.
pub fn embedded_default() -> Result<Config, ConfigError> {
    parse_str(DEFAULT_TOML, "<embedded default>")
}

#[cfg(test)]
mod tests;
