//! `[[zones]]`: names, upstreams (listed or read from a resolv.conf), the loop guard, and the
//! TTL clamps each zone inherits from `[cache]` and may override (read by `ttl`).

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::Path;

use serde_spanned::Spanned;

use super::check::Check;
use super::raw::{Opt, RawZone};
use super::reference::expand_upstream;
use super::resolv::{self, MAX_UPSTREAMS};
use super::ttl::{TtlFields, ttl_fields};
use super::units::is_own_address;
use super::{Policy, Probe, Transport, Zone};

/// Every `[[zones]]` entry, checked and resolved; at least one is required.
pub fn zones(
    c: &mut Check<'_>,
    raw: &Opt<Vec<Spanned<RawZone>>>,
    listen: &[SocketAddr],
    global: Option<&TtlFields>,
    base_dir: &Path,
    env: super::Env<'_>,
    intercepted: &[IpAddr],
) -> Option<Vec<Zone>> {
    let Some(list) = raw else {
        c.error(None, "zones", "at least one [[zones]] entry is needed");
        return None;
    };
    if list.get_ref().is_empty() {
        c.error(Some(list.span()), "zones", "at least one zone is needed");
        return None;
    }
    let base = global.map_or_else(TtlFields::defaults, TtlFields::inherited);
    let mut zones = Vec::new();
    let mut seen: Vec<(String, Range<usize>)> = Vec::new();
    let mut ok = true;
    for (i, raw) in list.get_ref().iter().enumerate() {
        let ctx = ZoneCtx {
            key: format!("zones[{i}]"),
            listen,
            base: &base,
            base_dir,
            env,
            intercepted,
        };
        let name = match &raw.get_ref().name {
            Some(spanned) => {
                let name = zone_name(c, &ctx, spanned, &seen);
                if let Some(name) = &name {
                    seen.push((name.clone(), spanned.span()));
                }
                name
            }
            None => {
                let key = format!("{}.name", ctx.key);
                c.error(
                    Some(raw.span()),
                    &key,
                    "missing field `name`: every zone needs one",
                );
                None
            }
        };
        match (name, zone(c, &ctx, raw)) {
            (Some(name), Some(zone)) => {
                // The default probe names the zone, known only now.
                let probe = zone.probe.clone().unwrap_or_else(|| Probe::apex(&name));
                zones.push(Zone {
                    name,
                    probe,
                    ..zone.zone
                });
            }
            _ => ok = false,
        }
    }
    ok.then_some(zones)
}

struct ZoneCtx<'a> {
    key: String,
    listen: &'a [SocketAddr],
    base: &'a TtlFields,
    base_dir: &'a Path,
    env: super::Env<'a>,
    /// `[interface] intercept`: nodedns itself once running, so never an upstream.
    intercepted: &'a [IpAddr],
}

fn zone_name(
    c: &mut Check<'_>,
    ctx: &ZoneCtx<'_>,
    raw: &Spanned<String>,
    seen: &[(String, Range<usize>)],
) -> Option<String> {
    let key = format!("{}.name", ctx.key);
    let name = match normalize_zone_name(raw.get_ref()) {
        Ok(name) => name,
        Err(reason) => {
            c.error(Some(raw.span()), &key, reason);
            return None;
        }
    };
    if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
        let line = c.diags.line_of(first.start);
        c.error(
            Some(raw.span()),
            &key,
            format!("zone `{name}` is already defined at line {line}"),
        );
        return None;
    }
    Some(name)
}

/// Lowercases a zone name and makes it fully qualified (`"Cluster.Local"` -> `"cluster.local."`).
pub fn normalize_zone_name(name: &str) -> Result<String, String> {
    if name == "." {
        return Ok(".".to_owned());
    }
    let relative = name.strip_suffix('.').unwrap_or(name);
    if relative.is_empty() {
        return Err("empty zone name: use \".\" for the root".to_owned());
    }
    // RFC 1035 §2.3.4: 255 octets on the wire, i.e. 253 characters without the final dot.
    if relative.len() > 253 {
        return Err(format!("`{name}` is longer than 253 characters"));
    }
    for label in relative.split('.') {
        let reason = if label.is_empty() {
            "has an empty label"
        } else if label.len() > 63 {
            "has a label longer than 63 characters (RFC 1035 §2.3.4)"
        } else if !label
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'))
        {
            "may hold only letters, digits, `-` and `_` (write IDNs as xn--)"
        } else {
            continue;
        };
        return Err(format!("`{name}` {reason}"));
    }
    Ok(format!("{}.", relative.to_ascii_lowercase()))
}

/// A zone as [`zone`] checked it: everything but its name (left empty), and its probe when
/// the file sets one.
struct Checked {
    zone: Zone,
    probe: Option<Probe>,
}

/// Everything of a zone but its name and default probe.
fn zone(c: &mut Check<'_>, ctx: &ZoneCtx<'_>, raw: &Spanned<RawZone>) -> Option<Checked> {
    let z = raw.get_ref();
    let (upstreams, resolv_conf) = match (&z.upstreams, &z.resolv_conf) {
        (Some(_), Some(path)) => {
            let reason = "set either `upstreams` or `resolv_conf`, not both";
            c.error(
                Some(path.span()),
                &format!("{}.resolv_conf", ctx.key),
                reason,
            );
            (None, None)
        }
        (Some(list), None) => (upstream_list(c, ctx, list), None),
        (None, Some(path)) => {
            let path_buf = ctx.base_dir.join(path.get_ref());
            (from_resolv_conf(c, ctx, path, &path_buf), Some(path_buf))
        }
        (None, None) => {
            let reason = "needs `upstreams` (addresses) or `resolv_conf` (a file listing them)";
            c.error(Some(raw.span()), &ctx.key, reason);
            (None, None)
        }
    };
    let transport = choice(
        c,
        &format!("{}.transport", ctx.key),
        &z.transport,
        TRANSPORTS,
    );
    let policy = choice(c, &format!("{}.policy", ctx.key), &z.policy, POLICIES);
    let prefix = format!("{}.cache", ctx.key);
    let ttl = match &z.cache {
        Some(t) => {
            let raw = [&t.min_ttl, &t.max_ttl, &t.negative_max_ttl, &t.servfail_ttl];
            ttl_fields(c, &prefix, raw, ctx.base)
        }
        None => Some(ctx.base.clone()),
    };
    let probe = match &z.probe {
        Some(raw) => match parse_probe(raw.get_ref()) {
            Ok(p) => Some(Some(p)),
            Err(reason) => {
                c.error(Some(raw.span()), &format!("{}.probe", ctx.key), reason);
                None
            }
        },
        None => Some(None),
    };
    let max_qps = max_qps(c, ctx, &z.max_qps);
    Some(Checked {
        zone: Zone {
            name: String::new(),
            upstreams: upstreams?,
            resolv_conf,
            transport: transport?,
            policy: policy?,
            cache: ttl?.values(),
            probe: Probe::apex("."),
            max_qps: max_qps?,
        },
        probe: probe?,
    })
}

/// The most a zone's upstream budget may be: far beyond any resolver's packet rate, and low
/// enough that one second's worth stays an exact count in an `f64`.
const MAX_QPS: f64 = 1e9;

/// `max_qps`: absent (no budget), or a positive number of queries a second.
fn max_qps(c: &mut Check<'_>, ctx: &ZoneCtx<'_>, raw: &Opt<f64>) -> Option<Option<f64>> {
    let Some(raw) = raw else {
        return Some(None);
    };
    let value = *raw.get_ref();
    if value.is_finite() && value > 0.0 && value <= MAX_QPS {
        return Some(Some(value));
    }
    let reason = format!("{value} is not a number of queries a second above 0 (at most 1e9)");
    c.error(Some(raw.span()), &format!("{}.max_qps", ctx.key), reason);
    None
}

/// `"NAME TYPE"`, e.g. `"kubernetes.default.svc.cluster.local. A"`.
pub fn parse_probe(text: &str) -> Result<Probe, String> {
    use hickory_proto::rr::RecordType;
    let mut words = text.split_whitespace();
    let (Some(name), Some(qtype), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!(
            "`{text}` is not `NAME TYPE` (e.g. \"kubernetes.default.svc.cluster.local. A\")"
        ));
    };
    let name = normalize_zone_name(name)?;
    let qtype = qtype
        .to_ascii_uppercase()
        .parse::<RecordType>()
        .ok()
        .filter(|t| !matches!(t, RecordType::AXFR | RecordType::IXFR | RecordType::OPT))
        .filter(|t| !matches!(t, RecordType::Unknown(_)))
        .ok_or_else(|| format!("`{qtype}` is not a record type to ask (e.g. A, AAAA, SOA, NS)"))?;
    Ok(Probe { name, qtype })
}

fn upstream_list(
    c: &mut Check<'_>,
    ctx: &ZoneCtx<'_>,
    list: &Spanned<Vec<Spanned<String>>>,
) -> Option<Vec<SocketAddr>> {
    let key = format!("{}.upstreams", ctx.key);
    let count = list.get_ref().len();
    if count == 0 || count > MAX_UPSTREAMS {
        let reason = format!("{count} upstreams: give 1 to {MAX_UPSTREAMS}");
        c.error(Some(list.span()), &key, reason);
        return None;
    }
    let mut upstreams = Vec::new();
    let mut ok = true;
    for text in list.get_ref() {
        let reason = match expand_upstream(text.get_ref(), ctx.env) {
            Err(reason) => reason,
            Ok(addr) if ctx.intercepted.contains(&addr.ip()) => format!(
                "{addr} is intercepted (`[interface] intercept`), so it is nodedns itself: \
                 forward to the `kube-dns-upstream` Service instead, \
                 \"${{KUBE_DNS_UPSTREAM_SERVICE_HOST}}:53\""
            ),
            Ok(addr) if is_own_address(addr, ctx.listen) => {
                format!("{addr} is nodedns's own listen address: forwarding loop")
            }
            Ok(addr) if upstreams.contains(&addr) => format!("{addr} is listed twice"),
            Ok(addr) => {
                upstreams.push(addr);
                continue;
            }
        };
        c.error(Some(text.span()), &key, reason);
        ok = false;
    }
    ok.then_some(upstreams)
}

fn from_resolv_conf(
    c: &mut Check<'_>,
    ctx: &ZoneCtx<'_>,
    raw: &Spanned<String>,
    path: &Path,
) -> Option<Vec<SocketAddr>> {
    let key = format!("{}.resolv_conf", ctx.key);
    if raw.get_ref().is_empty() {
        c.error(Some(raw.span()), &key, "empty path");
        return None;
    }
    match resolv::upstreams_from_file(path, ctx.listen) {
        Ok(found) => Some(found.upstreams),
        Err(reason) => {
            c.error(Some(raw.span()), &key, reason);
            None
        }
    }
}

const TRANSPORTS: &[(&str, Transport)] = &[("udp", Transport::Udp), ("tcp", Transport::Tcp)];
const POLICIES: &[(&str, Policy)] = &[
    ("sequential", Policy::Sequential),
    ("random", Policy::Random),
    ("round_robin", Policy::RoundRobin),
    ("fastest", Policy::Fastest),
];

/// One of a fixed set of words; the first is the default.
fn choice<T: Copy>(
    c: &mut Check<'_>,
    key: &str,
    raw: &Opt<String>,
    words: &[(&str, T)],
) -> Option<T> {
    let Some(raw) = raw else {
        return words.first().map(|(_, v)| *v);
    };
    if let Some((_, v)) = words.iter().find(|(w, _)| w == raw.get_ref()) {
        return Some(*v);
    }
    let expected: Vec<String> = words.iter().map(|(w, _)| format!("\"{w}\"")).collect();
    let reason = format!(
        "unknown value `{}`: expected {}",
        raw.get_ref(),
        expected.join(", ")
    );
    c.error(Some(raw.span()), key, reason);
    None
}
