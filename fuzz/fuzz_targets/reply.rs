//! Serving a stored answer: an upstream response normalised by `wire::normalize_response`,
//! then copied for a client by `wire::write_reply`, as a cache hit, a fresh answer or a stale
//! one is.
//!
//! Input: a control prefix of [`CONTROL`] bytes that describes the client, then the upstream
//! response. The client's query is built from the prefix and the stored question (its
//! letters' case flipped per the prefix, as a 0x20 client sends it) and parsed with
//! `wire::parse_query`; where the stored question cannot be a query's (several questions, a
//! compression pointer), the client is built directly.
//!
//! Prefix: byte 0 bits: 1 EDNS, 2 TCP, 4 DO, 8 stale TTLs; bytes 1-2 the EDNS UDP size;
//! bytes 3-4 the ID; bytes 5-6 the header flags (QR and opcode cleared); bytes 7-10 the TTL
//! cap; bytes 11-12 the age in seconds; byte 13 seeds the case flips.
//!
//! Invariants: nothing panics; the reply carries the client's ID and question, fits the
//! client's limit (512 without EDNS, else its size clamped to [512, 1232]; 65535 over TCP),
//! and re-parses; where hickory-proto decodes the upstream's bytes as an answer the forwarder
//! would accept (QR set, opcode QUERY), it decodes the reply.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nodedns::wire::{self, Client, ClientHeader, HEADER_LEN, TtlRewrite, flag};
use nodedns_fuzz::{TCP_MAX, check_reply, hickory_parses_answer, udp_limit};

const CONTROL: usize = 14;

fuzz_target!(|data: &[u8]| {
    let Some((control, resp)) = data.split_first_chunk::<CONTROL>() else {
        return;
    };
    let mut stored = Vec::new();
    let Ok((_, layout)) = wire::normalize_response(resp, &mut stored) else {
        return;
    };
    let message = layout.message(&stored);
    let be16 = |at: usize| u16::from_be_bytes([control[at], control[at + 1]]);
    let edns = control[0] & 1 != 0;
    let tcp = control[0] & 2 != 0;
    let dnssec_ok = control[0] & 4 != 0;
    let ttl = if control[0] & 8 != 0 {
        TtlRewrite::Fixed(30)
    } else {
        TtlRewrite::Aged {
            cap: u32::from_be_bytes([control[7], control[8], control[9], control[10]]),
            age: u32::from(be16(11)),
        }
    };
    let id = be16(3);
    let flags = be16(5) & !(flag::QR | flag::OPCODE_MASK);
    let udp_size = be16(1);

    let mut question = message[HEADER_LEN..layout.question_end()].to_vec();
    flip_case(&mut question, control[13]);
    let query = client_query(id, flags, &question, edns.then_some((udp_size, dnssec_ok)));
    let client = match wire::parse_query(&query) {
        Ok(q) => Client {
            header: ClientHeader::of(&q),
            question: q.question,
            has_edns: q.edns.is_some(),
            max_len: if tcp {
                TCP_MAX
            } else {
                q.udp_limit(nodedns_fuzz::EDNS_CAP)
            },
        },
        Err(_) => Client {
            header: ClientHeader {
                id,
                flags,
                dnssec_ok,
            },
            question: &question,
            has_edns: edns,
            max_len: if tcp {
                TCP_MAX
            } else {
                udp_limit(edns.then_some(udp_size))
            },
        },
    };
    let limit = if tcp {
        TCP_MAX
    } else {
        udp_limit(edns.then_some(udp_size))
    };
    assert_eq!(
        client.max_len, limit,
        "Query::udp_limit agrees with the rule"
    );

    let mut out = Vec::new();
    wire::write_reply(&stored, &layout, &client, ttl, &mut out);
    // Only a stored question too long for the limit (several questions) may overrun it, and
    // then the reply is that much with TC=1.
    let opt_len = if edns {
        layout.opt_offset().map_or(0, |o| message.len() - o)
    } else {
        0
    };
    let floor = layout.question_end() + opt_len;
    if out.len() > limit {
        assert!(
            out.len() <= floor,
            "a reply over the limit is only its header, question and OPT"
        );
        assert!(out[2] & 0x02 != 0, "a reply cut to its question has TC=1");
        return;
    }
    check_reply(&out, id, limit, hickory_parses_answer(resp));
    assert_eq!(
        &out[HEADER_LEN..layout.question_end()],
        client.question,
        "the client's question"
    );
});

/// Flips the case of the letters of the question's first name per the bits of `seed`,
/// cycling. Only inside labels: a pointer's offset byte or the qtype may look like a letter.
fn flip_case(question: &mut [u8], seed: u8) {
    let mut at = 0;
    while let Some(&len) = question.get(at)
        && (1..=63).contains(&len)
    {
        let end = (at + 1 + usize::from(len)).min(question.len());
        for (i, b) in question[at + 1..end].iter_mut().enumerate() {
            if b.is_ascii_alphabetic() && seed.rotate_left((at + i) as u32 % 8) & 1 != 0 {
                *b ^= 0x20;
            }
        }
        at = end;
    }
}

/// The query a client would send: one question (`question` as is), an OPT if `edns`.
fn client_query(id: u16, flags: u16, question: &[u8], edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut q = Vec::new();
    for v in [id, flags, 1, 0, 0, u16::from(edns.is_some())] {
        q.extend_from_slice(&v.to_be_bytes());
    }
    q.extend_from_slice(question);
    if let Some((size, dnssec_ok)) = edns {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    q
}
