//! The TTL clamps: `[cache]`'s four, and each zone's, which inherit from them and may
//! override any; a zone's clamp is checked against the bounds as `[cache]`'s are.

use std::time::Duration;

use super::CacheTtl;
use super::bounds::{MAX_TTL_CAP, MIN_TTL_CAP, NEGATIVE_TTL_CAP, SERVFAIL_TTL_CAP};
use super::check::{Check, Field};
use super::raw::{Opt, RawCache, Scalar};
use super::units::format_duration;

/// The four TTL clamps, with where each came from.
#[derive(Debug, Clone)]
pub struct TtlFields {
    min: Field<Duration>,
    max: Field<Duration>,
    negative: Field<Duration>,
    servfail: Field<Duration>,
}

impl TtlFields {
    pub fn values(&self) -> CacheTtl {
        CacheTtl {
            min_ttl: self.min.value,
            max_ttl: self.max.value,
            negative_max_ttl: self.negative.value,
            servfail_ttl: self.servfail.value,
        }
    }

    pub(super) fn inherited(&self) -> TtlFields {
        TtlFields {
            min: self.min.inherited(),
            max: self.max.inherited(),
            negative: self.negative.inherited(),
            servfail: self.servfail.inherited(),
        }
    }

    pub(super) fn defaults() -> TtlFields {
        let default = |key: &str, value| Field::default_at(&format!("cache.{key}"), value);
        TtlFields {
            min: default("min_ttl", Duration::ZERO),
            max: default("max_ttl", Duration::from_secs(86_400)),
            negative: default("negative_max_ttl", Duration::from_secs(3_600)),
            servfail: default("servfail_ttl", Duration::from_secs(5)),
        }
    }
}

/// The `[cache]` TTL clamps.
pub fn global_ttl(c: &mut Check<'_>, raw: &RawCache) -> Option<TtlFields> {
    let raw = [
        &raw.min_ttl,
        &raw.max_ttl,
        &raw.negative_max_ttl,
        &raw.servfail_ttl,
    ];
    ttl_fields(c, "cache", raw, &TtlFields::defaults())
}

pub(super) fn ttl_fields(
    c: &mut Check<'_>,
    prefix: &str,
    [min, max, negative, servfail]: [&Opt<Scalar>; 4],
    base: &TtlFields,
) -> Option<TtlFields> {
    let min = ttl(c, &format!("{prefix}.min_ttl"), min, &base.min, MIN_TTL_CAP);
    let max = ttl(c, &format!("{prefix}.max_ttl"), max, &base.max, MAX_TTL_CAP);
    let negative = ttl(
        c,
        &format!("{prefix}.negative_max_ttl"),
        negative,
        &base.negative,
        NEGATIVE_TTL_CAP,
    );
    let servfail = ttl(
        c,
        &format!("{prefix}.servfail_ttl"),
        servfail,
        &base.servfail,
        Duration::MAX,
    )
    .filter(|field| servfail_within_cap(c, field));
    let fields = TtlFields {
        min: min?,
        max: max?,
        negative: negative?,
        servfail: servfail?,
    };
    c.not_above(&fields.min, &fields.max).then_some(fields)
}

fn servfail_within_cap(c: &mut Check<'_>, servfail: &Field<Duration>) -> bool {
    if servfail.value <= SERVFAIL_TTL_CAP {
        return true;
    }
    let reason = format!(
        "{} is above 5m: RFC 2308 §7.1 caches a server failure for at most five minutes",
        format_duration(servfail.value)
    );
    c.error(servfail.span.clone(), &servfail.key, reason);
    false
}

/// One TTL clamp: whole seconds (DNS TTLs are), at most `cap`; `base` when not set.
fn ttl(
    c: &mut Check<'_>,
    key: &str,
    raw: &Opt<Scalar>,
    base: &Field<Duration>,
    cap: Duration,
) -> Option<Field<Duration>> {
    if raw.is_none() {
        return Some(base.clone());
    }
    let field = c.duration(key, raw, base.value)?;
    if field.value.subsec_nanos() != 0 {
        c.error(field.span, key, "TTLs are whole seconds");
        return None;
    }
    c.at_most(Some(field), cap)
}
