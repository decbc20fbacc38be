//! What the fuzz targets share: the checks every reply nodedns writes must pass, and the
//! reply size limits stated independently of the code under test.
//!
//! hickory-proto is the oracle, as in the wire module's property tests: where it decodes the
//! message a reply was made from, it must decode the reply too.

use hickory_proto::op::Message;
use nodedns::wire::{self, Header, flag};

/// Largest UDP reply nodedns sends to an EDNS client (DNS Flag Day 2020), and the default of
/// `listen.udp_max_payload`.
pub const EDNS_CAP: u16 = 1232;
/// Largest reply over TCP: the 2-byte frame length (RFC 1035 §4.2.2).
pub const TCP_MAX: usize = 65535;

/// The largest reply a client may get over UDP: 512 without EDNS (RFC 1035 §4.2.1), else its
/// advertised size clamped to `[512, 1232]` (RFC 6891 §6.2.5 treats less than 512 as 512).
pub fn udp_limit(edns_size: Option<u16>) -> usize {
    match edns_size {
        None => 512,
        Some(size) => usize::from(size.min(EDNS_CAP)).max(512),
    }
}

/// Whether hickory-proto decodes `bytes` as a DNS message.
pub fn hickory_parses(bytes: &[u8]) -> bool {
    Message::from_vec(bytes).is_ok()
}

/// Whether hickory-proto decodes `resp` as an answer the forwarder would normalise: QR set
/// and opcode QUERY, as `wire::check_reply` requires of every upstream answer before it
/// reaches `normalize_response`. Other opcodes have other rules in hickory (an UPDATE may
/// hold records with empty RDATA), which a reply, always opcode QUERY, does not get.
pub fn hickory_parses_answer(resp: &[u8]) -> bool {
    Header::parse(resp).is_some_and(|h| h.flags & flag::QR != 0 && h.opcode() == 0)
        && hickory_parses(resp)
}

/// Checks a reply nodedns wrote for a client with `id`: a response with that ID, no longer
/// than `limit`, that nodedns's own response parser accepts and, when `oracle` says hickory
/// decoded what it was made from, that hickory decodes as well.
pub fn check_reply(reply: &[u8], id: u16, limit: usize, oracle: bool) {
    let header = Header::parse(reply).expect("a reply holds a whole header");
    assert_eq!(header.id, id, "the reply carries the client's ID");
    assert!(header.flags & flag::QR != 0, "the reply is a response");
    assert!(
        reply.len() <= limit,
        "reply of {} bytes exceeds the client's limit of {limit}",
        reply.len()
    );
    let mut normalized = Vec::new();
    if let Err(e) = wire::normalize_response(reply, &mut normalized) {
        panic!("nodedns cannot re-parse its own reply: {e}");
    }
    if oracle && let Err(e) = Message::from_vec(reply) {
        panic!("hickory decodes the source but not the reply: {e}");
    }
}
