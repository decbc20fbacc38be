//! CHAOS-class identity answers: `version.bind`, `version.server`, `id.server` and
//! `hostname.bind` TXT (RFC 4892 §2 for `id.server`; `version.bind` is BIND's convention that
//! every major server follows).
//!
//! They tell an operator, and `nodedns doctor`, that the process answering on an address is
//! nodedns and which node it runs on, without touching the cache or any upstream.

use super::{ClientHeader, EDNS_DO, Header, Query, class, rtype, set_reply_header, write_bare_opt};

/// What a server says about itself over CHAOS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `version.bind` / `version.server` text, e.g. `nodedns 0.1.0`.
    pub version: String,
    /// The `id.server` / `hostname.bind` text: the node's hostname.
    pub hostname: String,
}

/// The query name of each identity, in wire form, lowercased.
const VERSION_BIND: &[u8] = b"\x07version\x04bind\x00";
const VERSION_SERVER: &[u8] = b"\x07version\x06server\x00";
const ID_SERVER: &[u8] = b"\x02id\x06server\x00";
const HOSTNAME_BIND: &[u8] = b"\x08hostname\x04bind\x00";

/// The most one TXT character-string holds (RFC 1035 §3.3.14).
const MAX_STRING: usize = 255;

/// Writes into `out` (cleared first) the answer to a CHAOS TXT query for one of the identity
/// names: the header every reply has ([`set_reply_header`]: AA clear, like every answer we
/// give), TTL 0 (nothing should cache it), the client's OPT echoed when it sent one.
/// Returns false when the query asks for anything else; the caller answers REFUSED.
pub fn chaos_reply(q: &Query<'_>, id: &Identity, out: &mut Vec<u8>) -> bool {
    out.clear();
    if q.qclass != class::CH || q.qtype != rtype::TXT {
        return false;
    }
    let text = match q.qname() {
        VERSION_BIND | VERSION_SERVER => id.version.as_bytes(),
        ID_SERVER | HOSTNAME_BIND => id.hostname.as_bytes(),
        _ => return false,
    };
    let text = &text[..text.len().min(MAX_STRING)];
    let header = Header {
        id: q.header.id,
        flags: 0,
        qdcount: 1,
        ancount: 1,
        nscount: 0,
        arcount: u16::from(q.edns.is_some()),
    };
    header.write(out);
    set_reply_header(out, &ClientHeader::of(q));
    out.extend_from_slice(q.question);
    // Owner: a compression pointer to the question name right after the header.
    out.extend_from_slice(&[0xC0, 0x0C]);
    out.extend_from_slice(&rtype::TXT.to_be_bytes());
    out.extend_from_slice(&class::CH.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    // `text` is at most 255 bytes: both lengths fit.
    let len = text.len() as u8;
    out.extend_from_slice(&(u16::from(len) + 1).to_be_bytes());
    out.push(len);
    out.extend_from_slice(text);
    if let Some(edns) = q.edns {
        // RFC 3225 §3: the DO bit is echoed.
        write_bare_opt(out, if edns.dnssec_ok { EDNS_DO } else { 0 });
    }
    true
}
