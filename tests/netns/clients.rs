//! The real DNS clients a pod runs, each invoked in a namespace with a time
//! bound, and what they printed turned into addresses and rcodes.
//!
//! - glibc: `getent ahosts NAME` (the system resolver with resolv.conf's search
//!   list and ndots; A and AAAA in parallel from one socket; retries over TCP
//!   when an answer is truncated).
//! - `dig` (BIND) and `kdig` (Knot), over UDP or TCP, for rcodes and TTLs.
//! - `musl_client.c`, built by [`build_musl_client`] with `musl-gcc -static`:
//!   getaddrinfo(AF_UNSPEC), parallel A+AAAA from one socket, no TCP retry.

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::process::{Outcome, run_host, run_in};
use crate::underlay::WILD_V4;

/// Every client gets this long before it counts as hung; glibc's own default
/// timeout (5 s per try) would show up as a failure well before it.
const CLIENT_LIMIT: Duration = Duration::from_secs(15);

/// The source of the pod's C resolver client.
const C_CLIENT_SOURCE: &str = include_str!("musl_client.c");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Dig,
    Kdig,
}

/// One record of an answer section.
#[derive(Debug, Clone)]
pub struct Record {
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What `dig`/`kdig` showed: the rcode and the answer section.
#[derive(Debug)]
pub struct Answer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...; `None` when no reply came.
    pub status: Option<String>,
    pub records: Vec<Record>,
    pub outcome: Outcome,
}

impl Answer {
    /// The A/AAAA addresses of the answer section.
    pub fn addresses(&self) -> BTreeSet<IpAddr> {
        self.records
            .iter()
            .filter(|r| r.rtype == "A" || r.rtype == "AAAA")
            .filter_map(|r| r.data.parse().ok())
            .collect()
    }

    pub fn is(&self, status: &str) -> bool {
        self.status.as_deref() == Some(status)
    }
}

/// Queries `name`/`qtype` with `dig` from namespace `ns`; `server: None` means
/// the namespace's resolv.conf (no search list: dig does not apply it).
pub fn dig(ns: &str, server: Option<&str>, name: &str, qtype: &str, t: Transport) -> Answer {
    query(Tool::Dig, ns, server, name, qtype, t)
}

/// Queries with `tool`: one try, 3 s timeout, EDNS with a 1232-byte buffer,
/// and over UDP no automatic retry over TCP (`+ignore`), so a UDP answer is
/// what came over UDP.
pub fn query(
    tool: Tool,
    ns: &str,
    server: Option<&str>,
    name: &str,
    qtype: &str,
    t: Transport,
) -> Answer {
    let mut args: Vec<&str> = match tool {
        Tool::Dig => vec!["+tries=1", "+time=3", "+bufsize=1232"],
        Tool::Kdig => vec!["+retry=0", "+timeout=3", "+bufsize=1232"],
    };
    args.extend(match t {
        Transport::Udp => ["+notcp", "+ignore"],
        Transport::Tcp => ["+tcp", "+noignore"],
    });
    args.extend([name, qtype]);
    let at = server.map(|s| format!("@{s}"));
    args.extend(at.as_deref());
    let outcome = run_in(ns, program(tool), &args, CLIENT_LIMIT);
    let (status, records) = parse_dig(&outcome.stdout);
    Answer {
        status,
        records,
        outcome,
    }
}

fn program(tool: Tool) -> &'static str {
    match tool {
        Tool::Dig => "dig",
        Tool::Kdig => "kdig",
    }
}

/// Reads the rcode from the `->>HEADER<<-` line (dig: `status: NOERROR,`;
/// kdig: `status: NOERROR;`) and the records of the ANSWER SECTION.
fn parse_dig(text: &str) -> (Option<String>, Vec<Record>) {
    let mut status = None;
    let mut records = Vec::new();
    let mut in_answer = false;
    for line in text.lines() {
        if let Some(rest) = line.split("status: ").nth(1) {
            let word: String = rest
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            status = Some(word);
        }
        if line.starts_with(';') {
            if line.ends_with("SECTION:") {
                in_answer = line.contains("ANSWER");
            }
            continue;
        }
        if line.trim().is_empty() {
            in_answer = false;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if in_answer
            && fields.len() >= 5
            && let Ok(ttl) = fields[1].parse()
        {
            records.push(Record {
                ttl,
                rtype: fields[3].to_owned(),
                data: fields[4..].join(" "),
            });
        }
    }
    (status, records)
}

/// What a getaddrinfo client printed: its addresses, and how it went.
#[derive(Debug)]
pub struct Lookup {
    pub addresses: BTreeSet<IpAddr>,
    pub outcome: Outcome,
}

impl Lookup {
    /// Exited 0 and printed at least one address.
    pub fn resolved(&self) -> bool {
        self.outcome.success() && !self.addresses.is_empty()
    }
}

/// glibc's resolver as a pod uses it: `getent ahosts NAME` in namespace `ns`.
pub fn getent(ns: &str, name: &str) -> Lookup {
    getent_in(ns, "ahosts", name)
}

/// `getent DATABASE NAME` in namespace `ns` (`ahosts`: A and AAAA; `ahostsv4`: A only).
pub fn getent_in(ns: &str, database: &str, name: &str) -> Lookup {
    lookup(run_in(ns, "getent", &[database, name], CLIENT_LIMIT))
}

/// Lookups of unique names (cache misses) from the pod, one after the other.
pub struct LoopReport {
    /// Names that did not resolve to the wildcard's address.
    pub lost: Vec<String>,
    /// Wall time of each lookup, in order.
    pub latencies: Vec<Duration>,
}

impl LoopReport {
    pub fn worst_after_first(&self) -> Duration {
        self.latencies
            .iter()
            .skip(1)
            .max()
            .copied()
            .unwrap_or_default()
    }

    pub fn median(&self) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }
}

/// `count` glibc lookups of `<tag><i>.wild.example.test` (each name new to the
/// cache), bounded by 90 s in all.
pub fn lookup_loop(pod: &str, tag: &str, count: usize) -> LoopReport {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut report = LoopReport {
        lost: Vec::new(),
        latencies: Vec::new(),
    };
    for i in 0..count {
        assert!(Instant::now() < deadline, "{count} lookups took over 90 s");
        let name = format!("{tag}{i}.wild.example.test");
        let lookup = getent(pod, &name);
        report.latencies.push(lookup.outcome.elapsed);
        if !lookup.addresses.contains(&WILD_V4.into()) {
            report.lost.push(name);
        }
    }
    report
}

/// Runs the client built by [`build_musl_client`] in namespace `ns`.
pub fn musl_client(ns: &str, binary: &Path, name: &str) -> Lookup {
    lookup(run_in(ns, &binary.to_string_lossy(), &[name], CLIENT_LIMIT))
}

/// Both getent and the C client print the address as the first word of a line.
fn lookup(outcome: Outcome) -> Lookup {
    let addresses = outcome
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|w| w.parse().ok())
        .collect();
    Lookup { addresses, outcome }
}

/// Compiles `musl_client.c` with `musl-gcc -static` into `dir` (what an
/// Alpine-based job image resolves with) and returns the binary's path.
pub fn build_musl_client(dir: &Path) -> PathBuf {
    let source = dir.join("musl_client.c");
    fs::write(&source, C_CLIENT_SOURCE)
        .unwrap_or_else(|e| panic!("write {}: {e}", source.display()));
    let binary = dir.join("musl_client");
    let (src, out) = (source.to_string_lossy(), binary.to_string_lossy());
    let args = ["-static", "-O2", "-Wall", "-Werror", "-o", &*out, &*src];
    let built = run_host("musl-gcc", &args, Duration::from_secs(60));
    assert!(built.success(), "musl-gcc failed: {}", built.stderr);
    binary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dig_and_kdig_output() {
        let dig = ";; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 1\n\
                   ;; ANSWER SECTION:\n\
                   a.test.\t\t5\tIN\tA\t198.18.0.1\n\
                   \n\
                   ;; AUTHORITY SECTION:\n\
                   test.\t\t5\tIN\tSOA\tns. h. 1 2 3 4 5\n";
        let (status, records) = parse_dig(dig);
        assert_eq!(status.as_deref(), Some("NXDOMAIN"));
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].ttl, 5);
        let kdig = ";; ->>HEADER<<- opcode: QUERY; status: SERVFAIL; id: 2\n";
        assert_eq!(parse_dig(kdig).0.as_deref(), Some("SERVFAIL"));
    }
}
