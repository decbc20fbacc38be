//! The checks a snapshot entry passes before it may be served again, and the TTL and stale
//! window it gets under the config nodedns runs now.
//!
//! An entry is held to what the query path would have cached: its key is a key
//! [`crate::wire::parse_query`] can produce (known flag bits, a lowercased uncompressed
//! name, then type and class), its message is a DNS response to exactly that question
//! (QR set, opcode QUERY, one question, name equal ignoring case, type and class equal), the
//! message passes the same wire checks an upstream answer passes before it is cached, and
//! the message is of the kind the entry claims and cacheable at all.

use std::time::Duration;

use super::{RawEntry, kind_from};
use crate::cache::{self, EntryKind, TtlPolicy};
use crate::wire::{self, Analysis, Header, Kind, Layout, WireError};

/// Bits a cache key's flags byte may carry: RD, CD and DO (see `wire::query`).
const KEY_FLAGS: u8 = 0x07;
const KEY_DO: u8 = 0x04;
/// The DO bit in an OPT record's TTL field (RFC 3225 §3).
const OPT_DO: u32 = 0x8000;

/// Why an entry, and with it the whole file, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("key is not a cache key: {0}")]
    Key(&'static str),
    #[error("response is not a DNS message: {0}")]
    Message(WireError),
    #[error("message is not a response (QR, opcode or question count)")]
    NotAResponse,
    #[error("response answers a different question than the key asks")]
    Question,
    #[error("response is never cached (truncated, rcode {0}, or negative without SOA)")]
    NotCacheable(u16),
    #[error("entry says {claimed:?} but the response is {actual:?}")]
    KindMismatch {
        claimed: EntryKind,
        actual: EntryKind,
    },
    #[error("response carries DNSSEC OK but the key was asked without it")]
    DnssecOk,
    #[error("TTL 0 (such an entry is never stored)")]
    ZeroTtl,
}

/// The wall clock at load and the current stale window, both in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub wall_ms: u64,
    pub stale_max_ms: u64,
}

/// An entry that passed every check, ready for [`crate::cache::Cache::restore`].
pub(super) struct Checked<'a> {
    pub key: &'a [u8],
    pub stored: Vec<u8>,
    pub layout: Layout,
    pub kind: EntryKind,
    pub ttl: u32,
    /// How long ago it was inserted.
    pub age: Duration,
    /// The zone index the current config's policy gives it.
    pub zone: u8,
}

/// What becomes of a well-formed entry.
pub(super) enum Verdict<'a> {
    Restore(Checked<'a>),
    /// Past its stale window.
    Expired,
    /// The current config would not cache it.
    NotCachedNow,
}

/// Checks one entry completely and works out its TTL and age under the current config.
pub(super) fn check_entry<'a>(
    raw: &RawEntry<'a>,
    policy: &impl Fn(&[u8]) -> Option<TtlPolicy>,
    window: Window,
) -> Result<Verdict<'a>, EntryError> {
    let claimed = kind_from(raw.kind).ok_or(EntryError::Kind(raw.kind))?;
    let key = parse_key(raw.key)?;
    check_question(raw.response, &key)?;
    let mut stored = Vec::with_capacity(raw.response.len() + 16);
    let (analysis, layout) = validate_response(raw.response, &mut stored)?;
    check_dnssec_ok(&key, &stored, layout)?;
    let actual = cacheable_kind(&analysis)?;
    if actual != claimed {
        return Err(EntryError::KindMismatch { claimed, actual });
    }
    if raw.ttl == 0 {
        return Err(EntryError::ZeroTtl);
    }
    // The TTL the current config gives this message, never more than the one it had.
    let Some((zone, (_, ttl_now))) =
        policy(key.qname).and_then(|p| Some((p.zone, cache::cache_ttl(&analysis, &p)?)))
    else {
        return Ok(Verdict::NotCachedNow);
    };
    let ttl = raw.ttl.min(ttl_now);
    let ttl_ms = u64::from(ttl) * 1000;
    let window_end = raw
        .inserted
        .saturating_add(ttl_ms)
        .saturating_add(window.stale_max_ms)
        .min(raw.stale_until);
    if window_end <= window.wall_ms {
        return Ok(Verdict::Expired);
    }
    // An insert time in the future (a clock stepped back) counts as now, never as later:
    // it must not stretch the entry's life.
    let age = Duration::from_millis(window.wall_ms.saturating_sub(raw.inserted));
    Ok(Verdict::Restore(Checked {
        key: raw.key,
        stored,
        layout,
        kind: claimed,
        ttl,
        age,
        zone,
    }))
}

/// The one place a stored response is judged as a DNS message: the same normalisation an
/// upstream answer gets before the query path caches it. Full validation of upstream
/// answers (names, compression pointers, RDATA sizes), once `wire` has it, is called here.
fn validate_response(
    response: &[u8],
    stored: &mut Vec<u8>,
) -> Result<(Analysis, Layout), EntryError> {
    wire::normalize_response(response, stored).map_err(EntryError::Message)
}

/// A cache key, split.
struct Key<'a> {
    flags: u8,
    /// Lowercased, uncompressed, ending in the root label.
    qname: &'a [u8],
    /// Type and class, as on the wire.
    tail: &'a [u8],
}

/// Splits a key as [`crate::wire::parse_query`] builds them, refusing any it could not.
fn parse_key(key: &[u8]) -> Result<Key<'_>, EntryError> {
    let (&flags, rest) = key.split_first().ok_or(EntryError::Key("empty"))?;
    if flags & !KEY_FLAGS != 0 {
        return Err(EntryError::Key("unknown flag bits"));
    }
    let mut at = 0;
    loop {
        let len = usize::from(
            *rest
                .get(at)
                .ok_or(EntryError::Key("name runs off the end"))?,
        );
        if len > 63 {
            return Err(EntryError::Key("label longer than 63 bytes or compressed"));
        }
        let label = rest
            .get(at + 1..at + 1 + len)
            .ok_or(EntryError::Key("name runs off the end"))?;
        if label.iter().any(u8::is_ascii_uppercase) {
            return Err(EntryError::Key("name is not lowercased"));
        }
        at += 1 + len;
        if at > wire::MAX_NAME {
            return Err(EntryError::Key("name longer than 255 bytes"));
        }
        if len == 0 {
            break;
        }
    }
    let (qname, tail) = rest.split_at(at);
    if tail.len() != 4 {
        return Err(EntryError::Key("not exactly type and class after the name"));
    }
    Ok(Key { flags, qname, tail })
}

/// Checks that `response` is a response to the key's question.
fn check_question(response: &[u8], key: &Key<'_>) -> Result<(), EntryError> {
    let header =
        Header::parse(response).ok_or(EntryError::Message(WireError::Truncated("header")))?;
    if !header.qr() || header.opcode() != 0 || header.qdcount != 1 {
        return Err(EntryError::NotAResponse);
    }
    let start = wire::HEADER_LEN;
    let name = response
        .get(start..start + key.qname.len())
        .ok_or(EntryError::Question)?;
    let tail = response
        .get(start + key.qname.len()..start + key.qname.len() + 4)
        .ok_or(EntryError::Question)?;
    // Length bytes are at most 63 and never change under ASCII case folding, so equal bytes
    // ignoring case mean the same labels (as `wire::check_reply` compares them).
    if name.eq_ignore_ascii_case(key.qname) && tail == key.tail {
        Ok(())
    } else {
        Err(EntryError::Question)
    }
}

/// A response that says DNSSEC OK answers only a query that asked for it (RFC 3225 §3: the
/// DO bit is copied from the query), so it must not be served to clients that did not.
fn check_dnssec_ok(key: &Key<'_>, stored: &[u8], layout: Layout) -> Result<(), EntryError> {
    let Some(opt) = layout.opt_offset() else {
        return Ok(());
    };
    let ttl = layout
        .message(stored)
        .get(opt + 5..opt + 9)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    if ttl & OPT_DO != 0 && key.flags & KEY_DO == 0 {
        return Err(EntryError::DnssecOk);
    }
    Ok(())
}

/// The kind the cache would store this message as, under any config; an error for a
/// message no config caches.
fn cacheable_kind(analysis: &Analysis) -> Result<EntryKind, EntryError> {
    let never = EntryError::NotCacheable(analysis.rcode);
    if analysis.truncated {
        return Err(never);
    }
    match analysis.kind {
        Kind::Positive => Ok(EntryKind::Success),
        Kind::NxDomain { soa_ttl: Some(_) } | Kind::NoData { soa_ttl: Some(_) } => {
            Ok(EntryKind::Denial)
        }
        Kind::ServFail => Ok(EntryKind::ServFail),
        Kind::NxDomain { soa_ttl: None } | Kind::NoData { soa_ttl: None } | Kind::Other(_) => {
            Err(never)
        }
    }
}
