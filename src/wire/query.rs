//! The client side: parsing a query into a [`Query`] and answering the ones we refuse.

use std::fmt::Write as _;

use super::{
    ClientHeader, EDNS_DO, Header, MAX_KEY, MAX_NAME, PLAIN_UDP_SIZE, WalkError, flag, rcode,
    read_rr, rtype, set_reply_header, u16_at, walk_options, write_bare_opt,
};

/// What the client's OPT record said (RFC 6891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientEdns {
    /// Requestor's UDP payload size, as sent (values below 512 are treated as 512 by users).
    pub udp_size: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A client query that passed [`parse_query`], borrowed from the receive buffer.
#[derive(Debug, Clone)]
pub struct Query<'a> {
    pub header: Header,
    /// The question section exactly as the client sent it (qname + qtype + qclass); copied back
    /// into every reply so the client's 0x20 case survives.
    pub question: &'a [u8],
    /// The cache key (see [`Query::cache_key`]), written while parsing: the lowercased qname
    /// goes straight from the packet into it, once.
    key: [u8; MAX_KEY],
    qname_len: u8,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<ClientEdns>,
}

/// Cache key flag bits (first key byte).
const KEY_RD: u8 = 1;
const KEY_CD: u8 = 2;
const KEY_DO: u8 = 4;

impl Query<'_> {
    /// The lowercased qname in wire form (length-prefixed labels, ending in the root label).
    pub fn qname(&self) -> &[u8] {
        &self.key[1..1 + usize::from(self.qname_len)]
    }

    /// The cache key: one flags byte (RD, CD, DO), then the lowercased qname, qtype and
    /// qclass. Never the ID, the bufsize or any EDNS option (dig sends a new cookie per
    /// query; a key including it would never hit).
    pub fn cache_key(&self) -> &[u8] {
        &self.key[..1 + usize::from(self.qname_len) + 4]
    }

    /// The most a UDP reply to this client may carry: 512 without EDNS, else the client's
    /// size clamped to `[512, cap]`.
    pub fn udp_limit(&self, cap: u16) -> usize {
        match self.edns {
            None => PLAIN_UDP_SIZE,
            // RFC 6891 §6.2.5: sizes below 512 are treated as 512.
            Some(e) => usize::from(e.udp_size.min(cap)).max(PLAIN_UDP_SIZE),
        }
    }

    /// The qname as presentation text, lowercased, with a trailing dot ("example.com.").
    /// For logs and zone routing diagnostics, not for the hot path.
    pub fn qname_text(&self) -> String {
        let mut text = name_text(self.qname());
        text.push('.');
        text
    }
}

/// A wire-form name as presentation text without the trailing dot ("example.com"; the root
/// is ""): its labels up to the root label or the end of `name`, dots and backslashes in a
/// label escaped and unprintable bytes written `\DDD` (RFC 4343 §2.1).
pub fn name_text(name: &[u8]) -> String {
    let mut text = String::with_capacity(name.len());
    let mut at = 0;
    while let Some(&len) = name.get(at) {
        if len == 0 {
            break;
        }
        let label = name
            .get(at + 1..at + 1 + usize::from(len))
            .unwrap_or_default();
        if at > 0 {
            text.push('.');
        }
        for &b in label {
            match b {
                b'.' | b'\\' => {
                    text.push('\\');
                    text.push(char::from(b));
                }
                0x21..=0x7E => text.push(char::from(b)),
                _ => {
                    let _ = write!(text, "\\{b:03}");
                }
            }
        }
        at += 1 + usize::from(len);
    }
    text
}

/// Why a client packet was not accepted as a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Fewer than 12 bytes: there is no ID to answer to. Drop and count.
    #[error("shorter than a DNS header")]
    TooShort,
    /// QR=1: a response sent to us. Drop and count (answering could start a loop).
    #[error("QR bit set (a response, not a query)")]
    IsResponse,
    /// Answer with this rcode (FORMERR, NOTIMP, REFUSED or BADVERS); see [`error_reply`].
    #[error("answer with rcode {0}")]
    Reply(u16),
}

const FORMERR: QueryError = QueryError::Reply(rcode::FORMERR);

/// Parses and checks a client query.
///
/// Accepted: QR=0, OPCODE=QUERY, QDCOUNT=1, ANCOUNT=NSCOUNT=0, a qname without compression
/// pointers and at most 255 bytes, labels at most 63 bytes, and in the additional section at
/// most one OPT (other additional records are ignored: nodedns builds its own upstream query,
/// so they are never forwarded). Anything after the last record is garbage: FORMERR.
/// OPT version other than 0: BADVERS (RFC 6891 §6.1.3). Opcode other than QUERY: NOTIMP.
/// QTYPE AXFR/IXFR: REFUSED (a cache does not serve zone transfers).
///
/// Checks run in that order of severity: a malformed packet gets FORMERR even when it also
/// asks for a zone transfer or an unknown EDNS version.
pub fn parse_query(buf: &[u8]) -> Result<Query<'_>, QueryError> {
    let header = Header::parse(buf).ok_or(QueryError::TooShort)?;
    if header.qr() {
        return Err(QueryError::IsResponse);
    }
    if header.opcode() != 0 {
        return Err(QueryError::Reply(rcode::NOTIMP));
    }
    if header.qdcount != 1 || header.ancount != 0 || header.nscount != 0 {
        return Err(FORMERR);
    }
    let mut key = [0u8; MAX_KEY];
    let (name_slot, _) = key[1..]
        .split_first_chunk_mut::<MAX_NAME>()
        .ok_or(FORMERR)?;
    let name_len = read_qname(buf, name_slot).ok_or(FORMERR)?;
    let name_end = super::HEADER_LEN + name_len;
    let qtype = u16_at(buf, name_end).ok_or(FORMERR)?;
    let qclass = u16_at(buf, name_end + 2).ok_or(FORMERR)?;
    let question_end = name_end + 4;
    let edns = read_additional(buf, question_end, header.arcount)?;
    if edns.is_some_and(|e| e.version != 0) {
        return Err(QueryError::Reply(rcode::BADVERS));
    }
    if qtype == rtype::AXFR || qtype == rtype::IXFR {
        return Err(QueryError::Reply(rcode::REFUSED));
    }
    key[0] = key_flags(&header, edns);
    // The qname and the type and class after it, as the packet has them: in the key they
    // follow the (lowercased) name directly.
    key[1 + name_len..1 + name_len + 4].copy_from_slice(&buf[name_end..question_end]);
    Ok(Query {
        header,
        question: &buf[super::HEADER_LEN..question_end],
        key,
        qname_len: u8::try_from(name_len).map_err(|_| FORMERR)?,
        qtype,
        qclass,
        edns,
    })
}

/// The first byte of a cache key: the header and OPT bits that change the answer.
fn key_flags(header: &Header, edns: Option<ClientEdns>) -> u8 {
    let mut flags = 0;
    if header.rd() {
        flags |= KEY_RD;
    }
    if header.cd() {
        flags |= KEY_CD;
    }
    if edns.is_some_and(|e| e.dnssec_ok) {
        flags |= KEY_DO;
    }
    flags
}

/// Walks the qname at the header's end into `lower` (ASCII-lowercased) and returns its wire
/// length. `None` for a compression pointer, an extended label type, a name over 255 bytes or
/// a buffer that ends inside the name: a query's only name has nothing to point back to.
fn read_qname(buf: &[u8], lower: &mut [u8; MAX_NAME]) -> Option<usize> {
    let name = buf.get(super::HEADER_LEN..)?;
    let mut at = 0;
    loop {
        let len = *name.get(at)?;
        if len & 0xC0 != 0 {
            return None;
        }
        let end = at + 1 + usize::from(len);
        let dst = lower.get_mut(at..end)?;
        dst.copy_from_slice(name.get(at..end)?);
        dst.make_ascii_lowercase();
        if len == 0 {
            return Some(end);
        }
        at = end;
    }
}

/// Walks the additional section (and checks nothing follows it), returning the client's OPT.
/// Owner names of other records may be compressed; they are skipped, not followed.
fn read_additional(
    buf: &[u8],
    mut at: usize,
    arcount: u16,
) -> Result<Option<ClientEdns>, QueryError> {
    let mut edns = None;
    for _ in 0..arcount {
        let rr = read_rr(buf, at).map_err(|_| FORMERR)?;
        at = rr.end;
        if rr.rtype != rtype::OPT {
            continue;
        }
        // RFC 6891 §6.1.1: more than one OPT is FORMERR; §6.1.2: its owner is the root.
        if edns.is_some() || !rr.owner_is_root(buf) {
            return Err(FORMERR);
        }
        walk_options(&buf[rr.rdata..rr.end], |_, _| {}).map_err(|_: WalkError| FORMERR)?;
        edns = Some(ClientEdns {
            udp_size: rr.class,
            version: rr.ttl.to_be_bytes()[1],
            dnssec_ok: rr.ttl & EDNS_DO != 0,
        });
    }
    if at != buf.len() {
        return Err(FORMERR);
    }
    Ok(edns)
}

/// REFUSED for a source nodedns does not serve: the header alone (QDCOUNT=0), written from
/// nothing but the query's header, so a refused source costs no parsing. `false` when `buf`
/// holds no header, or holds a response: answering one would let two servers bounce it
/// between them.
pub fn refused_by_header(buf: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(client) = Header::parse(buf) else {
        return false;
    };
    if client.flags & flag::QR != 0 {
        return false;
    }
    let header = Header {
        id: client.id,
        flags: super::rcode::REFUSED,
        qdcount: 0,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    };
    header.write(out);
    let echo = ClientHeader {
        id: client.id,
        flags: client.flags,
        dnssec_ok: false,
    };
    set_reply_header(out, &echo);
    true
}

/// Writes an error reply for the query in `buf` with `rcode` into `out` (cleared first).
///
/// The header follows [`set_reply_header`] (the client's ID, opcode, RD and CD, QR=1, RA=1; for
/// an unknown opcode only ID, opcode and RD), and the reply carries the client's question
/// when it can be parsed (else QDCOUNT=0). It carries an OPT (bufsize 1232) when the client
/// sent a readable OPT, and always for BADVERS, whose upper rcode bits live in the OPT.
/// Returns false when `buf` has no readable header (nothing can be sent).
pub fn error_reply(buf: &[u8], rcode: u16, out: &mut Vec<u8>) -> bool {
    error_reply_ede(buf, rcode, None, out)
}

/// An Extended DNS Error (RFC 8914) that nodedns itself adds to a reply: the info code and
/// a text for the operator reading `dig` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ede {
    pub code: u16,
    pub text: &'static str,
}

/// RFC 8914 info codes nodedns sends.
pub mod ede {
    /// 18, Prohibited: the server is unable to answer for policy reasons (a client limit).
    pub const PROHIBITED: u16 = 18;
    /// 22, No Reachable Authority: no upstream could be asked (every budget is spent).
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
}

/// [`error_reply`], with `ede` as an Extended DNS Error option when the reply carries an
/// OPT (the client sent one): a client that sent no OPT cannot be sent options (RFC 6891
/// §7), and gets the bare rcode.
pub fn error_reply_ede(buf: &[u8], rcode: u16, ede: Option<Ede>, out: &mut Vec<u8>) -> bool {
    out.clear();
    let Some(client) = Header::parse(buf) else {
        return false;
    };
    let question = if client.qdcount > 0 {
        let mut scratch = [0u8; MAX_NAME];
        read_qname(buf, &mut scratch)
            .map(|len| super::HEADER_LEN + len + 4)
            .and_then(|end| buf.get(super::HEADER_LEN..end))
    } else {
        None
    };
    let client_do =
        question.and_then(|q| find_client_opt(buf, super::HEADER_LEN + q.len(), &client));
    let with_opt = client_do.is_some() || rcode > flag::RCODE_MASK;
    let header = Header {
        id: client.id,
        flags: rcode & flag::RCODE_MASK,
        qdcount: u16::from(question.is_some()),
        ancount: 0,
        nscount: 0,
        arcount: u16::from(with_opt),
    };
    header.write(out);
    let echo = ClientHeader {
        id: client.id,
        flags: client.flags,
        dnssec_ok: client_do == Some(true),
    };
    set_reply_header(out, &echo);
    out.extend_from_slice(question.unwrap_or_default());
    if with_opt {
        // RFC 6891 §6.1.3: the upper 8 bits of the 12-bit rcode; RFC 3225 §3: DO echoed.
        let upper = u32::from(rcode >> 4) << 24;
        let dnssec_ok = if client_do == Some(true) { EDNS_DO } else { 0 };
        write_bare_opt(out, upper | dnssec_ok);
        if let Some(ede) = ede {
            push_ede(out, ede);
        }
    }
    true
}

/// Appends `ede` to the OPT that ends `out` (written by `write_bare_opt`, RDLENGTH 0): the
/// option's code, length, info code and text, and the OPT's RDLENGTH set to match.
fn push_ede(out: &mut Vec<u8>, ede: Ede) {
    let Some(rdlen_at) = out.len().checked_sub(2) else {
        return;
    };
    // The text is ours and short; cut it where it would overflow the 16-bit lengths anyway.
    let text = &ede.text.as_bytes()[..ede.text.len().min(1024)];
    let option_len = 2 + text.len() as u16;
    out.extend_from_slice(&super::EDNS_EDE.to_be_bytes());
    out.extend_from_slice(&option_len.to_be_bytes());
    out.extend_from_slice(&ede.code.to_be_bytes());
    out.extend_from_slice(text);
    let rdlen = 4 + option_len;
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
}

/// Looks for the client's OPT after the question, walking every record section; returns its
/// DO bit. `None` when there is none or the records cannot be walked.
fn find_client_opt(buf: &[u8], mut at: usize, header: &Header) -> Option<bool> {
    let records = u32::from(header.ancount) + u32::from(header.nscount) + u32::from(header.arcount);
    for _ in 0..records {
        let rr = read_rr(buf, at).ok()?;
        if rr.rtype == rtype::OPT {
            return Some(rr.ttl & EDNS_DO != 0);
        }
        at = rr.end;
    }
    None
}
