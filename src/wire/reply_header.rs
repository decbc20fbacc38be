//! The header of every reply nodedns sends (RFC 1035 §4.1.1): one rule, applied by every path
//! that writes a reply (a served copy of an upstream answer, an error reply, a CHAOS answer).
//!
//! The rule: the client's ID, opcode, RD and CD; QR=1, RA=1, AA=0, Z=0; TC and the rcode as
//! the answer has them; AD as the answer has it, only for a client that set DO or AD. Nothing
//! else of the upstream's header reaches the client. A query with an opcode other than QUERY
//! is the exception: its NOTIMP echoes ID, opcode and RD and sets nothing else.

use super::{Query, flag, put_u16, u16_at};

/// What a reply's header takes from the query it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHeader {
    pub id: u16,
    /// The query's header flags, as sent.
    pub flags: u16,
    /// The DO bit of the query's OPT (RFC 3225): with AD, what decides whether AD is passed on.
    pub dnssec_ok: bool,
}

impl ClientHeader {
    /// The header parts of `query` a reply echoes.
    pub fn of(query: &Query<'_>) -> ClientHeader {
        ClientHeader {
            id: query.header.id,
            flags: query.header.flags,
            dnssec_ok: query.edns.is_some_and(|e| e.dnssec_ok),
        }
    }
}

/// Rewrites the ID and flags of the reply in `out` for `client`; the flags already there are
/// the answer's (an upstream's header, or the rcode of a reply we built), and only its rcode,
/// TC and AD survive (see the module doc). Does nothing to a buffer too short to hold the
/// flags.
///
/// This is the cache-hit path's header write: two bytes read, four written.
pub fn set_reply_header(out: &mut [u8], client: &ClientHeader) {
    let Some(answer) = u16_at(out, 2) else {
        return;
    };
    put_u16(out, 0, client.id);
    put_u16(out, 2, reply_flags(answer, client));
}

/// The flags word of a reply to `client` whose answer carries `answer`.
fn reply_flags(answer: u16, client: &ClientHeader) -> u16 {
    let echoed = client.flags & (flag::OPCODE_MASK | flag::RD);
    let rcode = answer & flag::RCODE_MASK;
    if client.flags & flag::OPCODE_MASK != 0 {
        // RFC 1035 §4.1.1: an opcode we do not implement gets NOTIMP; nothing was served, so
        // nothing is claimed (no RA, no CD).
        return flag::QR | echoed | rcode;
    }
    // RFC 6840 §5.8: AD only to a client that showed it understands it, by DO or AD.
    let wants_ad = client.dnssec_ok || client.flags & flag::AD != 0;
    let ad = if wants_ad { answer & flag::AD } else { 0 };
    // AA=0: a cache is no authority (RFC 1035 §4.1.1), whatever the upstream was. RA=1: we
    // resolve through our upstreams for every client. CD is copied (RFC 4035 §3.2.2). TC is
    // the answer's: set only when it was itself truncated; cutting a copy sets it afterwards.
    flag::QR | echoed | flag::RA | (client.flags & flag::CD) | ad | (answer & flag::TC) | rcode
}
