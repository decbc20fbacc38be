//! nodedns: a node-level DNS caching forwarder for Kubernetes.
//!
//! One process per node binds a link-local address (by default `169.254.20.10:53`, UDP and
//! TCP) and answers pods from a packet cache, forwarding misses per zone to upstream resolvers
//! that only the node can reach, with failover between them.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`run`, `check-config`, `print-default-config`, `doctor`,
//!   `probe`).
//! - [`app`]: lifecycle: load config, bind every socket, spawn, wait for a signal, drain.
//! - [`config`]: the TOML schema, defaults, validation, the embedded default.
//! - [`listener`]: UDP and TCP listeners (binding, framing, limits).
//! - [`handler`]: the life of one query: parse, cache, route, coalesce, forward, reply.
//! - [`handover`]: whether another process (the pod being replaced) serves a listen address.
//! - [`wire`]: byte-level header/question/OPT/TTL work on `&[u8]`, and the validation of
//!   upstream answers.
//! - [`cache`]: what is cached for how long, and the bounded store under it.
//! - [`coalesce`]: one upstream query per identical in-flight miss.
//! - [`zones`]: longest-suffix routing of a qname to a zone's upstreams.
//! - [`forward`]: the failover loop, upstream health, policies, UDP/TCP exchanges.
//! - [`netsetup`]: Kubernetes node mode: the link carrying the listen IPs, NOTRACK rules.
//! - [`reload`]: where the config comes from, watching it, asking for a reload.
//! - [`snapshot`]: the cache written on shutdown and read back at start (warm restart).
//! - [`doctor`]: `nodedns doctor`, the troubleshooting checklist run against a live node.
//! - [`stats`]: the counters every part increments, read by metrics and tests.
//! - [`metrics`]: every Prometheus metric, its HELP text, and the scrape-time exposition.
//! - [`admin`]: the admin HTTP endpoint: `/metrics`, `/health`, `/ready`, on TCP and on a unix
//!   socket for `nodedns probe`.
//! - [`querylog`]: the opt-in sampled query log.
//! - [`regular_file`]: bounded, non-blocking reads of regular files (config, resolv.conf,
//!   snapshot).
//!
//! `docs/architecture.md` mirrors this list.

pub mod admin;
pub mod app;
pub mod cache;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod doctor;
pub mod forward;
pub mod handler;
pub mod handover;
pub mod listener;
pub mod metrics;
pub mod netsetup;
pub mod querylog;
pub mod regular_file;
pub mod reload;
pub mod snapshot;
pub mod stats;
pub mod wire;
pub mod zones;
