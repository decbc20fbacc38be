//! Normalising an upstream response into the form the cache stores, and the facts about it
//! that caching policy needs. The walk here is also the validation every upstream answer
//! passes before it is cached or served: it checks each record with `validate` and keeps
//! what `scope` says belongs.

use super::names::{Name, Names};
use super::scope::{MAX_CHAIN, Scope};
use super::stored::{Analysis, Kind, Layout, WireError};
use super::validate::{check_rdata, rewrite_record};
use super::{
    ANCOUNT_AT, ARCOUNT_AT, EDNS_DO, EDNS_EDE, EDNS_UDP_SIZE, HEADER_LEN, Header, NSCOUNT_AT, flag,
    put_u16, put_u32, rcode, read_rr, rtype, u32_at, walk_options,
};

/// RFC 2181 §8: a TTL with the most significant bit set is treated as zero.
fn sane_ttl(ttl: u32) -> u32 {
    if ttl & 0x8000_0000 != 0 { 0 } else { ttl }
}

/// The parts of the upstream's OPT that survive normalisation.
#[derive(Debug, Clone, Copy)]
struct UpstreamOpt {
    /// Upper 8 bits of the extended rcode (RFC 6891 §6.1.3).
    rcode_high: u8,
    dnssec_ok: bool,
    /// Where its RDATA sits in the upstream message.
    rdata: (usize, usize),
}

/// Running state of the record walk.
#[derive(Debug, Default)]
struct Walk {
    counts: [u16; 3],
    min_ttl: Option<u32>,
    soa_ttl: Option<u32>,
    opt: Option<UpstreamOpt>,
    dropped: u16,
    /// Offset of the first record dropped: pointers below it still hold in `out`.
    first_drop: Option<usize>,
}

/// [`normalize_for_zone`] for the root zone: every owner is in it, and only the chain rule
/// and the validation apply.
pub fn normalize_response(resp: &[u8], out: &mut Vec<u8>) -> Result<(Analysis, Layout), WireError> {
    normalize_for_zone(resp, &[0], out)
}

/// Checks an upstream response and rewrites it into the form nodedns stores and serves.
///
/// Nothing that fails here may be cached or served (the forwarder counts it and asks the next
/// upstream): every name, owners and those inside the RDATA of the types `validate` knows,
/// must decompress with pointers that only aim where an earlier name begins (RFC 1035 §4.1.4,
/// see `names::Names`), every such RDATA
/// must have its type's shape and size, the section counts must match the records present,
/// and nothing may follow the last record.
///
/// What is kept: the question; in the answer section only the question's chain (records
/// owned by the qname and by each CNAME/DNAME target in turn, with their RRSIGs); in the
/// authority and additional sections only records owned by `zone` (the apex of the zone the
/// query was forwarded for, wire form, lowercased) or names below it. What else was there is
/// dropped and counted in [`Analysis::dropped`]; records after a dropped one get their names
/// re-encoded, as their compression pointers may aim into it. Our own OPT is appended as the
/// last record (UDP size 1232; DO flag and extended rcode taken from the upstream's OPT; only
/// Extended DNS Error options (code 15) kept: cookies, ECS and padding are dropped). No OPT is
/// added when upstream sent none.
///
/// Writes into `out` (cleared first) the message followed by its TTL offset table (see
/// [`Layout`]: `out` is not a DNS message; [`Layout::message`] is), and returns its analysis
/// and layout. Records after the upstream's OPT are dropped (the OPT is almost always last).
/// TTLs with the top bit set are stored as 0 (RFC 2181 §8).
pub fn normalize_for_zone(
    resp: &[u8],
    zone: &[u8],
    out: &mut Vec<u8>,
) -> Result<(Analysis, Layout), WireError> {
    out.clear();
    if resp.len() > usize::from(u16::MAX) {
        return Err(WireError::Trailing);
    }
    let header = Header::parse(resp).ok_or(WireError::Truncated("header"))?;
    let mut scope = Scope::new(zone);
    let mut names = Names::default();
    let mut at = HEADER_LEN;
    for _ in 0..header.qdcount {
        let name = (header.qdcount == 1).then(|| scope.question_mut());
        at = names
            .read(resp, at, name)
            .map_err(|e| WireError::walk(e, "question"))?
            + 4;
    }
    if at > resp.len() {
        return Err(WireError::Truncated("question"));
    }
    out.extend_from_slice(&resp[..at]);
    let mut layout = Layout {
        // Fits: `at` is within a message of at most 65535 bytes.
        question_end: u16::try_from(at).map_err(|_| WireError::Trailing)?,
        ..Layout::default()
    };
    let mut walk = Walk::default();
    at = walk_answers(
        resp,
        at,
        header.ancount,
        &mut scope,
        &mut names,
        &mut walk,
        out,
    )?;
    for (section, count) in [(1, header.nscount), (2, header.arcount)] {
        for _ in 0..count {
            at = walk_record(resp, at, section, &mut scope, &mut names, &mut walk, out)?;
        }
    }
    if at != resp.len() {
        return Err(WireError::Trailing);
    }
    let mut arcount = walk.counts[2];
    if let Some(opt) = walk.opt {
        layout.opt_offset = u16::try_from(out.len()).map_err(|_| WireError::Trailing)?;
        write_our_opt(resp, opt, out)?;
        arcount += 1;
    }
    put_u16(out, ANCOUNT_AT, walk.counts[0]);
    put_u16(out, NSCOUNT_AT, walk.counts[1]);
    put_u16(out, ARCOUNT_AT, arcount);
    let records = walk.counts.iter().map(|&c| usize::from(c)).sum();
    layout.ttl_count = append_ttl_offsets(out, layout.question_end(), records)?;
    let rcode_high = walk.opt.map_or(0, |o| o.rcode_high);
    let full_rcode = (u16::from(rcode_high) << 4) | header.rcode();
    let analysis = Analysis {
        kind: classify(full_rcode, walk.counts[0], walk.soa_ttl),
        rcode: full_rcode,
        truncated: header.flags & flag::TC != 0,
        min_ttl: walk.min_ttl,
        dropped: walk.dropped,
    };
    Ok((analysis, layout))
}

/// Walks the `count` answer records at `at` and returns the offset after them. A record
/// can come before the CNAME that puts its owner on the chain; when the chain grew after a
/// record was dropped, the section is walked again with the longer chain (at most once per
/// name the chain can hold, as each further walk needs a new name).
fn walk_answers(
    resp: &[u8],
    start: usize,
    count: u16,
    scope: &mut Scope<'_>,
    names: &mut Names,
    walk: &mut Walk,
    out: &mut Vec<u8>,
) -> Result<usize, WireError> {
    let question_end = out.len();
    for _ in 0..=MAX_CHAIN {
        let mut at = start;
        let mut chain_at_first_drop = None;
        for _ in 0..count {
            let before = walk.dropped;
            at = walk_record(resp, at, 0, scope, names, walk, out)?;
            if walk.dropped != before && chain_at_first_drop.is_none() {
                chain_at_first_drop = Some(scope.len());
            }
        }
        if chain_at_first_drop.is_none_or(|n| n == scope.len()) {
            return Ok(at);
        }
        out.truncate(question_end);
        *walk = Walk::default();
    }
    Err(WireError::BadName("CNAME chain"))
}

/// Appends the TTL offset table of the `records` records (OPT excluded) that follow the
/// question in the message `out` holds, and returns their count. The records are found by
/// walking the message once more: their offsets are only final once the message is, and a
/// second walk over a few records costs less than a buffer to keep them in meanwhile.
fn append_ttl_offsets(
    out: &mut Vec<u8>,
    question_end: usize,
    records: usize,
) -> Result<u16, WireError> {
    let count = u16::try_from(records).map_err(|_| WireError::Trailing)?;
    let message_len = out.len();
    let mut at = question_end;
    for _ in 0..records {
        let rr = read_rr(&out[..message_len], at).map_err(|e| WireError::walk(e, "record"))?;
        let ttl_at = u16::try_from(rr.ttl_at).map_err(|_| WireError::Trailing)?;
        out.extend_from_slice(&ttl_at.to_le_bytes());
        at = rr.end;
    }
    Ok(count)
}

/// Reads one record of `section` (0 answer, 1 authority, 2 additional) at `at`, checks it,
/// copies it into `out` unless it is the OPT, follows it or is out of scope (dropped and
/// counted), and returns the offset after it.
fn walk_record(
    resp: &[u8],
    at: usize,
    section: usize,
    scope: &mut Scope<'_>,
    names: &mut Names,
    walk: &mut Walk,
    out: &mut Vec<u8>,
) -> Result<usize, WireError> {
    let rr = read_rr(resp, at).map_err(|e| WireError::walk(e, "record"))?;
    // Most answers are owned by a name on the chain through a pointer to where it was read
    // (the question at offset 12, a CNAME's target): when that place is before this record,
    // the owner needs no decompression, only the pointer's check.
    let owner_on_chain = section == 0
        && rr.ttl_at == rr.start + 6
        && owner_pointer(resp, rr.start).is_some_and(|t| t < rr.start && scope.chain_name_at(t));
    // The owner's bytes are only needed to compare names; every name is checked anyway.
    // The buffer is only made (255 bytes zeroed) when they are needed.
    let need_owner = !owner_on_chain && (section == 0 || !scope.zone_is_root());
    let mut owner = need_owner.then(Name::default);
    names
        .read(resp, rr.start, owner.as_mut())
        .map_err(|e| WireError::walk(e, "record owner"))?;
    check_rdata(resp, names, &rr).map_err(|e| WireError::walk(e, "RDATA"))?;
    if rr.rtype == rtype::OPT {
        if section != 2 {
            return Err(WireError::MisplacedOpt);
        }
        if walk.opt.is_some() {
            return Err(WireError::DuplicateOpt);
        }
        let [rcode_high, ..] = rr.ttl.to_be_bytes();
        walk.opt = Some(UpstreamOpt {
            rcode_high,
            dnssec_ok: rr.ttl & EDNS_DO != 0,
            rdata: (rr.rdata, rr.end),
        });
        return Ok(rr.end);
    }
    if walk.opt.is_some() {
        return Ok(rr.end);
    }
    let keep = match (section, &owner) {
        (0, owner) => scope
            .answer(resp, names, &rr, owner.as_ref())
            .map_err(|e| WireError::walk(e, "RDATA"))?,
        (_, Some(owner)) => scope.in_zone(owner),
        // The root zone: every owner is in it.
        (_, None) => true,
    };
    if !keep {
        walk.dropped = walk.dropped.saturating_add(1);
        // Everything before the first dropped record sits at the same offset in `out`.
        walk.first_drop.get_or_insert(rr.start);
        return Ok(rr.end);
    }
    let ttl = sane_ttl(rr.ttl);
    let ttl_at = match walk.first_drop {
        None => {
            let ttl_at = out.len() + (rr.ttl_at - rr.start);
            out.extend_from_slice(&resp[rr.start..rr.end]);
            ttl_at
        }
        Some(keep_below) => rewrite_record(resp, names, &rr, keep_below, out)
            .map_err(|e| WireError::walk(e, "record"))?,
    };
    put_u32(out, ttl_at, ttl);
    if let Some(count) = walk.counts.get_mut(section) {
        *count += 1;
    }
    if section < 2 {
        walk.min_ttl = Some(walk.min_ttl.map_or(ttl, |m| m.min(ttl)));
    }
    if section == 1 && rr.rtype == rtype::SOA && walk.soa_ttl.is_none() {
        // RFC 2308 §5: the negative TTL is the lesser of the SOA's TTL and its MINIMUM,
        // the last 32-bit field of the RDATA (RFC 1035 §3.3.13; its shape was checked).
        let minimum = rr
            .end
            .checked_sub(4)
            .filter(|&m| m >= rr.rdata + 2)
            .and_then(|m| u32_at(resp, m))
            .ok_or(WireError::Truncated("SOA"))?;
        walk.soa_ttl = Some(ttl.min(sane_ttl(minimum)));
    }
    Ok(rr.end)
}

/// The target of the compression pointer at `at`, if there is one there.
fn owner_pointer(resp: &[u8], at: usize) -> Option<usize> {
    match resp.get(at..at + 2)? {
        &[hi, lo] if hi & 0xC0 == 0xC0 => Some((usize::from(hi & 0x3F) << 8) | usize::from(lo)),
        _ => None,
    }
}

/// Appends our OPT: upstream's extended rcode and DO, our UDP size, version 0, and only the
/// upstream's Extended DNS Error options (RFC 8914), which tell the client why it failed.
fn write_our_opt(resp: &[u8], opt: UpstreamOpt, out: &mut Vec<u8>) -> Result<(), WireError> {
    let ttl = (u32::from(opt.rcode_high) << 24) | if opt.dnssec_ok { EDNS_DO } else { 0 };
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let rdata = &resp[opt.rdata.0..opt.rdata.1];
    walk_options(rdata, |code, bytes| {
        if code == EDNS_EDE {
            out.extend_from_slice(bytes);
        }
    })
    .map_err(|e| WireError::walk(e, "OPT option"))?;
    // The kept options are a subset of an RDATA whose length fitted in 16 bits.
    let rdlen = u16::try_from(out.len() - rdlen_at - 2).map_err(|_| WireError::Trailing)?;
    put_u16(out, rdlen_at, rdlen);
    Ok(())
}

fn classify(full_rcode: u16, ancount: u16, soa_ttl: Option<u32>) -> Kind {
    match full_rcode {
        rcode::NOERROR if ancount > 0 => Kind::Positive,
        rcode::NOERROR => Kind::NoData { soa_ttl },
        rcode::NXDOMAIN => Kind::NxDomain { soa_ttl },
        rcode::SERVFAIL => Kind::ServFail,
        other => Kind::Other(other),
    }
}
