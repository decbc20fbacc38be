//! Writes the fuzz targets' seed corpus (`fuzz/corpus/<target>/`) from what the project
//! itself makes: DNS messages built here with hickory-proto and by hand, the TOML files the
//! repository ships, and a cache snapshot written by nodedns. Nothing is copied from
//! elsewhere, so the corpus is regenerated rather than committed.
//!
//! ```sh
//! cargo run --example fuzz_seeds            # writes under fuzz/corpus
//! cargo run --example fuzz_seeds -- DIR     # writes under DIR
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use nodedns::cache::{Cache, Limits, TtlPolicy};
use nodedns::{snapshot, wire};
use tokio::time::Instant;

/// The reply target's control prefix (see `fuzz/fuzz_targets/reply.rs`): mode bits, EDNS UDP
/// size, ID, flags, TTL cap, age, case seed.
const CONTROLS: [[u8; 14]; 4] = [
    [0, 0, 0, 0x12, 0x34, 0x01, 0x00, 0, 0, 0x0e, 0x10, 0, 0, 0],
    [
        1, 0x04, 0xd0, 0xbe, 0xef, 0x01, 0x00, 0, 1, 0x51, 0x80, 0, 10, 0x55,
    ],
    [
        5, 0x02, 0x00, 0, 1, 0x01, 0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xaa,
    ],
    [
        0x0b, 0x10, 0x00, 0xff, 0xff, 0x01, 0x10, 0, 0, 0, 30, 0, 5, 0x0f,
    ],
];

fn main() -> anyhow::Result<()> {
    let root = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("fuzz/corpus"), PathBuf::from);
    let queries = queries()?;
    let responses = responses()?;
    write_all(&root.join("query"), &queries)?;
    write_all(&root.join("response"), &responses)?;
    let replies: Vec<Vec<u8>> = responses
        .iter()
        .enumerate()
        .map(|(i, r)| [&CONTROLS[i % CONTROLS.len()][..], r].concat())
        .collect();
    write_all(&root.join("reply"), &replies)?;
    write_all(&root.join("snapshot"), &[snapshot_of(&responses)?])?;
    write_all(&root.join("config"), &shipped_configs()?)?;
    Ok(())
}

/// Writes each seed as `<dir>/seed-<n>`, replacing what an earlier run wrote there.
fn write_all(dir: &Path, seeds: &[Vec<u8>]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:03}")), seed)?;
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
    Ok(())
}

fn name(text: &str) -> anyhow::Result<Name> {
    Ok(Name::from_ascii(text)?)
}

fn edns(size: u16, dnssec_ok: bool, options: &[(u16, &[u8])]) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(size).set_dnssec_ok(dnssec_ok);
    for &(code, data) in options {
        let option = EdnsOption::Unknown(code, data.to_vec());
        e.options_mut().options.push((EdnsCode::from(code), option));
    }
    e
}

/// Client queries: the types and classes stub resolvers ask, with and without EDNS and its
/// options, 0x20 case, and the ones nodedns refuses or answers with an error.
fn queries() -> anyhow::Result<Vec<Vec<u8>>> {
    let cookie: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8];
    let ecs: &[u8] = &[0, 1, 24, 0, 198, 51, 100];
    let cases = [
        ("registry.example.test.", RecordType::A, DNSClass::IN, None),
        (
            "Registry.EXAMPLE.test.",
            RecordType::AAAA,
            DNSClass::IN,
            Some(edns(1232, false, &[])),
        ),
        (
            "example.test.",
            RecordType::MX,
            DNSClass::IN,
            Some(edns(4096, true, &[(10, cookie)])),
        ),
        (
            "_dns._udp.example.test.",
            RecordType::SRV,
            DNSClass::IN,
            Some(edns(512, false, &[(8, ecs)])),
        ),
        (
            "big.example.test.",
            RecordType::TXT,
            DNSClass::IN,
            Some(edns(65535, true, &[(12, &[0; 16])])),
        ),
        (
            "1.100.51.198.in-addr.arpa.",
            RecordType::PTR,
            DNSClass::IN,
            None,
        ),
        (
            "svc.cluster.local.",
            RecordType::HTTPS,
            DNSClass::IN,
            Some(edns(1400, false, &[])),
        ),
        (".", RecordType::NS, DNSClass::IN, None),
        ("version.bind.", RecordType::TXT, DNSClass::CH, None),
        (
            "id.server.",
            RecordType::TXT,
            DNSClass::CH,
            Some(edns(1232, true, &[])),
        ),
        ("example.test.", RecordType::AXFR, DNSClass::IN, None),
        ("example.test.", RecordType::ANY, DNSClass::IN, None),
    ];
    let mut seeds = Vec::new();
    for (i, (qname, qtype, qclass, e)) in cases.into_iter().enumerate() {
        let mut m = Message::new(0x1000 + i as u16, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = i % 3 != 2;
        m.metadata.checking_disabled = i % 4 == 1;
        let mut q = Query::query(name(qname)?, qtype);
        q.set_query_class(qclass);
        m.add_query(q);
        m.edns = e;
        seeds.push(m.to_vec()?);
    }
    let base = seeds[1].clone();
    // What the parser refuses: an unknown EDNS version, a NOTIFY, a response, garbage after
    // the OPT, a cut OPT, a bare header, a compression pointer in the qname.
    let mut badvers = base.clone();
    let opt_ttl = base.len() - 11 + 5;
    badvers[opt_ttl + 1] = 1;
    let mut notify = seeds[0].clone();
    notify[2] |= 4 << 3;
    let mut response = seeds[0].clone();
    response[2] |= 0x80;
    let trailing = [&base[..], &[0xde, 0xad]].concat();
    let cut = base[..base.len() - 3].to_vec();
    let header = base[..12].to_vec();
    let mut pointer = base[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    seeds.extend([badvers, notify, response, trailing, cut, header, pointer]);
    // The query every benchmark sends: h000042.bench. A IN, EDNS 1232.
    let mut bench = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1, 7];
    bench.extend_from_slice(b"h000042\x05bench\x00\x00\x01\x00\x01");
    bench.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    seeds.push(bench);
    Ok(seeds)
}

fn record(owner: &Name, ttl: u32, data: RData) -> Record {
    Record::from_rdata(owner.clone(), ttl, data)
}

fn soa(zone: &Name) -> anyhow::Result<Record> {
    let data = SOA::new(
        name("ns1.example.test.")?,
        name("hostmaster.example.test.")?,
        1,
        3600,
        600,
        86400,
        2,
    );
    Ok(record(zone, 2, RData::SOA(data)))
}

/// Upstream answers: positive with names hickory compresses, 40 records (over 512 bytes),
/// NXDOMAIN and NODATA with an SOA, SERVFAIL with an Extended DNS Error, a truncated one,
/// an OPT among other additional records, an extended rcode, TTLs with the top bit set.
fn responses() -> anyhow::Result<Vec<Vec<u8>>> {
    let zone = name("example.test.")?;
    let registry = name("registry.example.test.")?;
    let big = name("big.example.test.")?;
    let mut seeds = Vec::new();
    let mut response =
        |qname: &Name, qtype, rcode: u16, f: &dyn Fn(&mut Message)| -> anyhow::Result<()> {
            let mut m = Message::response(0x4242, OpCode::Query);
            m.metadata.recursion_desired = true;
            m.metadata.recursion_available = true;
            m.metadata.response_code = <ResponseCode as From<u16>>::from(rcode);
            m.add_query(Query::query(qname.clone(), qtype));
            f(&mut m);
            seeds.push(m.to_vec()?);
            Ok(())
        };
    let ns = name("ns1.example.test.")?;
    response(&registry, RecordType::A, 0, &|m| {
        m.answers.push(record(
            &registry,
            300,
            RData::A(A(Ipv4Addr::new(198, 18, 1, 10))),
        ));
    })?;
    response(&registry, RecordType::AAAA, 0, &|m| {
        m.answers.push(record(
            &registry,
            300,
            RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)),
        ));
        m.edns = Some(edns(1232, true, &[(10, &[9; 24]), (12, &[0; 32])]));
    })?;
    response(&name("www.example.test.")?, RecordType::A, 0, &|m| {
        let www = m.queries[0].name().clone();
        m.answers
            .push(record(&www, 60, RData::CNAME(CNAME(registry.clone()))));
        m.answers.push(record(
            &registry,
            0x8000_0001,
            RData::A(A(Ipv4Addr::new(198, 18, 1, 10))),
        ));
        m.authorities.push(record(
            &zone,
            3600,
            RData::NS(hickory_proto::rr::rdata::NS(ns.clone())),
        ));
        m.additionals.push(record(
            &ns,
            3600,
            RData::A(A(Ipv4Addr::new(198, 18, 1, 251))),
        ));
        m.edns = Some(edns(4096, false, &[]));
    })?;
    response(&big, RecordType::A, 0, &|m| {
        for i in 0..40 {
            m.answers
                .push(record(&big, 300, RData::A(A(Ipv4Addr::new(198, 18, 2, i)))));
        }
        m.edns = Some(edns(1232, false, &[]));
    })?;
    response(&zone, RecordType::MX, 0, &|m| {
        m.answers
            .push(record(&zone, 300, RData::MX(MX::new(10, registry.clone()))));
        m.answers.push(record(
            &zone,
            300,
            RData::TXT(TXT::new(vec!["v=spf1 -all".into()])),
        ));
    })?;
    let soa = soa(&zone)?;
    response(&name("missing.example.test.")?, RecordType::A, 3, &|m| {
        m.authorities.push(soa.clone());
        m.edns = Some(edns(1232, false, &[]));
    })?;
    response(&registry, RecordType::TXT, 0, &|m| {
        m.authorities.push(soa.clone())
    })?;
    response(&registry, RecordType::A, 2, &|m| {
        // Extended DNS Error 22, "No Reachable Authority" (RFC 8914 §4.23), with a text.
        m.edns = Some(edns(
            1232,
            false,
            &[(15, b"\x00\x16no reachable authority")],
        ));
    })?;
    response(&big, RecordType::A, 0, &|m| m.metadata.truncation = true)?;
    response(&registry, RecordType::A, 16, &|m| {
        m.edns = Some(edns(1232, false, &[]))
    })?;
    // An OPT first among the additional records, a record after it (which nodedns drops).
    let mut opt_first = seeds[2].clone();
    let count = |m: &[u8], at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let arcount = count(&opt_first, 10);
    opt_first[10..12].copy_from_slice(&(arcount + 1).to_be_bytes());
    opt_first.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 18, 9, 9]);
    seeds.push(opt_first);
    // Cut in the middle of the last record: what a UDP read of a too-small buffer gives.
    let big_answer = seeds[3].clone();
    seeds.push(big_answer[..big_answer.len() - 20].to_vec());
    Ok(seeds)
}

/// A snapshot nodedns writes of a cache holding the cacheable `responses`, each under the key
/// of the query for its question.
fn snapshot_of(responses: &[Vec<u8>]) -> anyhow::Result<Vec<u8>> {
    let cache = Cache::new(Limits {
        max_entries: 1000,
        max_bytes: 1 << 20,
        stale_max: Duration::from_secs(3600),
    });
    let policy = TtlPolicy {
        min_ttl: 0,
        max_ttl: 86_400,
        negative_max_ttl: 3_600,
        servfail_ttl: 5,
        zone: 0,
    };
    for resp in responses {
        let mut stored = Vec::new();
        let Ok((analysis, layout)) = wire::normalize_response(resp, &mut stored) else {
            continue;
        };
        // The query for the response's question: its header, the question, RD set.
        let question = &layout.message(&stored)[wire::HEADER_LEN..layout.question_end()];
        let query = [&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0][..], question].concat();
        let Ok(q) = wire::parse_query(&query) else {
            continue;
        };
        cache.insert(
            q.cache_key(),
            stored,
            &analysis,
            layout,
            &policy,
            Instant::now(),
        );
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("cache.snap");
    snapshot::write(&cache, &path, Duration::from_secs(3600))?;
    Ok(std::fs::read(&path)?)
}

/// Every TOML file the repository ships or tests with: the embedded default, the
/// DaemonSet's ConfigMap, the good and bad fixtures.
fn shipped_configs() -> anyhow::Result<Vec<Vec<u8>>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("src/config/default.toml"),
        root.join("daemonset/nodedns.toml"),
    ];
    for dir in ["tests/fixtures/config/good", "tests/fixtures/config/bad"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        found.sort();
        files.extend(
            found
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "toml")),
        );
    }
    files.iter().map(|f| Ok(std::fs::read(f)?)).collect()
}
