//! One DNS exchange with a deadline, and what came of it: an answer with its round-trip time,
//! a timeout, or a refusal. Every check that sends a query goes through [`exchange`].
//!
//! Unlike the forwarder this is not on any packet path: it builds and decodes messages with
//! hickory-proto and opens a fresh socket per probe, so a probe measures what a new client sees.

use std::collections::BTreeSet;
use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout};

/// How a probe travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// What one probe produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A reply arrived (any rcode).
    Reply {
        rtt: Duration,
        message: Box<Message>,
    },
    /// Nothing within the deadline: dropped by a firewall, a route or a dead server.
    Timeout(Duration),
    /// The port is closed: TCP reset, or ICMP port unreachable on the connected UDP socket.
    Refused,
    /// Anything else: no route, a socket error, an unparseable reply.
    Error(String),
}

/// A question to ask.
#[derive(Debug, Clone)]
pub struct Question {
    pub name: Name,
    pub qtype: RecordType,
    pub class: DNSClass,
}

impl Question {
    /// An IN-class question; `name` gets a trailing dot when it lacks one. `None` when the
    /// text is not a domain name.
    pub fn internet(name: &str, qtype: RecordType) -> Option<Question> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        Some(Question {
            name: Name::from_ascii(fqdn).ok()?,
            qtype,
            class: DNSClass::IN,
        })
    }

    /// A CHAOS TXT question such as `version.bind`.
    pub fn chaos(name: &str) -> Option<Question> {
        Some(Question {
            class: DNSClass::CH,
            ..Question::internet(name, RecordType::TXT)?
        })
    }

    fn message(&self) -> Message {
        let mut message = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        let mut query = Query::query(self.name.clone(), self.qtype);
        query.set_query_class(self.class);
        message.add_query(query);
        message
    }
}

impl fmt::Display for Question {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.class {
            DNSClass::IN => write!(f, "{} {}", self.name, self.qtype),
            class => write!(f, "{} {} {}", self.name, class, self.qtype),
        }
    }
}

/// Asks `server` the question over `transport`, waiting at most `wait` in all (connect
/// included). Never panics and never waits longer than `wait`.
pub async fn exchange(
    server: SocketAddr,
    transport: Transport,
    question: &Question,
    wait: Duration,
) -> Outcome {
    let message = question.message();
    let Ok(bytes) = message.to_vec() else {
        return Outcome::Error(format!("cannot encode {question}"));
    };
    let start = Instant::now();
    let sent = match transport {
        Transport::Udp => timeout(wait, udp(server, &bytes, message.metadata.id)).await,
        Transport::Tcp => timeout(wait, tcp(server, &bytes)).await,
    };
    let reply = match sent {
        Err(_) => return Outcome::Timeout(wait),
        Ok(Err(e)) if is_refusal(&e) => return Outcome::Refused,
        Ok(Err(e)) => return Outcome::Error(e.to_string()),
        Ok(Ok(reply)) => reply,
    };
    let rtt = start.elapsed();
    match Message::from_vec(&reply) {
        Ok(message) => Outcome::Reply {
            rtt,
            message: Box::new(message),
        },
        Err(e) => Outcome::Error(format!("unparseable reply: {e}")),
    }
}

fn is_refusal(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
    )
}

/// The unspecified address of `server`'s family, port 0: the kernel picks the source.
fn any_for(server: SocketAddr) -> SocketAddr {
    match server.ip() {
        IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

/// A connected socket (so ICMP port unreachable surfaces as ECONNREFUSED); datagrams whose ID
/// is not ours are skipped. The caller's timeout bounds the loop.
async fn udp(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(any_for(server)).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await?;
        if buf.get(..2) == Some(&id.to_be_bytes()[..]) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

/// One framed query on a new connection (RFC 1035 §4.2.2).
async fn tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(|_| ErrorKind::InvalidInput)?;
    let mut frame = Vec::with_capacity(query.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(query);
    stream.write_all(&frame).await?;
    let len = stream.read_u16().await?;
    let mut reply = vec![0u8; usize::from(len)];
    stream.read_exact(&mut reply).await?;
    Ok(reply)
}

/// The rcode as dig prints it (`NOERROR`, `SERVFAIL`, ...).
pub fn rcode_name(message: &Message) -> String {
    let code = u16::from(message.metadata.response_code);
    match code {
        0 => "NOERROR".to_owned(),
        1 => "FORMERR".to_owned(),
        2 => "SERVFAIL".to_owned(),
        3 => "NXDOMAIN".to_owned(),
        4 => "NOTIMP".to_owned(),
        5 => "REFUSED".to_owned(),
        other => format!("RCODE{other}"),
    }
}

/// The A and AAAA addresses in the answer section, as a set (order varies between servers).
pub fn addresses(message: &Message) -> BTreeSet<IpAddr> {
    let address = |r: &hickory_proto::rr::Record| match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
        _ => None,
    };
    message.answers.iter().filter_map(address).collect()
}

/// The text of the first TXT record in the answer section.
pub fn first_txt(message: &Message) -> Option<String> {
    message.answers.iter().find_map(|r| match &r.data {
        RData::TXT(txt) => Some(
            txt.txt_data
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<String>(),
        ),
        _ => None,
    })
}

/// Milliseconds with one decimal, for evidence text.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// A set of addresses as `a, b` (or `no addresses`).
pub fn list(addrs: &BTreeSet<IpAddr>) -> String {
    if addrs.is_empty() {
        return "no addresses".to_owned();
    }
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
