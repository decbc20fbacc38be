//! Byte-level DNS message work on `&[u8]`: the packet path's parser and editor.
//!
//! This module owns everything nodedns reads or writes inside a DNS message without a full
//! decode: the header, the question (walked and lowercased into a stack buffer), the client's
//! OPT record, the upstream query we build, the checks an upstream reply must pass (RFC 5452),
//! the analysis a response gets before it is cached (TTLs, RFC 2308 negative TTL, record
//! layout), the per-client rewrite of a stored response (ID, question case, aged TTLs, OPT
//! strip, truncation to the client's size limit), and the header rule every reply follows.
//!
//! It does not own policy (what is cacheable for how long, what counts as an upstream failure):
//! it reports facts, and the cache and forwarder decide. Nothing here allocates on the query
//! path except [`normalize_response`], which runs once per upstream answer.
//!
//! Files: `query` (client side: parse, error replies), `chaos` (the CHAOS identity answers),
//! `upstream` (the query we send and the reply check), `response` (validating and normalising
//! an upstream answer for the cache), `validate` (name decompression and RDATA shapes),
//! `scope` (which records belong: the question's chain, the zone), `reply` (serving a stored answer), `reply_header` (the ID and flags
//! of every reply). The record walker shared by all of them lives here.
//!
//! hickory-proto is the oracle for this module's tests, never a dependency of its code.

mod chaos;
mod names;
mod query;
mod reply;
mod reply_header;
mod response;
mod scope;
mod stored;
mod upstream;
mod validate;

#[cfg(test)]
mod tests;

pub use chaos::{Identity, chaos_reply};
pub use query::{
    ClientEdns, Ede, Query, QueryError, ede, error_reply, error_reply_ede, name_text, parse_query,
    refused_by_header,
};
pub use reply::{Client, TtlRewrite, write_reply};
pub use reply_header::{ClientHeader, set_reply_header};
pub use response::{normalize_for_zone, normalize_response};
pub use stored::{Analysis, Kind, Layout, WireError};
pub use upstream::{Mismatch, build_upstream_query, check_reply};

/// Length of the fixed DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// Longest qname in wire form, including the root label (RFC 1035 §2.3.4).
pub const MAX_NAME: usize = 255;
/// Size of a cache key: one flags byte, the qname, qtype and qclass.
pub const MAX_KEY: usize = 1 + MAX_NAME + 4;
/// UDP payload size we advertise upstream and cap client sizes at (DNS Flag Day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Plain DNS over UDP without EDNS (RFC 1035 §4.2.1).
pub const PLAIN_UDP_SIZE: usize = 512;

/// Response codes nodedns produces or reacts to (RFC 1035 §4.1.1, RFC 6891 §9).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// Extended rcode 16: needs an OPT record to be expressed.
    pub const BADVERS: u16 = 16;
}

/// Record types nodedns looks at.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
}

/// Classes nodedns looks at.
pub mod class {
    pub const IN: u16 = 1;
    pub const CH: u16 = 3;
}

/// Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD).
pub mod flag {
    pub const QR: u16 = 0x8000;
    pub const AA: u16 = 0x0400;
    pub const TC: u16 = 0x0200;
    pub const RD: u16 = 0x0100;
    pub const RA: u16 = 0x0080;
    pub const AD: u16 = 0x0020;
    pub const CD: u16 = 0x0010;
    /// Mask of the opcode field; shift right by 11 to read it.
    pub const OPCODE_MASK: u16 = 0x7800;
    /// Mask of the header part of the rcode.
    pub const RCODE_MASK: u16 = 0x000F;
}

/// The DO bit in an OPT record's TTL field (RFC 3225 §3).
const EDNS_DO: u32 = 0x8000;
/// EDNS option code of Extended DNS Errors (RFC 8914 §2).
const EDNS_EDE: u16 = 15;

/// The fixed header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    /// Reads the header; `None` when fewer than 12 bytes.
    pub fn parse(buf: &[u8]) -> Option<Header> {
        Some(Header {
            id: u16_at(buf, 0)?,
            flags: u16_at(buf, 2)?,
            qdcount: u16_at(buf, 4)?,
            ancount: u16_at(buf, 6)?,
            nscount: u16_at(buf, 8)?,
            arcount: u16_at(buf, 10)?,
        })
    }
    pub fn qr(&self) -> bool {
        self.flags & flag::QR != 0
    }
    pub fn opcode(&self) -> u8 {
        // Four bits after the shift: always fits.
        ((self.flags & flag::OPCODE_MASK) >> 11) as u8
    }
    pub fn tc(&self) -> bool {
        self.flags & flag::TC != 0
    }
    pub fn rd(&self) -> bool {
        self.flags & flag::RD != 0
    }
    pub fn cd(&self) -> bool {
        self.flags & flag::CD != 0
    }
    /// The low 4 bits of the rcode (the header part).
    pub fn rcode(&self) -> u16 {
        self.flags & flag::RCODE_MASK
    }

    /// Appends the header in wire form.
    fn write(&self, out: &mut Vec<u8>) {
        for v in [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Offsets of the count fields inside the header.
const ANCOUNT_AT: usize = 6;
const NSCOUNT_AT: usize = 8;
const ARCOUNT_AT: usize = 10;

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Overwrites two bytes in a buffer this module built; out-of-range writes are ignored
/// (callers pass offsets they computed from the same buffer).
fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    if let Some(b) = buf.get_mut(at..at + 2) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    if let Some(b) = buf.get_mut(at..at + 4) {
        b.copy_from_slice(&v.to_be_bytes());
    }
}

/// Appends an OPT record with no options (RFC 6891 §6.1.2): root owner, our UDP size in the
/// class field, `ttl` carrying extended rcode, version 0 and the DO bit.
fn write_bare_opt(out: &mut Vec<u8>, ttl: u32) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
}

/// Why a name or record could not be walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WalkError {
    /// The buffer ends inside the name or record.
    Truncated,
    /// A label type 01 or 10: extended labels (RFC 6891 §5 deprecates them) or reserved.
    BadLabel,
    /// More than 255 bytes before the end of the name.
    TooLong,
    /// A compression pointer that does not point before the labels being read, or into the
    /// header (RFC 1035 §4.1.4 allows pointers to prior occurrences only).
    BadPointer,
    /// RDATA of another size or layout than its type has.
    BadRdata,
}

/// Steps over a name starting at `at` and returns the offset just after it.
///
/// A name ends at the root label or at a compression pointer (RFC 1035 §4.1.4). The pointer
/// is never followed: to find where a record ends we only need its bytes in place, and not
/// following pointers makes loops impossible.
fn skip_name(buf: &[u8], mut at: usize) -> Result<usize, WalkError> {
    let start = at;
    loop {
        let len = *buf.get(at).ok_or(WalkError::Truncated)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(at + 1),
            0x00 => at += 1 + usize::from(len),
            0xC0 => {
                return if at + 2 <= buf.len() {
                    Ok(at + 2)
                } else {
                    Err(WalkError::Truncated)
                };
            }
            _ => return Err(WalkError::BadLabel),
        }
        if at - start >= MAX_NAME {
            return Err(WalkError::TooLong);
        }
    }
}

/// Where the parts of one resource record sit in a message (RFC 1035 §4.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rr {
    /// Offset of the owner name.
    start: usize,
    rtype: u16,
    class: u16,
    /// Offset of the TTL field.
    ttl_at: usize,
    ttl: u32,
    /// Offset of the RDATA.
    rdata: usize,
    /// Offset just past the record.
    end: usize,
}

impl Rr {
    /// Whether the owner name is the root (a single zero byte), as an OPT's must be.
    fn owner_is_root(&self, buf: &[u8]) -> bool {
        self.ttl_at == self.start + 5 && buf.get(self.start) == Some(&0)
    }
}

/// Reads the record starting at `at`.
fn read_rr(buf: &[u8], at: usize) -> Result<Rr, WalkError> {
    let fixed = skip_name(buf, at)?;
    let t = WalkError::Truncated;
    let rtype = u16_at(buf, fixed).ok_or(t)?;
    let class = u16_at(buf, fixed + 2).ok_or(t)?;
    let ttl = u32_at(buf, fixed + 4).ok_or(t)?;
    let rdlen = u16_at(buf, fixed + 8).ok_or(t)?;
    let rdata = fixed + 10;
    let end = rdata + usize::from(rdlen);
    if end > buf.len() {
        return Err(t);
    }
    Ok(Rr {
        start: at,
        rtype,
        class,
        ttl_at: fixed + 4,
        ttl,
        rdata,
        end,
    })
}

/// Walks the options inside an OPT record's RDATA (RFC 6891 §6.1.2) and calls `each` with
/// every option's code and full bytes (code, length and data). `Err` when an option overruns.
fn walk_options(rdata: &[u8], mut each: impl FnMut(u16, &[u8])) -> Result<(), WalkError> {
    let mut at = 0;
    while at < rdata.len() {
        let code = u16_at(rdata, at).ok_or(WalkError::Truncated)?;
        let len = u16_at(rdata, at + 2).ok_or(WalkError::Truncated)?;
        let end = at + 4 + usize::from(len);
        let whole = rdata.get(at..end).ok_or(WalkError::Truncated)?;
        each(code, whole);
        at = end;
    }
    Ok(())
}
