//! The fake upstream's data: records by name and the answers an authoritative server gives for
//! them (positive, CNAME chain, NXDOMAIN, NODATA with the zone's SOA).
//!
//! It builds `Message`s only; sockets, behaviours and truncation live in the parent module.

use std::collections::HashMap;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// How many CNAME hops are followed inside the fake's own data before giving up.
const MAX_CNAME_HOPS: usize = 8;

/// Parses a test-supplied name; a missing trailing dot is added so "www.test" means "www.test.".
pub fn name(text: &str) -> Name {
    let fqdn = if text.ends_with('.') {
        text.to_string()
    } else {
        format!("{text}.")
    };
    Name::from_ascii(&fqdn).unwrap()
}

/// The lookup key of a name: DNS names compare case-insensitively (RFC 4343 §3).
pub fn key(name: &Name) -> String {
    name.to_lowercase().to_ascii()
}

/// Records and the negative-answer settings of the fake's one zone.
pub struct Zone {
    origin: Name,
    records: HashMap<String, Vec<Record>>,
    soa_ttl: u32,
    soa_minimum: u32,
    negative_soa: bool,
}

impl Zone {
    pub fn new() -> Self {
        Self {
            origin: name("test."),
            records: HashMap::new(),
            soa_ttl: 60,
            soa_minimum: 30,
            negative_soa: true,
        }
    }

    pub fn set_origin(&mut self, origin: &str) {
        self.origin = name(origin);
    }

    pub fn set_soa(&mut self, ttl: u32, minimum: u32) {
        self.soa_ttl = ttl;
        self.soa_minimum = minimum;
    }

    pub fn set_negative_soa(&mut self, on: bool) {
        self.negative_soa = on;
    }

    pub fn add(&mut self, owner: &str, ttl: u32, data: RData) {
        let owner = name(owner);
        let record = Record::from_rdata(owner.clone(), ttl, data);
        self.records.entry(key(&owner)).or_default().push(record);
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// The zone's SOA record, as an authoritative server puts it in the authority section of
    /// negative answers (RFC 2308 §3).
    pub fn soa(&self) -> Record {
        let mname = name("ns1.").append_domain(&self.origin).unwrap();
        let rname = name("hostmaster.").append_domain(&self.origin).unwrap();
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86400, self.soa_minimum);
        Record::from_rdata(self.origin.clone(), self.soa_ttl, RData::SOA(soa))
    }

    /// Fills `response` (whose question is already set) with the authoritative answer for
    /// `qname`/`qtype`. The first hop's owner names use the question's case, as servers that
    /// compress against the question do.
    pub fn fill(&self, response: &mut Message, qname: &Name, qtype: RecordType) {
        let mut current = qname.clone();
        for _ in 0..MAX_CNAME_HOPS {
            let Some(rrset) = self.records.get(&key(&current)) else {
                response.metadata.response_code = ResponseCode::NXDomain;
                self.add_negative_soa(response);
                return;
            };
            let matching: Vec<Record> = rrset
                .iter()
                .filter(|r| r.record_type() == qtype || qtype == RecordType::ANY)
                .map(|r| with_owner(r, &current))
                .collect();
            if !matching.is_empty() {
                response.answers.extend(matching);
                return;
            }
            // RFC 1034 §4.3.2 step 3a: a CNAME at the name is returned and followed.
            match rrset.iter().find(|r| r.record_type() == RecordType::CNAME) {
                Some(cname) => {
                    response.answers.push(with_owner(cname, &current));
                    let RData::CNAME(CNAME(target)) = &cname.data else {
                        return;
                    };
                    current = target.clone();
                }
                None => {
                    self.add_negative_soa(response);
                    return;
                }
            }
        }
    }

    fn add_negative_soa(&self, response: &mut Message) {
        if self.negative_soa {
            response.authorities.push(self.soa());
        }
    }
}

fn with_owner(record: &Record, owner: &Name) -> Record {
    let mut record = record.clone();
    record.name = owner.clone();
    record
}
