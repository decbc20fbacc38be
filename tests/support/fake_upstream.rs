//! `FakeUpstream`: a scriptable authoritative DNS server on loopback, UDP and TCP on one port,
//! that integration tests put behind nodedns as an upstream.
//!
//! It owns its sockets and tasks (all stop when it is dropped or [`FakeUpstream::stop`]ped), the
//! records it serves, the [`Behavior`] scripting, and the record of every query it received.
//! Answer construction lives in `zone` (data) and `reply` (what is sent, and when).

mod reply;
mod serve;
mod zone;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::opt::EdnsCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{RData, RecordType};
use parking_lot::Mutex;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// The address every forged reply carries in place of real A data, so a test can assert that a
/// forged reply never reaches a client. TEST-NET-1 (RFC 5737): never routed.
pub const POISON_A: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 66);
/// The AAAA counterpart of [`POISON_A`] (documentation prefix, RFC 3849).
pub const POISON_AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x66);
/// The question a `WrongQuestionFirst` forgery answers instead of the asked one.
pub const FORGED_QNAME: &str = "forged-question.invalid.";
/// How long after a forged reply the genuine one follows.
pub const FORGERY_LEAD: Duration = Duration::from_millis(20);

/// How the fake reacts to a query. Set globally or per name; a per-name setting wins.
#[derive(Clone, Debug, PartialEq)]
pub enum Behavior {
    /// Answer from the data (the default).
    Answer,
    /// Wait, then answer.
    Delay(Duration),
    /// Never answer (TCP: the connection stays open and later queries on it are still served).
    Drop,
    /// Answer with this rcode, the question echoed and no records.
    Rcode(ResponseCode),
    /// Over UDP always reply TC=1 with no records; over TCP answer fully.
    TruncateUdp,
    /// First a forged reply (answer data replaced by [`POISON_A`]/[`POISON_AAAA`]) with the ID
    /// off by one, then the genuine reply [`FORGERY_LEAD`] later. Applies to UDP and TCP.
    WrongIdFirst,
    /// First a forged reply for the question [`FORGED_QNAME`], then the genuine one.
    WrongQuestionFirst,
    /// UDP only: first a forged reply with the right ID and question from another port on the
    /// fake's IP, then the genuine one from the fake's own port. Over TCP: plain answer.
    OtherSourceFirst,
    /// Reply with 1 to 11 random bytes (over TCP: one frame holding them).
    Garbage,
    /// Reply with these bytes, a whole message scripted for the asked name: its ID becomes the
    /// query's and its question is replaced by the query's question (write it for the same
    /// name, so the offsets compression pointers use stay right). Over UDP, when longer than
    /// the query allows, the header and question alone go out with TC=1, and the bytes over
    /// TCP.
    Raw(Vec<u8>),
    /// The inner behaviour for the first `n` queries it governs, then `Answer`.
    FailFirst(usize, Box<Behavior>),
}

/// Header bits the fake forces on every reply it sends, over what it sets by default (AA=1,
/// RA=1, RD and CD echoed from the query, AD=0). `None` keeps the default for that bit. Lets a
/// test play an upstream whose header a forwarder must not pass on: an authoritative server
/// (AA=1, RA=0) that does not echo RD, or one that sets AD for a client that did not ask.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeaderFlags {
    pub aa: Option<bool>,
    pub ra: Option<bool>,
    pub rd: Option<bool>,
    pub ad: Option<bool>,
    pub cd: Option<bool>,
}

/// Transport a query arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// One query the fake received and could parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The question name as received, case preserved, with trailing dot.
    pub name: String,
    pub qtype: RecordType,
    pub proto: Proto,
    pub id: u16,
    pub had_opt: bool,
    pub opt_payload: Option<u16>,
    /// Whether the OPT carried a COOKIE option (RFC 7873, option code 10).
    pub had_cookie: bool,
    /// Where the query came from (for UDP, the forwarder's source port).
    pub from: SocketAddr,
}

/// A behaviour plus how many queries a `FailFirst` in it has already failed.
struct Scripted {
    behavior: Behavior,
    used: usize,
}

impl Scripted {
    fn new(behavior: Behavior) -> Self {
        Self { behavior, used: 0 }
    }

    /// The behaviour for the next query, counting it against `FailFirst`.
    fn next(&mut self) -> Behavior {
        match &self.behavior {
            Behavior::FailFirst(n, inner) if self.used < *n => {
                self.used += 1;
                (**inner).clone()
            }
            Behavior::FailFirst(..) => Behavior::Answer,
            other => other.clone(),
        }
    }

    /// What a health probe meets: the upstream's state (dropping, slow, an rcode, garbage),
    /// without using up a `FailFirst` or a forgery meant for a client query.
    fn peek(&self) -> Behavior {
        match &self.behavior {
            Behavior::FailFirst(..)
            | Behavior::WrongIdFirst
            | Behavior::WrongQuestionFirst
            | Behavior::OtherSourceFirst => Behavior::Answer,
            other => other.clone(),
        }
    }
}

/// State shared between the handle and the serving tasks.
struct Shared {
    zone: Mutex<zone::Zone>,
    global: Mutex<Scripted>,
    per_name: Mutex<std::collections::HashMap<String, Scripted>>,
    seen: Mutex<Vec<Seen>>,
    udp_queries: AtomicUsize,
    tcp_queries: AtomicUsize,
    tcp_connections: AtomicUsize,
    /// Health probes received (see [`is_probe`]), over either transport.
    probes: AtomicUsize,
    server_payload: AtomicU16,
    header_flags: Mutex<HeaderFlags>,
}

impl Shared {
    /// Records `raw` as received over `proto` and returns what to send back.
    fn handle(&self, raw: &[u8], proto: Proto, from: SocketAddr) -> Vec<reply::Send> {
        let counter = match proto {
            Proto::Udp => &self.udp_queries,
            Proto::Tcp => &self.tcp_queries,
        };
        let query = match reply::Query::parse(raw) {
            Ok(query) => query,
            Err(reply) => {
                counter.fetch_add(1, Ordering::SeqCst);
                return reply.into_iter().map(now).collect();
            }
        };
        let probe = is_probe(&query);
        if probe {
            // nodedns's health probes are not client traffic: counted apart, so tests that
            // count what clients caused are not raced by them.
            self.probes.fetch_add(1, Ordering::SeqCst);
        } else {
            counter.fetch_add(1, Ordering::SeqCst);
            self.seen.lock().push(seen(&query, proto, from));
        }
        let behavior = {
            let mut per_name = self.per_name.lock();
            match per_name.get_mut(&zone::key(query.qname())) {
                Some(scripted) => scripted.next(),
                // A probe meets the upstream's state (dropping, slow, an rcode) but does not
                // use up a `FailFirst` meant for client queries.
                None if probe => self.global.lock().peek(),
                None => self.global.lock().next(),
            }
        };
        let payload = self.server_payload.load(Ordering::SeqCst);
        let flags = *self.header_flags.lock();
        reply::plan(&self.zone.lock(), &query, proto, &behavior, payload, flags)
    }
}

/// Whether `query` has the shape of nodedns's default health probe: a zone apex `SOA`, or
/// `. NS`. Tests that need such a query as client traffic must use another shape.
fn is_probe(query: &reply::Query) -> bool {
    query.qtype() == RecordType::SOA || (query.qname().is_root() && query.qtype() == RecordType::NS)
}

fn now(bytes: Vec<u8>) -> reply::Send {
    reply::Send {
        delay: Duration::ZERO,
        bytes,
        other_source: false,
    }
}

fn seen(query: &reply::Query, proto: Proto, from: SocketAddr) -> Seen {
    let edns = query.message.edns.as_ref();
    Seen {
        name: query.qname().to_ascii(),
        qtype: query.qtype(),
        proto,
        id: query.message.metadata.id,
        had_opt: edns.is_some(),
        opt_payload: edns.map(|e| e.max_payload()),
        had_cookie: edns.is_some_and(|e| e.option(EdnsCode::Cookie).is_some()),
        from,
    }
}

/// A scriptable DNS server on a loopback address, UDP and TCP on the same port.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start() -> Self {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).await
    }

    /// Starts on `ip` (a loopback address, e.g. 127.0.0.2) with a free port.
    pub async fn start_on(ip: IpAddr) -> Self {
        Self::start_at(SocketAddr::new(ip, 0)).await
    }

    /// On a given loopback address and port (port 53 for a resolv.conf, which has no ports;
    /// that needs root).
    pub async fn start_at(at: SocketAddr) -> Self {
        let ip = at.ip();
        assert!(ip.is_loopback(), "the fake upstream only binds loopback");
        let shared = Arc::new(Shared {
            zone: Mutex::new(zone::Zone::new()),
            global: Mutex::new(Scripted::new(Behavior::Answer)),
            per_name: Mutex::new(std::collections::HashMap::new()),
            seen: Mutex::new(Vec::new()),
            udp_queries: AtomicUsize::new(0),
            tcp_queries: AtomicUsize::new(0),
            tcp_connections: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            server_payload: AtomicU16::new(1232),
            header_flags: Mutex::new(HeaderFlags::default()),
        });
        let (udp, tcp) = serve::bind_pair(ip, at.port()).await;
        let addr = udp.local_addr().unwrap();
        let mut fake = Self {
            addr,
            shared,
            tasks: Vec::new(),
        };
        fake.spawn(udp, tcp);
        fake
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: once this returns both sockets are closed, so UDP queries are lost and
    /// TCP connections are refused (established ones are closed).
    pub async fn stop(&mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same address after [`stop`](Self::stop); data, behaviours and
    /// counters are kept.
    pub async fn resume(&mut self) {
        self.stop().await;
        let (udp, tcp) = serve::bind_pair(self.addr.ip(), self.addr.port()).await;
        self.spawn(udp, tcp);
    }

    fn spawn(&mut self, udp: UdpSocket, tcp: TcpListener) {
        let udp = Arc::new(udp);
        self.tasks.push(tokio::spawn(serve::serve_udp(
            udp,
            Arc::clone(&self.shared),
        )));
        self.tasks.push(tokio::spawn(serve::serve_tcp(
            tcp,
            Arc::clone(&self.shared),
        )));
    }

    // ---- data ----

    /// The zone whose SOA negative answers carry (default "test.").
    pub fn set_zone(&self, origin: &str) {
        self.shared.zone.lock().set_origin(origin);
    }

    /// SOA record TTL and MINIMUM field of negative answers (defaults 60 and 30).
    pub fn set_soa(&self, ttl: u32, minimum: u32) {
        self.shared.zone.lock().set_soa(ttl, minimum);
    }

    /// Whether NXDOMAIN/NODATA answers carry the SOA (default true).
    pub fn set_negative_soa(&self, on: bool) {
        self.shared.zone.lock().set_negative_soa(on);
    }

    /// The EDNS payload the fake advertises and the cap on its UDP replies (default 1232).
    pub fn set_udp_payload(&self, payload: u16) {
        self.shared.server_payload.store(payload, Ordering::SeqCst);
    }

    /// Header bits forced on every reply from now on (see [`HeaderFlags`]).
    pub fn set_header_flags(&self, flags: HeaderFlags) {
        *self.shared.header_flags.lock() = flags;
    }

    pub fn add_a(&self, name: &str, addr: Ipv4Addr, ttl: u32) {
        self.shared.zone.lock().add(name, ttl, RData::A(A(addr)));
    }

    pub fn add_aaaa(&self, name: &str, addr: Ipv6Addr, ttl: u32) {
        self.shared
            .zone
            .lock()
            .add(name, ttl, RData::AAAA(AAAA(addr)));
    }

    pub fn add_txt(&self, name: &str, text: &str, ttl: u32) {
        let txt = TXT::new(vec![text.to_string()]);
        self.shared.zone.lock().add(name, ttl, RData::TXT(txt));
    }

    /// `count` A records 10.0.0.1, 10.0.0.2, ... at `name`; 40 of them exceed 512 bytes.
    pub fn add_many_a(&self, name: &str, count: u32, ttl: u32) {
        let mut zone = self.shared.zone.lock();
        for i in 1..=count {
            let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i);
            zone.add(name, ttl, RData::A(A(addr)));
        }
    }

    /// A CNAME at `name`; queries for other types at `name` follow it inside the fake's data.
    pub fn add_cname(&self, name: &str, target: &str, ttl: u32) {
        let target = CNAME(zone::name(target));
        self.shared.zone.lock().add(name, ttl, RData::CNAME(target));
    }

    /// Forgets all records.
    pub fn clear_records(&self) {
        self.shared.zone.lock().clear();
    }

    // ---- behaviour ----

    /// The behaviour for names without their own (resets a `FailFirst` count).
    pub fn set_behavior(&self, behavior: Behavior) {
        *self.shared.global.lock() = Scripted::new(behavior);
    }

    /// The behaviour for `name` (any case), overriding the global one.
    pub fn set_behavior_for(&self, name: &str, behavior: Behavior) {
        let key = zone::key(&zone::name(name));
        self.shared
            .per_name
            .lock()
            .insert(key, Scripted::new(behavior));
    }

    // ---- inspection ----

    /// Health probes received (a zone apex `SOA` or `. NS`), not counted anywhere else.
    pub fn probes(&self) -> usize {
        self.shared.probes.load(Ordering::SeqCst)
    }

    /// Datagrams received on UDP (including unparseable ones), health probes not included.
    pub fn udp_queries(&self) -> usize {
        self.shared.udp_queries.load(Ordering::SeqCst)
    }

    /// Frames received over TCP (including unparseable ones), health probes not included.
    pub fn tcp_queries(&self) -> usize {
        self.shared.tcp_queries.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn tcp_connections(&self) -> usize {
        self.shared.tcp_connections.load(Ordering::SeqCst)
    }

    /// Every parseable query received, in arrival order.
    pub fn queries(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }

    /// Parseable queries received for `name` (any case).
    pub fn queries_for(&self, name: &str) -> usize {
        let key = zone::key(&zone::name(name));
        let seen = self.shared.seen.lock();
        seen.iter()
            .filter(|s| zone::key(&zone::name(&s.name)) == key)
            .count()
    }

    /// Zeroes all counters and forgets the seen queries.
    pub fn reset_counts(&self) {
        self.shared.udp_queries.store(0, Ordering::SeqCst);
        self.shared.tcp_queries.store(0, Ordering::SeqCst);
        self.shared.tcp_connections.store(0, Ordering::SeqCst);
        self.shared.probes.store(0, Ordering::SeqCst);
        self.shared.seen.lock().clear();
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
