//! Tests of the wire module: table tests per concern, and property tests against
//! hickory-proto as the oracle (`oracle_*`, generators in `strategy`). This file holds the message builders they share.
#![allow(clippy::unwrap_used)]

mod exchange;
mod oracle_query;
mod oracle_response;
mod query;
mod reply_header;
mod response;
mod strategy;
mod validate;

use super::*;

/// Wire form of a dotted name ("www.Example.com" -> 3www7Example3com0).
fn name(dotted: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        out.push(u8::try_from(label.len()).unwrap());
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// A message from a header (id, flags, four counts) and a body.
fn msg(id: u16, flags: u16, counts: [u16; 4], body: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in [id, flags, counts[0], counts[1], counts[2], counts[3]] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for part in body {
        out.extend_from_slice(part);
    }
    out
}

/// A question section entry.
fn question(dotted: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = name(dotted);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

/// A resource record with an owner given in wire form.
fn rr(owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut r = owner.to_vec();
    r.extend_from_slice(&rtype.to_be_bytes());
    r.extend_from_slice(&class.to_be_bytes());
    r.extend_from_slice(&ttl.to_be_bytes());
    r.extend_from_slice(&u16::try_from(rdata.len()).unwrap().to_be_bytes());
    r.extend_from_slice(rdata);
    r
}

/// An OPT record: UDP size, TTL field (ext rcode, version, flags) and raw options.
fn opt(udp: u16, ttl: u32, options: &[u8]) -> Vec<u8> {
    rr(&[0], rtype::OPT, udp, ttl, options)
}

/// One EDNS option.
fn option(code: u16, data: &[u8]) -> Vec<u8> {
    let mut o = code.to_be_bytes().to_vec();
    o.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    o.extend_from_slice(data);
    o
}
