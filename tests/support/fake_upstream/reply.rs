//! Turns one received query into the datagrams or frames the fake upstream sends back, with the
//! delay before each: the genuine answer, truncation for UDP, and the forged or broken replies
//! that the scriptable [`Behavior`]s ask for.

use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, RecordType};
use hickory_proto::serialize::binary::BinEncodable;

use super::zone::{self, Zone};
use super::{Behavior, FORGED_QNAME, FORGERY_LEAD, HeaderFlags, POISON_A, POISON_AAAA, Proto};

/// One thing to send: wait `delay`, then send `bytes` (from a fresh socket if `other_source`).
pub struct Send {
    pub delay: Duration,
    pub bytes: Vec<u8>,
    pub other_source: bool,
}

impl Send {
    fn now(bytes: Vec<u8>) -> Self {
        Self {
            delay: Duration::ZERO,
            bytes,
            other_source: false,
        }
    }
}

/// A parsed query as the fake sees it.
pub struct Query {
    pub message: Message,
}

impl Query {
    /// Parses `raw`; a query that cannot be answered normally yields the reply a server would
    /// give instead (FORMERR when the header is readable, nothing otherwise).
    pub fn parse(raw: &[u8]) -> Result<Self, Option<Vec<u8>>> {
        let Ok(message) = Message::from_vec(raw) else {
            return Err(formerr_from_raw(raw));
        };
        if message.metadata.message_type != MessageType::Query {
            return Err(None);
        }
        if message.queries.len() != 1 {
            let mut reply = response_shell(&message);
            reply.metadata.response_code = ResponseCode::FormErr;
            return Err(reply.to_vec().ok());
        }
        Ok(Self { message })
    }

    pub fn qname(&self) -> &hickory_proto::rr::Name {
        &self.message.queries[0].name
    }

    pub fn qtype(&self) -> RecordType {
        self.message.queries[0].query_type
    }

    /// The most a UDP reply may carry: 512 without EDNS (RFC 1035 §4.2.1), else the requester's
    /// payload, floored at 512 (RFC 6891 §6.2.5) and capped at our own `server_payload`.
    fn udp_limit(&self, server_payload: u16) -> usize {
        match &self.message.edns {
            None => 512,
            Some(edns) => usize::from(edns.max_payload().clamp(512, server_payload.max(512))),
        }
    }
}

/// Builds the replies for `query` received over `proto` under `behavior`, every one with the
/// header bits `flags` forces.
pub fn plan(
    zone: &Zone,
    query: &Query,
    proto: Proto,
    behavior: &Behavior,
    server_payload: u16,
    flags: HeaderFlags,
) -> Vec<Send> {
    let mut genuine = response_shell(&query.message);
    force_flags(&mut genuine, flags);
    if query.message.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(server_payload);
        genuine.set_edns(edns);
    }
    let limit = match proto {
        Proto::Udp => query.udp_limit(server_payload),
        Proto::Tcp => usize::from(u16::MAX),
    };
    let encode = |m: &Message| fit(m, limit);
    match behavior {
        Behavior::Drop => Vec::new(),
        Behavior::Garbage => vec![Send::now(garbage())],
        Behavior::Rcode(rcode) => {
            genuine.metadata.response_code = *rcode;
            vec![Send::now(encode(&genuine))]
        }
        Behavior::Raw(script) => {
            let bytes = splice(script, &query.message);
            if bytes.len() > limit {
                return vec![Send::now(tc_only(&bytes))];
            }
            vec![Send::now(bytes)]
        }
        Behavior::TruncateUdp if proto == Proto::Udp => {
            vec![Send::now(encode(&genuine.truncate()))]
        }
        other => {
            zone.fill(&mut genuine, query.qname(), query.qtype());
            let mut sends = forgeries(&genuine, proto, other, &encode);
            let delay = match other {
                Behavior::Delay(d) => *d,
                _ if sends.is_empty() => Duration::ZERO,
                _ => FORGERY_LEAD,
            };
            sends.push(Send {
                delay,
                bytes: encode(&genuine),
                other_source: false,
            });
            sends
        }
    }
}

/// The forged replies sent ahead of the genuine one, if the behaviour asks for any.
fn forgeries(
    genuine: &Message,
    proto: Proto,
    behavior: &Behavior,
    encode: &dyn Fn(&Message) -> Vec<u8>,
) -> Vec<Send> {
    let mut forged = poisoned(genuine);
    match behavior {
        Behavior::WrongIdFirst => {
            forged.metadata.id = genuine.metadata.id.wrapping_add(1);
        }
        Behavior::WrongQuestionFirst => {
            forged.queries[0].name = zone::name(FORGED_QNAME);
            for record in &mut forged.answers {
                record.name = zone::name(FORGED_QNAME);
            }
        }
        // A second socket only exists for UDP; over TCP the connection itself is the source.
        Behavior::OtherSourceFirst if proto == Proto::Udp => {
            return vec![Send {
                delay: Duration::ZERO,
                bytes: encode(&forged),
                other_source: true,
            }];
        }
        _ => return Vec::new(),
    }
    vec![Send::now(encode(&forged))]
}

/// A copy of `genuine` whose address data is replaced, so acceptance of a forgery is visible.
fn poisoned(genuine: &Message) -> Message {
    let mut forged = genuine.clone();
    for record in &mut forged.answers {
        match record.data {
            RData::A(_) => record.data = RData::A(A(POISON_A)),
            RData::AAAA(_) => record.data = RData::AAAA(AAAA(POISON_AAAA)),
            _ => {}
        }
    }
    forged
}

/// The header and question of a response to `query`: ID, opcode, RD and CD copied, the question
/// echoed byte for byte (case included, which 0x20-checking resolvers rely on), AA and RA set.
fn response_shell(query: &Message) -> Message {
    let mut response = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.op_code = query.metadata.op_code;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = query.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.checking_disabled = query.metadata.checking_disabled;
    response.queries = query.queries.clone();
    response
}

/// Overrides the header bits `flags` names; forgeries and truncated copies are made from the
/// result, so they carry the same bits.
fn force_flags(response: &mut Message, flags: HeaderFlags) {
    let m = &mut response.metadata;
    let bits = [
        (flags.aa, &mut m.authoritative),
        (flags.ra, &mut m.recursion_available),
        (flags.rd, &mut m.recursion_desired),
        (flags.ad, &mut m.authentic_data),
        (flags.cd, &mut m.checking_disabled),
    ];
    for (forced, bit) in bits {
        if let Some(on) = forced {
            *bit = on;
        }
    }
}

/// Encodes `message`, or its truncated form (TC=1, records removed, RFC 2181 §9) when the full
/// one exceeds `limit` bytes.
fn fit(message: &Message, limit: usize) -> Vec<u8> {
    let full = message.to_vec().unwrap();
    if full.len() <= limit {
        return full;
    }
    message.truncate().to_vec().unwrap()
}

/// FORMERR for an unparseable query whose 12-byte header is readable and is not a response.
fn formerr_from_raw(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < 12 || raw[2] & 0x80 != 0 {
        return None;
    }
    let mut reply = vec![0u8; 12];
    reply[0..2].copy_from_slice(&raw[0..2]);
    // QR=1, opcode and RD copied from the query; RCODE=1 (FORMERR).
    reply[2] = 0x80 | (raw[2] & 0x79);
    reply[3] = 0x01;
    Some(reply)
}

/// A few random bytes: too short to hold a DNS header, so no parser can mistake them for one.
fn garbage() -> Vec<u8> {
    let mut bytes = vec![0u8; rand::random_range(1..12)];
    rand::fill(&mut bytes[..]);
    bytes
}

/// `script` with the ID and question of `query`: the scripted header's flags and counts
/// (QDCOUNT set to 1), the query's question bytes, then whatever followed the scripted
/// question. A script too short for a header is sent as it is.
fn splice(script: &[u8], query: &Message) -> Vec<u8> {
    if script.len() < 12 {
        return script.to_vec();
    }
    let mut at = 12;
    // The scripted question: a plain name (no pointers), type and class.
    if script[4..6] != [0, 0] {
        while at < script.len() && script[at] != 0 && script[at] & 0xC0 == 0 {
            at += 1 + usize::from(script[at]);
        }
        at = (at + 5).min(script.len());
    }
    let mut out = Vec::with_capacity(script.len() + 32);
    out.extend_from_slice(&query.metadata.id.to_be_bytes());
    out.extend_from_slice(&script[2..4]);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&script[6..12]);
    out.extend_from_slice(&query.queries[0].to_bytes().unwrap());
    out.extend_from_slice(&script[at..]);
    out
}

/// The header and question of `message` with TC=1 and no records.
fn tc_only(message: &[u8]) -> Vec<u8> {
    let mut at = 12;
    while at < message.len() && message[at] != 0 && message[at] & 0xC0 == 0 {
        at += 1 + usize::from(message[at]);
    }
    let end = (at + 5).min(message.len());
    let mut out = message[..end].to_vec();
    out[2] |= 0x02;
    out[6..12].fill(0);
    out
}
