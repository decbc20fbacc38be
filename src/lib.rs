//! nodedns: a node-level DNS caching forwarder for Kubernetes.
//!
//! One process per node binds a link-local address (by default `169.254.20.10:53`, UDP and
//! TCP) and answers pods from a packet cache, forwarding misses per zone to upstream resolvers
//! that only the node can reach, with failover between them.
//!
//! # Layout
//!
//! From the top (what starts everything) down; a module imports only from modules below it.
//!
//! - `cli`: the command line (`run`, `check-config`, `print-default-config`, `doctor`,
//!   `probe`, `top`).
//! - `doctor`: `nodedns doctor`, the troubleshooting checklist run against a live node.
//! - `app`: lifecycle: load config, bind every socket, spawn, wait for a signal, drain.
//! - `admin`: the admin HTTP endpoint: `/metrics`, `/health`, `/ready`, on TCP and on a unix
//!   socket for `nodedns probe`; its client side and a Prometheus text reader.
//! - `metrics`: every Prometheus metric, its HELP text, and the scrape-time exposition.
//! - `netsetup`: Kubernetes node mode: the link carrying the listen IPs, NOTRACK rules,
//!   transparent mode's interception (nftables over netlink) and the instance lock.
//! - `reload`: where the config comes from, watching it, asking for a reload.
//! - `handover`: whether another process (the pod being replaced) serves a listen address.
//! - `listener`: UDP and TCP listeners: binding, batching, framing, limits.
//! - `resolve`: the life of one query: the fast path (parse, cache hit) and the one owner of
//!   a miss (route, coalesce, flights, outcome, stale or SERVFAIL, the reply).
//! - `forward`: one miss's attempts: the failover loop, upstream health, policies, query
//!   budgets, UDP/TCP exchanges.
//! - `coalesce`: one upstream query per identical in-flight miss.
//! - `querylog`: the opt-in sampled query log.
//! - `retransmit`: one listener loop's table of recent queries, to notice a client asking
//!   again.
//! - [`snapshot`]: the cache written on shutdown and read back at start (warm restart).
//! - [`cache`]: what is cached for how long, and the bounded store under it.
//! - `zones`: longest-suffix routing of a qname to a zone's upstreams.
//! - [`config`]: the TOML schema, defaults, validation, the embedded default.
//! - `acl`: which sources are answered (`listen.allow`), checked before any parsing.
//! - `limit`: what one client may cost: misses in flight and started per second, in a
//!   table of fixed size.
//! - `search_path`: which names are a pod's search-list expansions (`[stats]
//!   search_suffixes`).
//! - `regular_file`: bounded, non-blocking reads of regular files (config, resolv.conf,
//!   snapshot).
//! - `stats`: the counters every part increments, read by metrics and tests.
//! - `top`: the heaviest clients and names of the last minutes (`nodedns top`), in
//!   per-thread space-saving sketches (`sketch`) merged at read time.
//! - `sys`: the batched datagram syscalls (the crate's only `unsafe`).
//! - [`wire`]: byte-level header/question/OPT/TTL work on `&[u8]`, and the validation of
//!   upstream answers.
//!
//! `docs/architecture.md` mirrors this list. The four public modules are the data formats
//! and the store that fuzz targets and benchmarks drive directly; everything else is
//! private, and what the binary, tests, benchmarks and examples use of it is re-exported
//! below.

mod acl;
mod admin;
mod app;
pub mod cache;
mod cli;
mod coalesce;
pub mod config;
mod doctor;
mod forward;
mod handover;
mod limit;
mod listener;
mod metrics;
mod netsetup;
mod querylog;
mod regular_file;
mod reload;
mod resolve;
mod retransmit;
mod search_path;
mod sketch;
pub mod snapshot;
mod stats;
// The crate's only unsafe code: the batched syscalls and geteuid, each block with its
// SAFETY note.
#[allow(unsafe_code)]
mod sys;
mod top;
pub mod wire;
mod zones;

/// The binary's entry point.
pub use cli::main;

/// The server, bound and run in-process by tests as by the binary.
pub use app::Server;
pub use reload::{ConfigSource, Control, ReloadError};

/// The fast path, driven by the query fuzz target.
pub use resolve::{Fast, Observer, Proto, Resolver};

/// Counters tests read.
pub use stats::{DropReason, HitType, Hot, LimitedAnswer, LimitedReason, Stats};

/// The metric list `docs/metrics.md` is checked against.
pub use metrics::{DEFS as METRICS, Def as MetricDef, MetricKind};

/// The admin endpoint's client (`nodedns probe`, `doctor`, tests) and the Prometheus text
/// reader `doctor` and the tests read `/metrics` with.
pub use admin::client as admin_client;
pub use admin::text as prometheus_text;

/// A zone or probe name in wire form.
pub use zones::to_wire as name_to_wire;

/// How many queries an upstream UDP socket carries before it is replaced.
pub use forward::udp::LANE_QUERIES;

/// Batched datagram I/O, for the echo floor example.
pub use listener::bind_udp;
pub use sys::{RecvBatch, SendBatch, UdpFd};
