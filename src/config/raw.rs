//! The TOML schema as written: serde types with every key optional and every value spanned.
//!
//! This module owns the shape of the file (unknown keys are refused by `deny_unknown_fields`);
//! values are kept as written, with their byte spans, so that validation can check them all and
//! report each problem at its line. Defaults and checks live in `validate` and `zones`.

use serde::Deserialize;
use serde::de::{Deserializer, Visitor};
use serde_spanned::Spanned;

/// A spanned optional value, as every leaf key is.
pub type Opt<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<RawListen>,
    pub interface: Option<RawInterface>,
    pub cache: Option<RawCache>,
    pub forward: Option<RawForward>,
    pub zones: Opt<Vec<Spanned<RawZone>>>,
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
    pub stats: Option<RawStats>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListen {
    pub addresses: Opt<Vec<Spanned<String>>>,
    pub workers: Opt<i64>,
    pub udp_max_payload: Opt<i64>,
    pub tcp_max_connections: Opt<i64>,
    pub tcp_idle_timeout: Opt<Scalar>,
    pub tcp_max_pipelined: Opt<i64>,
    pub max_inflight: Opt<i64>,
    pub max_inflight_per_client: Opt<i64>,
    pub client_miss_rate: Opt<i64>,
    pub client_miss_burst: Opt<i64>,
    pub tcp_max_connections_per_client: Opt<i64>,
    pub drain_timeout: Opt<Scalar>,
    pub allow: Opt<Vec<Spanned<String>>>,
    pub deny_action: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterface {
    pub manage: Option<bool>,
    pub name: Opt<String>,
    pub fallback: Opt<String>,
    pub notrack: Option<bool>,
    pub check_interval: Opt<Scalar>,
    pub teardown_on_exit: Option<bool>,
    pub intercept: Opt<Vec<Spanned<String>>>,
    pub instance_lock: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub capacity: Opt<i64>,
    pub max_bytes: Opt<Scalar>,
    pub min_ttl: Opt<Scalar>,
    pub max_ttl: Opt<Scalar>,
    pub negative_max_ttl: Opt<Scalar>,
    pub servfail_ttl: Opt<Scalar>,
    pub stale_max: Opt<Scalar>,
    pub stale_client_timeout: Opt<Scalar>,
    pub prefetch: Option<bool>,
    pub max_waiters_per_key: Opt<i64>,
    pub snapshot: Opt<String>,
    pub snapshot_interval: Opt<Scalar>,
}

/// The TTL clamps a zone may override: `cache = { max_ttl = "30s" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTtl {
    pub min_ttl: Opt<Scalar>,
    pub max_ttl: Opt<Scalar>,
    pub negative_max_ttl: Opt<Scalar>,
    pub servfail_ttl: Opt<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawForward {
    pub attempts: Opt<i64>,
    pub deadline: Opt<Scalar>,
    pub min_attempt_timeout: Opt<Scalar>,
    pub max_attempt_timeout: Opt<Scalar>,
    pub initial_attempt_timeout: Opt<Scalar>,
    pub down_after: Opt<i64>,
    pub probe_interval: Opt<Scalar>,
    pub probe_max_interval: Opt<Scalar>,
    pub tcp_idle_timeout: Opt<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    /// Required; optional here so that a zone without one is reported with the rest.
    pub name: Opt<String>,
    pub upstreams: Opt<Vec<Spanned<String>>>,
    pub resolv_conf: Opt<String>,
    pub transport: Opt<String>,
    pub policy: Opt<String>,
    pub cache: Option<RawTtl>,
    pub probe: Opt<String>,
    pub max_qps: Opt<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: Opt<String>,
    pub socket: Opt<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Opt<String>,
    pub level: Opt<String>,
    pub queries: Opt<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStats {
    pub search_suffixes: Opt<Vec<Spanned<String>>>,
}

/// A string, number or boolean as written, for values whose type is checked with their unit
/// (a bare `30` for a duration gets "has no unit", not a serde type error that hides the rest).
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string such as \"30s\" or \"64MiB\"")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
        i64::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "{s:?}"),
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
        }
    }
}
