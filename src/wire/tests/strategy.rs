//! Generators of random valid DNS data as hickory-proto types, for the oracle tests. hickory
//! emits them with names compressed wherever it can, which is what upstreams do.

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};

pub(super) fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        9 => "[a-zA-Z0-9][a-zA-Z0-9-]{0,9}",
        1 => "[a-zA-Z0-9]{63}",
    ]
    .prop_map(String::into_bytes)
}

/// Names under a few shared suffixes, so hickory compresses them against each other.
pub(super) fn domain() -> impl Strategy<Value = Name> {
    let suffixes = ["example.com", "Example.NET", "svc.cluster.local", ""];
    (prop::collection::vec(label(), 0..3), 0..suffixes.len()).prop_map(move |(mut labels, s)| {
        labels.extend(
            suffixes[s]
                .split('.')
                .filter(|l| !l.is_empty())
                .map(|l| l.as_bytes().to_vec()),
        );
        Name::from_labels(labels.iter().map(Vec::as_slice)).unwrap()
    })
}

pub(super) fn ttl() -> impl Strategy<Value = u32> {
    prop_oneof![0..600u32, 0..0x8000_0000u32]
}

pub(super) fn rdata() -> impl Strategy<Value = RData> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| RData::A(A(Ipv4Addr::from(b)))),
        any::<[u8; 16]>().prop_map(|b| RData::AAAA(AAAA(Ipv6Addr::from(b)))),
        domain().prop_map(|n| RData::CNAME(CNAME(n))),
        domain().prop_map(|n| RData::NS(NS(n))),
        (any::<u16>(), domain()).prop_map(|(p, n)| RData::MX(MX::new(p, n))),
        prop::collection::vec("[ -~]{0,30}", 1..3).prop_map(|t| RData::TXT(TXT::new(t))),
    ]
}

pub(super) fn record() -> impl Strategy<Value = Record> {
    (domain(), ttl(), rdata()).prop_map(|(n, t, d)| Record::from_rdata(n, t, d))
}

pub(super) fn soa_record() -> impl Strategy<Value = Record> {
    (domain(), domain(), domain(), any::<u32>(), ttl(), ttl()).prop_map(
        |(owner, m, r, serial, minimum, t)| {
            Record::from_rdata(
                owner,
                t,
                RData::SOA(SOA::new(m, r, serial, 3600, 600, 86400, minimum)),
            )
        },
    )
}

pub(super) fn edns_option() -> impl Strategy<Value = EdnsOption> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 8..24).prop_map(|d| EdnsOption::Unknown(10, d)),
        (any::<u16>(), "[ -~]{0,20}").prop_map(|(info, text)| {
            EdnsOption::Unknown(15, [&info.to_be_bytes()[..], text.as_bytes()].concat())
        }),
        prop::collection::vec(Just(0u8), 0..40).prop_map(|d| EdnsOption::Unknown(12, d)),
    ]
}

pub(super) fn edns() -> impl Strategy<Value = Edns> {
    (
        512..=u16::MAX,
        any::<bool>(),
        prop::collection::vec(edns_option(), 0..4),
    )
        .prop_map(|(size, dnssec_ok, opts)| {
            let mut e = Edns::new();
            e.set_max_payload(size).set_dnssec_ok(dnssec_ok);
            for o in opts {
                let code = match &o {
                    EdnsOption::Unknown(c, _) => EdnsCode::from(*c),
                    _ => EdnsCode::Zero,
                };
                e.options_mut().options.push((code, o));
            }
            e
        })
}

pub(super) fn qtype() -> impl Strategy<Value = RecordType> {
    prop::sample::select(vec![1u16, 2, 5, 6, 15, 16, 28, 33, 65, 255, 65280])
        .prop_map(RecordType::from)
}

/// Flips the case of some ASCII letters in `bytes`.
pub(super) fn flip_case(bytes: &mut [u8], mask: &[bool]) {
    for (b, &flip) in bytes.iter_mut().zip(mask.iter().cycle()) {
        if flip && b.is_ascii_alphabetic() {
            *b ^= 0x20;
        }
    }
}

pub(super) fn lower_wire(n: &Name) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.iter() {
        out.push(u8::try_from(label.len()).unwrap());
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// The labels of an uncompressed wire-form name.
pub(super) fn wire_labels(mut wire: &[u8]) -> Vec<&[u8]> {
    let mut labels = Vec::new();
    while let [len @ 1..=63, rest @ ..] = wire {
        let (label, tail) = rest.split_at(usize::from(*len));
        labels.push(label);
        wire = tail;
    }
    labels
}

/// A record as compared here: hickory's own equality ignores TTL and name case.
pub(super) fn exact(r: &Record) -> (String, DNSClass, u32, RData) {
    (r.name.to_ascii(), r.dns_class, r.ttl, r.data.clone())
}
