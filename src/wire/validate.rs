//! The checks an upstream answer's records must pass before anything of it is cached or
//! served: every name decompresses under strict rules, and every RDATA has its type's shape.
//!
//! This file owns the RDATA shapes of the types nodedns knows ([`shape`]), checking a
//! record's RDATA against its shape ([`check_rdata`]), and re-encoding a record whose
//! compression pointers would dangle once records before it are dropped
//! ([`rewrite_record`]). Names are read through `names`; which records are kept is
//! `scope`'s decision.

use super::names::Names;
use super::{Rr, WalkError, class, rtype, u16_at};

/// One field of an RDATA layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// A domain name, possibly compressed.
    Name,
    /// This many bytes.
    Fixed(usize),
    /// A `<character-string>`: a length byte and that many bytes (RFC 1035 §3.3).
    Str,
    /// `<character-string>`s to the end of the RDATA (TXT, RFC 1035 §3.3.14).
    Strs,
    /// SvcParams to the end: key, length, value (RFC 9460 §2.2).
    Params,
    /// Anything to the end (key material, signatures, bitmaps, opaque data).
    Rest,
}

use Field::{Fixed, Name as N, Params, Rest, Str, Strs};

/// The RDATA layout of `rtype` in class `class`; `None` for types nodedns treats as opaque
/// (RFC 3597 §4: a type not in this list must not carry compressed names, so there is
/// nothing to check and nothing a dropped record can leave dangling). The list holds every
/// type of RFC 3597 §4 whose RDATA holds names (NS, MD, MF, CNAME, SOA, MB, MG, MR, PTR,
/// MINFO, MX; RP, AFSDB, RT, SIG, PX, NXT, NAPTR, SRV), the later ones that do (KX, DNAME,
/// RRSIG, NSEC, SVCB, HTTPS), and the common fixed-size ones. A layout that does not end in
/// an open field must fill the RDATA exactly.
pub(super) fn shape(rtype: u16, class: u16) -> Option<&'static [Field]> {
    Some(match rtype {
        // CHAOS A is a name and an address (RFC 1035 §3.4.1 is for IN only).
        rtype::A if class == class::IN => &[Fixed(4)],
        // NS, MD, MF, CNAME, MB, MG, MR, PTR, DNAME.
        2..=5 | 7..=9 | 12 | 39 => &[N],
        rtype::SOA => &[N, N, Fixed(20)],
        // WKS: address, protocol, bitmap.
        11 => &[Fixed(5), Rest],
        // HINFO.
        13 => &[Str, Str],
        // MINFO, RP.
        14 | 17 => &[N, N],
        // MX, AFSDB, RT, KX: preference then a name.
        15 | 18 | 21 | 36 => &[Fixed(2), N],
        rtype::TXT => &[Strs],
        // SIG, RRSIG: 18 fixed bytes, the signer's name, the signature.
        24 | 46 => &[Fixed(18), N, Rest],
        // PX.
        26 => &[Fixed(2), N, N],
        rtype::AAAA => &[Fixed(16)],
        // NXT, NSEC: next name, type bitmap.
        30 | 47 => &[N, Rest],
        // SRV: priority, weight, port, target.
        33 => &[Fixed(6), N],
        // NAPTR: order, preference, flags, services, regexp, replacement (RFC 3403 §4.1).
        35 => &[Fixed(4), Str, Str, Str, N],
        // DS, DNSKEY: 4 fixed bytes, then digest or key.
        43 | 48 => &[Fixed(4), Rest],
        // NSEC3: algorithm, flags, iterations, salt, next hash, bitmap (RFC 5155 §3.2).
        50 => &[Fixed(4), Str, Str, Rest],
        // NSEC3PARAM.
        51 => &[Fixed(4), Str],
        // TLSA: usage, selector, matching type, data.
        52 => &[Fixed(3), Rest],
        // SVCB, HTTPS: priority, target, params.
        64 | 65 => &[Fixed(2), N, Params],
        // CAA: flags, tag, value.
        257 => &[Fixed(1), Str, Rest],
        _ => return None,
    })
}

/// Walks the RDATA of `rr` along `fields` and calls `each` with every field and its span in
/// `msg`; `Err` when the RDATA does not have that shape.
fn walk_fields(
    msg: &[u8],
    names: &mut Names,
    rr: &Rr,
    fields: &[Field],
    mut each: impl FnMut(Field, usize, usize),
) -> Result<(), WalkError> {
    let mut at = rr.rdata;
    for &field in fields {
        let end = match field {
            N => {
                let end = names.read(msg, at, None)?;
                // A name must end inside the RDATA, not run on into the next record.
                if end > rr.end {
                    return Err(WalkError::BadRdata);
                }
                end
            }
            Fixed(n) => at + n,
            Str => at + 1 + usize::from(*msg.get(at).ok_or(WalkError::BadRdata)?),
            Strs => {
                let mut s = at;
                while s < rr.end {
                    s += 1 + usize::from(*msg.get(s).ok_or(WalkError::BadRdata)?);
                }
                s
            }
            Params => params_end(msg, at, rr.end)?,
            Rest => rr.end,
        };
        if end > rr.end {
            return Err(WalkError::BadRdata);
        }
        each(field, at, end);
        at = end;
    }
    if at == rr.end {
        Ok(())
    } else {
        Err(WalkError::BadRdata)
    }
}

/// Where SvcParams starting at `at` end: each is a key, a length and that many bytes, with
/// keys strictly increasing (RFC 9460 §2.2).
fn params_end(msg: &[u8], mut at: usize, end: usize) -> Result<usize, WalkError> {
    let mut last: Option<u16> = None;
    while at < end {
        let key = u16_at(msg, at).ok_or(WalkError::BadRdata)?;
        let len = u16_at(msg, at + 2).ok_or(WalkError::BadRdata)?;
        if last.is_some_and(|l| key <= l) {
            return Err(WalkError::BadRdata);
        }
        last = Some(key);
        at += 4 + usize::from(len);
    }
    Ok(at)
}

/// Checks the RDATA of `rr` in `msg` against its type's shape: sizes exact, names valid
/// ([`Names::read`]) and ending inside the RDATA.
pub(super) fn check_rdata(msg: &[u8], names: &mut Names, rr: &Rr) -> Result<(), WalkError> {
    // The types most answers hold, without the general walk.
    let fixed = match (rr.rtype, rr.class) {
        (rtype::A, class::IN) => Some(4),
        (rtype::AAAA, _) => Some(16),
        _ => None,
    };
    if let Some(len) = fixed {
        return if rr.end - rr.rdata == len {
            Ok(())
        } else {
            Err(WalkError::BadRdata)
        };
    }
    match shape(rr.rtype, rr.class) {
        Some(fields) => walk_fields(msg, names, rr, fields, |_, _, _| {}),
        None => Ok(()),
    }
}

/// Appends `rr` of `msg` to `out` with every name re-encoded so that it points nowhere at
/// or past `keep_below` (a name is written out in full from the first pointer that would),
/// and returns the offset of its TTL field in `out`. Used for the records after one that
/// was dropped: their pointers may aim into it, and everything from it on has moved. Only
/// called on records [`check_rdata`] accepted.
pub(super) fn rewrite_record(
    msg: &[u8],
    names: &mut Names,
    rr: &Rr,
    keep_below: usize,
    out: &mut Vec<u8>,
) -> Result<usize, WalkError> {
    // The owner was checked when the record was read.
    copy_name(msg, rr.start, keep_below, out)?;
    let fixed = rr.ttl_at - 4;
    out.extend_from_slice(msg.get(fixed..rr.rdata - 2).ok_or(WalkError::Truncated)?);
    // Type, class, TTL: the TTL is the last four of those eight bytes.
    let ttl_at = out.len() - 4;
    let rdlen_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut result = Ok(());
    match shape(rr.rtype, rr.class) {
        Some(fields) => walk_fields(msg, names, rr, fields, |field, from, to| {
            if field == N {
                if let Err(e) = copy_name(msg, from, keep_below, out) {
                    result = Err(e);
                }
            } else {
                out.extend_from_slice(msg.get(from..to).unwrap_or_default());
            }
        })?,
        None => out.extend_from_slice(msg.get(rr.rdata..rr.end).ok_or(WalkError::Truncated)?),
    }
    result?;
    let rdlen = u16::try_from(out.len() - rdlen_at - 2).map_err(|_| WalkError::TooLong)?;
    super::put_u16(out, rdlen_at, rdlen);
    Ok(ttl_at)
}

/// Appends the name at `at`, checked already, to `out`: labels copied, and a pointer kept
/// only while it aims below `keep_below` (those offsets are the same in `out`); otherwise
/// followed. Bounded all the same: every pointer followed must aim backwards.
fn copy_name(msg: &[u8], at: usize, keep_below: usize, out: &mut Vec<u8>) -> Result<(), WalkError> {
    let mut pos = at;
    loop {
        let byte = *msg.get(pos).ok_or(WalkError::Truncated)?;
        if byte & 0xC0 == 0xC0 {
            let low = *msg.get(pos + 1).ok_or(WalkError::Truncated)?;
            let target = (usize::from(byte & 0x3F) << 8) | usize::from(low);
            if target < keep_below {
                out.extend_from_slice(&[byte, low]);
                return Ok(());
            }
            if target >= pos {
                return Err(WalkError::BadPointer);
            }
            pos = target;
            continue;
        }
        let next = pos + 1 + usize::from(byte);
        out.extend_from_slice(msg.get(pos..next).ok_or(WalkError::Truncated)?);
        if byte == 0 {
            return Ok(());
        }
        pos = next;
    }
}
