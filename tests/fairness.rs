//! One client cannot hurt the others. On loopback 127.0.0.2 (client A) and 127.0.0.3
//! (client B) are two clients. A floods misses nodedns cannot finish (names under a zone
//! whose upstream never answers) while B asks fresh names of a zone that answers after a
//! fixed delay; and A holds more TCP connections than its share while B asks over TCP.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use nodedns::{LimitedAnswer, LimitedReason};
use support::client::{self, QueryBuilder};
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, config, zone};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

/// What the answering upstream takes for every query: B's latency is this, not CPU.
const UPSTREAM_DELAY: Duration = Duration::from_millis(20);
/// Distinct misses in flight for every client together: small, so A alone could fill it.
const MAX_INFLIGHT: usize = 100;
/// How long A floods, and how many names it sends at most.
const FLOOD_FOR: Duration = Duration::from_secs(20);
const FLOOD_MAX: usize = 5_000;
/// A's pace: 250 a second, five times what the node can start for it: a black-holed miss
/// holds one of [`MAX_INFLIGHT`] slots for the 2 s forwarding deadline, 50 a second. Without
/// per-client limits A alone holds every slot.
const FLOOD_EVERY: Duration = Duration::from_millis(4);
/// B's names, each asked once.
const B_NAMES: usize = 200;
/// How long B waits for one answer before counting it unanswered.
const B_WAIT: Duration = Duration::from_secs(2);

struct Upstreams {
    answering: FakeUpstream,
    _hole: FakeUpstream,
    toml: String,
}

/// An upstream that answers `fair.test` names after [`UPSTREAM_DELAY`] and one that
/// black-holes `hole.test`; nodedns config with `listen` keys added.
async fn upstreams(listen: &str) -> Upstreams {
    let answering = FakeUpstream::start().await;
    answering.set_behavior(Behavior::Delay(UPSTREAM_DELAY));
    for phase in ["base", "flood"] {
        for i in 0..B_NAMES {
            let name = format!("{phase}-{i}.fair.test.");
            answering.add_a(&name, Ipv4Addr::new(198, 18, 1, 1), 300);
        }
    }
    let hole = FakeUpstream::start().await;
    hole.set_behavior(Behavior::Drop);
    let zones = zone(".", &[answering.addr()], "") + &zone("hole.test", &[hole.addr()], "");
    let toml = config(&zones).replace(
        "workers = 1\n",
        &format!("workers = 1\nmax_inflight = {MAX_INFLIGHT}\n{listen}"),
    );
    Upstreams {
        answering,
        _hole: hole,
        toml,
    }
}

/// B asks `{phase}-N.fair.test` for every N, one at a time; returns how many got NOERROR with
/// an answer, and each one's latency.
async fn client_b(server: SocketAddr, phase: &str) -> (usize, Vec<Duration>) {
    let sock = UdpSocket::bind("127.0.0.3:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let (mut answered, mut latencies) = (0, Vec::new());
    let mut buf = vec![0u8; 4096];
    for i in 0..B_NAMES {
        let id = u16::try_from(i).unwrap();
        let query = QueryBuilder::new(&format!("{phase}-{i}.fair.test"), RecordType::A)
            .id(id)
            .edns(1232)
            .build();
        let sent = Instant::now();
        sock.send(&query).await.unwrap();
        let until = sent + B_WAIT;
        // Replies to earlier, timed-out queries are skipped by their ID.
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, sock.recv(&mut buf)).await {
            let Ok(reply) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if reply.metadata.id != id {
                continue;
            }
            latencies.push(sent.elapsed());
            if reply.metadata.response_code == ResponseCode::NoError
                && !client::answer_a(&reply).is_empty()
            {
                answered += 1;
            }
            break;
        }
    }
    (answered, latencies)
}

fn p99(mut latencies: Vec<Duration>) -> Duration {
    latencies.sort();
    let at = (latencies.len() * 99).div_ceil(100).saturating_sub(1);
    latencies.get(at).copied().unwrap_or(Duration::MAX)
}

/// What A's flood got back.
#[derive(Debug, Default)]
struct FloodReplies {
    sent: usize,
    /// REFUSED carrying Extended DNS Error 18 (Prohibited) with nodedns's text.
    refused_prohibited: usize,
    other: usize,
}

/// A sends unique names under `hole.test` at [`FLOOD_EVERY`] for [`FLOOD_FOR`] (at most
/// [`FLOOD_MAX`]), and counts the replies until a second after the last.
async fn client_a(server: SocketAddr) -> FloodReplies {
    let sock = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    sock.connect(server).await.unwrap();
    let mut got = FloodReplies::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(FLOOD_EVERY);
    let mut buf = vec![0u8; 4096];
    let mut last_sent = started;
    loop {
        tokio::select! {
            _ = tick.tick(), if got.sent < FLOOD_MAX && started.elapsed() < FLOOD_FOR => {
                let query = QueryBuilder::new(&format!("a{}.hole.test", got.sent), RecordType::A)
                    .id(u16::try_from(got.sent % 65_536).unwrap())
                    .edns(1232)
                    .build();
                sock.send(&query).await.unwrap();
                got.sent += 1;
                last_sent = Instant::now();
            }
            r = sock.recv(&mut buf) => {
                let reply = &buf[..r.unwrap()];
                if is_refused_prohibited(reply) {
                    got.refused_prohibited += 1;
                } else {
                    got.other += 1;
                }
            }
            _ = tokio::time::sleep_until(last_sent + Duration::from_secs(1)),
                if got.sent >= FLOOD_MAX || started.elapsed() >= FLOOD_FOR => break,
        }
    }
    got
}

/// REFUSED with an EDE option (code 15) of info code 18 and nodedns's text.
fn is_refused_prohibited(reply: &[u8]) -> bool {
    let refused = reply.len() > 3 && reply[3] & 0x0f == 5;
    let ede = reply
        .windows(6)
        .any(|w| w[0..2] == [0, 15] && w[4..6] == [0, 18]);
    let text = reply
        .windows(b"per-client limit".len())
        .any(|w| w == b"per-client limit");
    refused && ede && text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_misses_leaves_other_clients_answered_in_time() {
    let up = upstreams("").await;
    let ns = Nodedns::start(&up.toml).await;

    // B alone: the baseline.
    let (answered, latencies) = client_b(ns.addr, "base").await;
    assert_eq!(answered, B_NAMES, "without a flood every name is answered");
    let baseline = p99(latencies);

    // B again while A floods.
    let flood = tokio::spawn(client_a(ns.addr));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (answered, latencies) = client_b(ns.addr, "flood").await;
    let flooded = p99(latencies);
    let a = flood.await.unwrap();
    eprintln!("baseline p99 {baseline:?}, under flood {flooded:?}, B answered {answered}");
    eprintln!("A: {a:?}");

    assert!(
        answered * 100 >= B_NAMES * 99,
        "B answered {answered} of {B_NAMES} while A flooded"
    );
    assert!(
        flooded <= baseline * 2,
        "B's p99 went from {baseline:?} to {flooded:?} while A flooded"
    );
    // A was limited, and told so at once rather than left to time out.
    let limited = &ns.stats().client_limited;
    let refused = limited.get(LimitedReason::Inflight, LimitedAnswer::Refused)
        + limited.get(LimitedReason::Rate, LimitedAnswer::Refused);
    assert!(refused > 0, "A was never limited: {a:?}");
    assert!(
        a.refused_prohibited * 2 > a.sent,
        "most of A's flood should be refused at once with EDE 18: {a:?}"
    );
    assert!(up.answering.udp_queries() >= 2 * B_NAMES);
}

/// Opens a TCP connection from `source` and has one query answered on it, so nodedns has
/// accepted it and seated it before the next one opens.
async fn open_answered(source: &str, server: SocketAddr, name: &str) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut stream = sock.connect(server).await.unwrap();
    let query = QueryBuilder::new(name, RecordType::A).build();
    stream.write_all(&client::frame(&query)).await.unwrap();
    let reply = tokio::time::timeout(B_WAIT, client::read_frame(&mut stream))
        .await
        .expect("an answer over TCP")
        .unwrap();
    assert_eq!(
        Message::from_vec(&reply).unwrap().metadata.response_code,
        ResponseCode::NoError
    );
    stream
}

/// Whether nodedns closed `stream`: EOF (or a reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_client_at_its_tcp_limit_loses_its_oldest_idle_connection() {
    let up = FakeUpstream::start().await;
    up.add_a("tcp.fair.test.", Ipv4Addr::new(198, 18, 1, 2), 300);
    let toml = config(&zone(".", &[up.addr()], "")).replace(
        "workers = 1\n",
        "workers = 1\ntcp_max_connections_per_client = 3\n",
    );
    let ns = Nodedns::start(&toml).await;
    let mut a = Vec::new();
    for _ in 0..3 {
        a.push(open_answered("127.0.0.2", ns.addr, "tcp.fair.test").await);
    }
    // A fourth: the first, idle and oldest, is closed; the others and the new one serve.
    let fourth = open_answered("127.0.0.2", ns.addr, "tcp.fair.test").await;
    assert!(closed_within(&mut a[0], Duration::from_secs(5)).await);
    for stream in &mut a[1..] {
        assert!(!closed_within(stream, Duration::from_millis(200)).await);
    }
    assert_eq!(ns.stats().client_limited.tcp_idle_closed_total(), 1);
    drop(fourth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_holding_tcp_connections_leaves_other_clients_room() {
    const GLOBAL: usize = 64;
    const PER_CLIENT: usize = 32;
    let up = FakeUpstream::start().await;
    for i in 0..32 {
        up.add_a(
            &format!("t{i}.fair.test."),
            Ipv4Addr::new(198, 18, 1, 3),
            300,
        );
    }
    up.add_a("a.fair.test.", Ipv4Addr::new(198, 18, 1, 4), 300);
    let toml = config(&zone(".", &[up.addr()], "")).replace(
        "workers = 1\n",
        &format!(
            "workers = 1\ntcp_max_connections = {GLOBAL}\n\
             tcp_max_connections_per_client = {PER_CLIENT}\n"
        ),
    );
    let ns = Nodedns::start(&toml).await;
    // A takes its share, then tries for every slot there is and keeps re-opening as nodedns
    // closes its connections.
    let server = ns.addr;
    let hog = tokio::spawn(async move {
        let mut held = Vec::new();
        let until = Instant::now() + Duration::from_secs(20);
        let mut opened = 0;
        while Instant::now() < until && opened < 400 {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            if let Ok(stream) = sock.connect(server).await {
                held.push(stream);
                opened += 1;
            }
            if held.len() >= GLOBAL {
                // Drop the ones nodedns closed; the rest stay open and idle.
                let mut open = Vec::new();
                for mut s in held.drain(..) {
                    if !closed_within(&mut s, Duration::from_millis(1)).await {
                        open.push(s);
                    }
                }
                held = open;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        held.len()
    });
    // Let A fill what it can.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut answered = 0;
    for i in 0..32 {
        let query = QueryBuilder::new(&format!("t{i}.fair.test"), RecordType::A)
            .id(i)
            .build();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        let Ok(mut stream) = sock.connect(server).await else {
            continue;
        };
        if stream.write_all(&client::frame(&query)).await.is_err() {
            continue;
        }
        if let Ok(Ok(reply)) = tokio::time::timeout(B_WAIT, client::read_frame(&mut stream)).await
            && Message::from_vec(&reply).is_ok_and(|m| !client::answer_a(&m).is_empty())
        {
            answered += 1;
        }
    }
    hog.abort();
    assert_eq!(
        answered, 32,
        "B's TCP queries answered while A held connections"
    );
    assert!(ns.stats().client_limited.tcp_idle_closed_total() > 0);
}

/// Asks `name` for A from `source` with an OPT record; the reply's bytes.
async fn ask_from(source: &str, server: SocketAddr, name: &str) -> Vec<u8> {
    let sock = UdpSocket::bind(format!("{source}:0")).await.unwrap();
    sock.connect(server).await.unwrap();
    let query = QueryBuilder::new(name, RecordType::A).edns(1232).build();
    sock.send(&query).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(B_WAIT, sock.recv(&mut buf))
        .await
        .expect("an answer, never silence")
        .unwrap();
    buf.truncate(n);
    buf
}

fn answered(reply: &[u8]) -> bool {
    Message::from_vec(reply).is_ok_and(|m| {
        m.metadata.response_code == ResponseCode::NoError && !client::answer_a(&m).is_empty()
    })
}

#[tokio::test(start_paused = true)]
async fn a_client_past_its_miss_rate_is_refused_but_its_hits_are_not() {
    let up = FakeUpstream::start().await;
    for i in 0..10 {
        up.add_a(
            &format!("r{i}.fair.test."),
            Ipv4Addr::new(198, 18, 1, 5),
            300,
        );
    }
    let toml = config(&zone(".", &[up.addr()], "")).replace(
        "workers = 1\n",
        "workers = 1\nclient_miss_rate = 2\nclient_miss_burst = 3\n",
    );
    let ns = Nodedns::start(&toml).await;
    // The burst: three misses start, the next two are refused at once, naming the limit.
    for i in 0..3 {
        assert!(answered(
            &ask_from("127.0.0.2", ns.addr, &format!("r{i}.fair.test")).await
        ));
    }
    for i in 3..5 {
        let reply = ask_from("127.0.0.2", ns.addr, &format!("r{i}.fair.test")).await;
        assert!(is_refused_prohibited(&reply), "{reply:?}");
        let text = b"nodedns: per-client limit on miss rate";
        assert!(reply.windows(text.len()).any(|w| w == text));
    }
    let limited = &ns.stats().client_limited;
    assert_eq!(limited.get(LimitedReason::Rate, LimitedAnswer::Refused), 2);
    // Hits cost nothing upstream and are never limited.
    for _ in 0..20 {
        assert!(answered(
            &ask_from("127.0.0.2", ns.addr, "r0.fair.test").await
        ));
    }
    // Another client has its own bucket.
    assert!(answered(
        &ask_from("127.0.0.3", ns.addr, "r5.fair.test").await
    ));
    // A second refills two.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(answered(
        &ask_from("127.0.0.2", ns.addr, "r6.fair.test").await
    ));
    assert!(answered(
        &ask_from("127.0.0.2", ns.addr, "r7.fair.test").await
    ));
    let reply = ask_from("127.0.0.2", ns.addr, "r8.fair.test").await;
    assert!(is_refused_prohibited(&reply));
    assert_eq!(limited.get(LimitedReason::Rate, LimitedAnswer::Refused), 3);
    assert_eq!(limited.total(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_client_at_its_in_flight_limit_gets_the_stale_answer_when_there_is_one() {
    let up = FakeUpstream::start().await;
    up.add_a("stale.fair.test.", Ipv4Addr::new(198, 18, 1, 6), 60);
    up.add_a("slow.fair.test.", Ipv4Addr::new(198, 18, 1, 7), 60);
    let toml = config(&format!(
        "[cache]\nstale_max = \"1h\"\n{}",
        zone(".", &[up.addr()], "")
    ))
    .replace(
        "workers = 1\n",
        "workers = 1\nmax_inflight_per_client = 1\n",
    );
    let ns = Nodedns::start(&toml).await;
    assert!(answered(
        &ask_from("127.0.0.2", ns.addr, "stale.fair.test").await
    ));
    tokio::time::advance(Duration::from_secs(61)).await;
    // One miss in flight (the upstream has gone quiet), then the expired name: the client
    // is at its limit, and the stale answer is what it gets, at once.
    up.set_behavior(Behavior::Drop);
    let sock = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    sock.connect(ns.addr).await.unwrap();
    let slow = QueryBuilder::new("slow.fair.test", RecordType::A).build();
    sock.send(&slow).await.unwrap();
    let reply = ask_from("127.0.0.2", ns.addr, "stale.fair.test").await;
    assert!(answered(&reply), "{reply:?}");
    let limited = &ns.stats().client_limited;
    assert_eq!(
        limited.get(LimitedReason::Inflight, LimitedAnswer::Stale),
        1
    );
    assert_eq!(limited.total(), 1);
}
