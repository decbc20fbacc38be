//! The admin endpoint's listeners on loopback: the unix socket that `nodedns probe` reads,
//! an admin port taken over from a process that still holds it, and the bounds that keep
//! idle admin connections from costing memory or starving DNS.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use nodedns::admin_client;
use support::client::{self, answer_a};
use support::daemon::{Daemon, free_port, wait_ready, write_config};
use support::fake_upstream::FakeUpstream;
use support::nodedns::{Nodedns, config_with_admin, zone};
use support::scrape::get;

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const WAIT: Duration = Duration::from_secs(5);

/// A config with the admin endpoint on `admin` and on the unix socket `socket`.
fn config(upstream: SocketAddr, admin: &str, socket: &Path) -> String {
    config_with_admin(&zone(".", &[upstream], "")).replace(
        "[admin]\naddress = \"127.0.0.1:0\"",
        &format!(
            "[admin]\naddress = \"{admin}\"\nsocket = \"{}\"",
            socket.display()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_serves_the_admin_routes_and_goes_away_at_exit() {
    let up = FakeUpstream::start().await;
    up.add_a("ok.example.test.", ADDR, 300);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let ns = Nodedns::start(&config(up.addr(), "127.0.0.1:0", &socket)).await;
    let health = admin_client::get(&socket, "/health", WAIT).await.unwrap();
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let q = client::query_udp(ns.addr, "ok.example.test", RecordType::A, None).await;
    assert_eq!(answer_a(&q.unwrap()), vec![ADDR]);
    let ready = admin_client::get(&socket, "/ready", WAIT).await.unwrap();
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    let metrics = admin_client::get(&socket, "/metrics", WAIT).await.unwrap();
    assert!(
        metrics.body.contains("nodedns_requests_total"),
        "{metrics:?}"
    );
    // The same exposition over TCP: one process, two doors.
    let (status, body) = get(ns.admin.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("nodedns_requests_total"));
    ns.shutdown().await;
    assert!(!socket.exists(), "socket file left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_file_is_replaced_but_a_live_one_is_not_taken() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    // A previous process of the pod died without removing its socket.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let ns = Nodedns::start(&config(up.addr(), "", &socket)).await;
    assert_eq!(ns.admin, None, "no TCP admin address configured");
    assert_eq!(
        admin_client::get(&socket, "/health", WAIT)
            .await
            .unwrap()
            .status,
        200
    );
    // A second process with the same socket: refused at start-up, the first keeps it.
    let toml = config(up.addr(), "", &socket);
    let cfg = nodedns::config::parse_str(&toml, "test.toml").unwrap();
    let err = nodedns::Server::bind(&cfg).err().unwrap();
    let err = format!("{err:#}");
    assert!(
        err.contains("admin socket") && err.contains("another process"),
        "{err}"
    );
    assert_eq!(
        admin_client::get(&socket, "/health", WAIT)
            .await
            .unwrap()
            .status,
        200
    );
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_in_use_is_taken_over_once_free_while_dns_is_served() {
    let up = FakeUpstream::start().await;
    up.add_a("ok.example.test.", ADDR, 300);
    // Another process holds the port, without SO_REUSEPORT.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let toml = config_with_admin(&zone(".", &[up.addr()], ""))
        .replace("127.0.0.1:0\"\n", &format!("127.0.0.1:{port}\"\n"));
    let ns = Nodedns::start(&toml).await;
    let admin = ns.admin.unwrap();
    assert_eq!(admin.port(), port);
    let q = client::query_udp(ns.addr, "ok.example.test", RecordType::A, None).await;
    assert_eq!(answer_a(&q.unwrap()), vec![ADDR]);
    drop(taken);
    // Retries back off from 1 s to at most 5 s: allow five times the longest.
    let deadline = Instant::now() + Duration::from_secs(25);
    while try_get(admin, "/health", Duration::from_secs(1)).await != Some(200) {
        assert!(Instant::now() < deadline, "admin port not taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ns.shutdown().await;
}

/// `GET path` with a time bound; `None` when nothing answers.
async fn try_get(addr: SocketAddr, path: &str, limit: Duration) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: nodedns\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw);
        text.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}

/// A loopback TCP port that was free a moment ago.
fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The resident set of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    kib * 1024
}

/// Raises this process's open-file limit to at least `want` (children inherit it), the hard
/// limit too where it is lower (root may); false when that is refused.
#[allow(unsafe_code)]
fn raise_nofile(want: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given, which lives here.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return false;
    }
    if lim.rlim_cur >= want {
        return true;
    }
    lim.rlim_cur = want;
    lim.rlim_max = lim.rlim_max.max(want);
    // SAFETY: setrlimit reads one initialised rlimit from the struct it is given.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// Opens `n` TCP connections to `addr` that never send a byte. Non-blocking: a connection
/// the server leaves in (or drops from) its backlog stays pending without blocking the test.
/// Closing one resets it, so no TIME_WAIT keeps its port from tests that run next.
fn open_idle(addr: SocketAddr, n: usize) -> Vec<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    (0..n)
        .map(|_| {
            let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            s.set_linger(Some(Duration::ZERO)).unwrap();
            s.set_nonblocking(true).unwrap();
            match s.connect(&addr.into()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                Err(e) => panic!("connect {addr}: {e}"),
            }
            s
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_admin_connections_cost_little_and_dns_keeps_answering() {
    const IDLE: usize = 10_000;
    if !raise_nofile(IDLE as u64 + 2048) {
        // Only root may raise a hard limit; CI runs as root, where this must not skip.
        let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        });
        assert!(
            !root,
            "the open-file limit could not be raised to {}",
            IDLE + 2048
        );
        eprintln!(
            "skipped: the open-file hard limit is below {} (run as root)",
            IDLE + 2048
        );
        return;
    }
    let up = FakeUpstream::start().await;
    up.add_a("ok.example.test.", ADDR, 300);
    up.add_a("during.example.test.", ADDR, 300);
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let admin: SocketAddr = (Ipv4Addr::LOCALHOST, free_tcp_port()).into();
    let toml = format!(
        "[listen]\naddresses = [\"{listen}\"]\nworkers = 1\n[admin]\naddress = \"{admin}\"\n\
         [[zones]]\nname = \".\"\nupstreams = [\"{}\"]\n",
        up.addr()
    );
    let log = dir.path().join("nodedns.log");
    let daemon = Daemon::start_logged(&write_config(dir.path(), &toml), &log);
    let pid = daemon.0.id();
    wait_ready(listen, "ok.example.test").await;
    // Warm: the first scrape and query allocate what every later one reuses.
    assert_eq!(try_get(admin, "/metrics", WAIT).await, Some(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss(pid);

    let idle = open_idle(admin, IDLE);
    // Hold them past the header timeout, sampling RSS and asking DNS meanwhile.
    let mut peak = before;
    let mut answered = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss(pid));
        let q = client::query_udp(listen, "during.example.test", RecordType::A, None).await;
        if q.is_ok_and(|m| answer_a(&m) == [ADDR]) {
            answered += 1;
        }
    }
    let growth = peak.saturating_sub(before);
    drop(idle);
    let closed = Instant::now();
    let mut tries = 0;
    while try_get(admin, "/metrics", Duration::from_secs(5)).await != Some(200) {
        tries += 1;
        assert!(
            tries < 25,
            "/metrics did not answer after the connections closed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recovered = closed.elapsed();
    eprintln!(
        "admin: {IDLE} idle connections: RSS {} KiB -> peak {} KiB (+{} KiB); DNS answered {answered}/20; /metrics again after {recovered:?}",
        before / 1024,
        peak / 1024,
        growth / 1024
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(growth < 10 << 20, "RSS grew by {growth} bytes\n{log_text}");
    assert_eq!(answered, 20, "DNS queries went unanswered\n{log_text}");
    // Generous for a loaded machine; the point is seconds, not a header timeout per client.
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");
    drop(daemon);
}
