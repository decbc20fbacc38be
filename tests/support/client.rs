//! A small DNS client for tests: builds queries (ID, 0x20 random case, EDNS, COOKIE) and
//! exchanges them over UDP or TCP with a timeout. Loopback servers only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

/// How long the client waits for an answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// A query under construction. Defaults: random ID, RD=1, no EDNS, name as given.
#[derive(Clone, Debug)]
pub struct QueryBuilder {
    name: Name,
    qtype: RecordType,
    id: u16,
    rd: bool,
    edns: Option<u16>,
    cookie: Option<[u8; 8]>,
}

impl QueryBuilder {
    /// `name` keeps its case; a missing trailing dot is added.
    pub fn new(name: &str, qtype: RecordType) -> Self {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        Self {
            name: Name::from_ascii(fqdn).unwrap(),
            qtype,
            id: rand::random(),
            rd: true,
            edns: None,
            cookie: None,
        }
    }

    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    pub fn rd(mut self, rd: bool) -> Self {
        self.rd = rd;
        self
    }

    /// Flips the case of each letter at random (DNS 0x20).
    pub fn random_case(mut self) -> Self {
        self.name.randomize_label_case();
        self
    }

    /// Adds an OPT record advertising `payload` (values below 512 are sent as 512).
    pub fn edns(mut self, payload: u16) -> Self {
        self.edns = Some(payload);
        self
    }

    /// Adds a random 8-byte client COOKIE (RFC 7873 §4, option code 10); implies EDNS 1232.
    pub fn cookie(self) -> Self {
        let mut cookie = [0u8; 8];
        rand::fill(&mut cookie);
        self.cookie_bytes(cookie)
    }

    pub fn cookie_bytes(mut self, cookie: [u8; 8]) -> Self {
        self.cookie = Some(cookie);
        self.edns.get_or_insert(1232);
        self
    }

    pub fn name(&self) -> &Name {
        &self.name
    }

    pub fn message(&self) -> Message {
        let mut message = Message::new(self.id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = self.rd;
        message.add_query(Query::query(self.name.clone(), self.qtype));
        if let Some(payload) = self.edns {
            let mut edns = Edns::new();
            edns.set_max_payload(payload);
            if let Some(cookie) = self.cookie {
                let option = EdnsOption::Unknown(u16::from(EdnsCode::Cookie), cookie.to_vec());
                edns.options_mut().insert(option);
            }
            message.set_edns(edns);
        }
        message
    }

    pub fn build(&self) -> Vec<u8> {
        self.message().to_vec().unwrap()
    }
}

/// A loopback address of the same family as `server` with port 0, to bind the client on.
fn local_for(server: SocketAddr) -> SocketAddr {
    let ip = match server.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, 0)
}

/// Sends `query` over UDP and returns the first datagram from `server` within `wait`; `None`
/// on timeout or when the port is closed (ICMP port unreachable).
pub async fn exchange_udp_raw_timeout(
    server: SocketAddr,
    query: &[u8],
    wait: Duration,
) -> Option<Vec<u8>> {
    assert!(server.ip().is_loopback(), "tests only talk to loopback");
    let sock = UdpSocket::bind(local_for(server)).await.unwrap();
    // Connecting makes the kernel discard datagrams from any other source.
    sock.connect(server).await.unwrap();
    sock.send(query).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let len = timeout(wait, sock.recv(&mut buf)).await.ok()?.ok()?;
    buf.truncate(len);
    Some(buf)
}

/// [`exchange_udp_raw_timeout`] with [`DEFAULT_TIMEOUT`].
pub async fn exchange_udp_raw(server: SocketAddr, query: &[u8]) -> Option<Vec<u8>> {
    exchange_udp_raw_timeout(server, query, DEFAULT_TIMEOUT).await
}

/// Sends `query` from an unconnected socket and collects every datagram, from any source,
/// that arrives within `window`.
pub async fn exchange_udp_collect(
    server: SocketAddr,
    query: &[u8],
    window: Duration,
) -> Vec<(SocketAddr, Vec<u8>)> {
    assert!(server.ip().is_loopback(), "tests only talk to loopback");
    let sock = UdpSocket::bind(local_for(server)).await.unwrap();
    sock.send_to(query, server).await.unwrap();
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65535];
    while let Ok(Ok((len, from))) =
        tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await
    {
        got.push((from, buf[..len].to_vec()));
    }
    got
}

/// Sends the built query over UDP and parses the reply, which must carry the query's ID.
pub async fn send_udp(server: SocketAddr, query: &QueryBuilder) -> anyhow::Result<Message> {
    let request = query.message();
    let raw = exchange_udp_raw(server, &request.to_vec()?)
        .await
        .with_context(|| format!("no UDP answer from {server}"))?;
    let reply = Message::from_vec(&raw)?;
    ensure!(reply.metadata.id == request.metadata.id, "reply ID differs");
    Ok(reply)
}

/// A plain UDP query with an optional EDNS payload.
pub async fn query_udp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> anyhow::Result<Message> {
    let mut query = QueryBuilder::new(name, qtype);
    if let Some(payload) = edns {
        query = query.edns(payload);
    }
    send_udp(server, &query).await
}

/// Reads one 2-byte-length-framed message (RFC 1035 §4.2.2).
pub async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut frame = vec![0u8; usize::from(len)];
    stream.read_exact(&mut frame).await?;
    Ok(frame)
}

/// Frames `message` with its 2-byte length prefix.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let len = u16::try_from(message.len()).unwrap();
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    framed
}

/// Connects, writes all `queries` framed in one go (pipelining), then reads up to `want` reply
/// frames, stopping early at EOF or when `wait` has passed in total.
pub async fn exchange_tcp_frames(
    server: SocketAddr,
    queries: &[Vec<u8>],
    want: usize,
    wait: Duration,
) -> anyhow::Result<Vec<Vec<u8>>> {
    assert!(server.ip().is_loopback(), "tests only talk to loopback");
    let deadline = Instant::now() + wait;
    let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(server))
        .await
        .context("TCP connect timed out")??;
    let all: Vec<u8> = queries.iter().flat_map(|q| frame(q)).collect();
    stream.write_all(&all).await?;
    let mut replies = Vec::new();
    while replies.len() < want {
        match tokio::time::timeout_at(deadline, read_frame(&mut stream)).await {
            Ok(Ok(reply)) => replies.push(reply),
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(replies)
}

/// [`exchange_tcp_frames`] expecting one reply per query.
pub async fn exchange_tcp_raw_timeout(
    server: SocketAddr,
    queries: &[Vec<u8>],
    wait: Duration,
) -> anyhow::Result<Vec<Vec<u8>>> {
    exchange_tcp_frames(server, queries, queries.len(), wait).await
}

/// [`exchange_tcp_raw_timeout`] with [`DEFAULT_TIMEOUT`].
pub async fn exchange_tcp_raw(
    server: SocketAddr,
    queries: &[Vec<u8>],
) -> anyhow::Result<Vec<Vec<u8>>> {
    exchange_tcp_raw_timeout(server, queries, DEFAULT_TIMEOUT).await
}

/// Sends the built query over TCP and parses the reply, which must carry the query's ID.
pub async fn send_tcp(server: SocketAddr, query: &QueryBuilder) -> anyhow::Result<Message> {
    let request = query.message();
    let replies = exchange_tcp_raw(server, &[request.to_vec()?]).await?;
    let Some(raw) = replies.first() else {
        bail!("no TCP answer from {server}");
    };
    let reply = Message::from_vec(raw)?;
    ensure!(reply.metadata.id == request.metadata.id, "reply ID differs");
    Ok(reply)
}

/// A plain TCP query.
pub async fn query_tcp(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
) -> anyhow::Result<Message> {
    send_tcp(server, &QueryBuilder::new(name, qtype)).await
}

/// The IPv4 addresses in the answer section, in order.
pub fn answer_a(message: &Message) -> Vec<Ipv4Addr> {
    let a = |r: &hickory_proto::rr::Record| match &r.data {
        RData::A(a) => Some(a.0),
        _ => None,
    };
    message.answers.iter().filter_map(a).collect()
}

/// The IPv6 addresses in the answer section, in order.
pub fn answer_aaaa(message: &Message) -> Vec<Ipv6Addr> {
    let aaaa = |r: &hickory_proto::rr::Record| match &r.data {
        RData::AAAA(aaaa) => Some(aaaa.0),
        _ => None,
    };
    message.answers.iter().filter_map(aaaa).collect()
}

/// The TTLs of the answer section, in order.
pub fn answer_ttls(message: &Message) -> Vec<u32> {
    message.answers.iter().map(|r| r.ttl).collect()
}
