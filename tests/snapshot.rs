//! The cache snapshot as a pod sees it: a file that is not wholly sound is not served from,
//! TTLs are those of the running config, and the file is never read or written through a
//! link, a FIFO, or when another user could have written it.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
use support::client::{self, answer_a, answer_ttls};
use support::daemon::{Daemon, free_port, wait_ready, write_config};
use support::fake_upstream::FakeUpstream;
use support::nodedns::{Nodedns, config, zone};

const MAGIC: &[u8] = b"nodedns-cache\0\x01";
const PLANTED: Ipv4Addr = Ipv4Addr::new(198, 18, 66, 66);
const REAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

/// One entry as it goes into a crafted file.
struct Entry {
    ttl: u32,
    key: Vec<u8>,
    response: Vec<u8>,
}

/// The key a plain client query (RD set, no EDNS) for `name type` is cached under.
fn key(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut key = vec![1];
    for label in name.trim_end_matches('.').split('.') {
        key.push(u8::try_from(label.len()).unwrap());
        key.extend(label.to_ascii_lowercase().bytes());
    }
    key.push(0);
    key.extend(u16::from(qtype).to_be_bytes());
    key.extend(1u16.to_be_bytes());
    key
}

/// An upstream answer `name A PLANTED` with `ttl`.
fn a_answer(name: &str, ttl: u32) -> Vec<u8> {
    let qname = Name::from_ascii(name).unwrap();
    let mut m = Message::new(1, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.add_query(Query::query(qname.clone(), RecordType::A));
    m.add_answer(Record::from_rdata(qname, ttl, RData::A(A::from(PLANTED))));
    m.to_vec().unwrap()
}

fn a_entry(name: &str, ttl: u32) -> Entry {
    Entry {
        ttl,
        key: key(name, RecordType::A),
        response: a_answer(name, ttl),
    }
}

/// A snapshot of `entries`, all inserted now; `count` overrides the entry count.
fn snapshot_bytes(entries: &[Entry], count: Option<u32>) -> Vec<u8> {
    let now = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let mut body = MAGIC.to_vec();
    let n = count.unwrap_or(u32::try_from(entries.len()).unwrap());
    body.extend(n.to_be_bytes());
    for e in entries {
        body.push(0);
        body.extend(e.ttl.to_be_bytes());
        body.extend(now.to_be_bytes());
        body.extend(u64::MAX.to_be_bytes());
        body.extend(u16::try_from(e.key.len()).unwrap().to_be_bytes());
        body.extend(&e.key);
        body.extend(u16::try_from(e.response.len()).unwrap().to_be_bytes());
        body.extend(&e.response);
    }
    let crc = crc32fast::hash(&body);
    body.extend(crc.to_be_bytes());
    body
}

/// Writes a crafted snapshot, owner-only, in a directory only its owner may write.
fn write_snapshot(path: &Path, entries: &[Entry], count: Option<u32>) {
    std::fs::write(path, snapshot_bytes(entries, count)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// nodedns forwarding everything to `up`, with its snapshot at `path` and `cache` extra.
async fn start(up: &FakeUpstream, path: &Path, cache: &str) -> Nodedns {
    let extra = format!(
        "[cache]\nsnapshot = \"{}\"\n{cache}\n{}",
        path.display(),
        zone(".", &[up.addr()], "")
    );
    Nodedns::start(&config(&extra)).await
}

/// The entry count of a snapshot nodedns wrote.
fn written_count(path: &Path) -> u32 {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.starts_with(MAGIC));
    let at = MAGIC.len();
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

async fn upstream() -> FakeUpstream {
    let up = FakeUpstream::start().await;
    up.add_a("ok.example.test.", REAL, 300);
    up
}

#[tokio::test]
async fn a_truncated_file_restores_nothing_and_is_not_written_back() {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let entries = [
        a_entry("one.example.test.", 300),
        a_entry("two.example.test.", 300),
    ];
    // Says three entries, holds two, with a valid checksum.
    write_snapshot(&path, &entries, Some(3));
    let ns = start(&up, &path, "").await;
    assert_eq!(
        ns.handler.cache().len(),
        0,
        "entries of a refused file were inserted"
    );
    let r = client::query_udp(ns.addr, "one.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert!(!answer_a(&r).contains(&PLANTED));
    ns.shutdown().await;
    let written = std::fs::read(&path).unwrap();
    assert!(
        written.starts_with(MAGIC),
        "no snapshot written at shutdown"
    );
    assert!(
        !written.windows(4).any(|w| w == PLANTED.octets()),
        "the refused entries were written back"
    );
}

#[tokio::test]
async fn an_a_answer_stored_under_a_txt_key_is_never_served() {
    let up = upstream().await;
    up.add_txt("victim.example.test.", "real", 300);
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let mut wrong = a_entry("victim.example.test.", 300);
    wrong.key = key("victim.example.test.", RecordType::TXT);
    write_snapshot(&path, &[a_entry("fine.example.test.", 300), wrong], None);
    let ns = start(&up, &path, "").await;
    assert_eq!(ns.handler.cache().len(), 0);
    let r = client::query_udp(ns.addr, "victim.example.test", RecordType::TXT, None)
        .await
        .unwrap();
    assert!(answer_a(&r).is_empty(), "an A record answered a TXT query");
    assert_eq!(up.queries_for("victim.example.test."), 1);
    ns.shutdown().await;
}

#[tokio::test]
async fn twelve_zero_bytes_are_never_served_as_a_response() {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let mut zeros = a_entry("ok.example.test.", 300);
    zeros.response = vec![0; 12];
    write_snapshot(&path, &[zeros], None);
    let ns = start(&up, &path, "").await;
    let r = client::query_udp(ns.addr, "ok.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![REAL]);
    assert_eq!(up.queries_for("ok.example.test."), 1);
    ns.shutdown().await;
}

#[tokio::test]
async fn a_restored_ttl_is_clamped_to_the_configured_max_ttl() {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    write_snapshot(&path, &[a_entry("long.example.test.", 2_147_483_645)], None);
    let ns = start(&up, &path, "max_ttl = \"1h\"").await;
    let r = client::query_udp(ns.addr, "long.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![PLANTED]);
    let ttl = answer_ttls(&r)[0];
    assert!(ttl <= 3600, "served TTL {ttl} above max_ttl");
    ns.shutdown().await;
}

#[tokio::test]
async fn a_symlink_at_the_snapshot_path_is_not_read_nor_written_through() {
    let up = upstream().await;
    let dir = private_dir();
    let victim = dir.path().join("victim.snap");
    write_snapshot(&victim, &[a_entry("planted.example.test.", 300)], None);
    let before = std::fs::read(&victim).unwrap();
    let path = dir.path().join("cache.snap");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let ns = start(&up, &path, "").await;
    assert_eq!(ns.handler.cache().len(), 0, "read through a symlink");
    client::query_udp(ns.addr, "ok.example.test", RecordType::A, None)
        .await
        .unwrap();
    ns.shutdown().await;
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        before,
        "written through a symlink"
    );
    assert!(std::fs::symlink_metadata(&path).unwrap().is_symlink());
}

#[tokio::test]
async fn links_planted_at_temporary_names_are_not_followed() {
    let up = upstream().await;
    let dir = private_dir();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let path = dir.path().join("cache.snap");
    for name in ["cache.tmp", "cache.snap.tmp"] {
        std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
    }
    let ns = start(&up, &path, "").await;
    client::query_udp(ns.addr, "ok.example.test", RecordType::A, None)
        .await
        .unwrap();
    ns.shutdown().await;
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(written_count(&path), 1);
}

/// Starts on a snapshot whose file `spoil` made untrustworthy: nothing is restored, and
/// the file is left as it was at shutdown.
async fn refused_and_left_alone(spoil: impl Fn(&Path)) {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    write_snapshot(&path, &[a_entry("planted.example.test.", 300)], None);
    spoil(&path);
    let before = std::fs::read(&path).unwrap();
    let ns = start(&up, &path, "").await;
    assert_eq!(ns.handler.cache().len(), 0, "entries restored from it");
    client::query_udp(ns.addr, "ok.example.test", RecordType::A, None)
        .await
        .unwrap();
    ns.shutdown().await;
    assert_eq!(std::fs::read(&path).unwrap(), before, "it was replaced");
}

#[tokio::test]
async fn a_snapshot_others_may_write_is_refused() {
    refused_and_left_alone(|path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_snapshot_another_user_owns_is_refused() {
    let euid = std::fs::metadata("/proc/self").unwrap().uid();
    if euid != 0 {
        println!("skipped: changing a file's owner needs root");
        return;
    }
    refused_and_left_alone(|path| {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    })
    .await;
}

/// Unblocks a reader stuck opening `fifo` (so a failing test ends instead of hanging).
fn release(fifo: PathBuf) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(6));
        let _ = std::fs::OpenOptions::new().write(true).open(fifo);
    });
}

#[tokio::test]
async fn a_fifo_at_the_snapshot_path_does_not_hold_up_start() {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    support::mkfifo(&path);
    release(path.clone());
    let listen: SocketAddr = (IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()).into();
    let text = format!(
        "[listen]\naddresses = [\"{listen}\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
         [cache]\nsnapshot = \"{}\"\n{}",
        path.display(),
        zone(".", &[up.addr()], "")
    );
    let cfg = write_config(dir.path(), &text);
    let log = dir.path().join("nodedns.log");
    let mut daemon = Daemon::start_logged(&cfg, &log);
    wait_ready(listen, "ok.example.test").await;
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)).code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ignored") && text.contains("FIFO"),
        "no warning about the FIFO: {text}"
    );
}

#[tokio::test]
async fn the_cache_is_written_every_snapshot_interval_while_serving() {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let ns = start(&up, &path, "snapshot_interval = \"100ms\"").await;
    let r = client::query_udp(ns.addr, "ok.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert!(answer_a(&r).contains(&REAL));
    // Bounded in real time: 100 intervals.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !path.exists() || written_count(&path) == 0 {
        assert!(
            std::time::Instant::now() < until,
            "no snapshot with the entry written while serving"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    ns.shutdown().await;
}

/// The hand-over at the size of a full default cache: a new nodedns process started beside
/// one serving 100k entries answers from those entries (names its upstream does not know)
/// once it is up. The time from its start to its first answer from the handed-over cache is
/// printed for docs/operations.md; it is not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_takes_over_100k_entries_from_the_serving_one() {
    const N: usize = 100_000;
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    let entries: Vec<Entry> = (0..N)
        .map(|i| a_entry(&format!("n{i}.example.test."), 3600))
        .collect();
    write_snapshot(&path, &entries, None);
    drop(entries);
    let cache = "capacity = 200000\nmax_bytes = \"256MiB\"\nsnapshot_interval = \"0s\"";
    let old = start(&up, &path, cache).await;
    assert_eq!(old.handler.cache().len(), N);
    // Only the socket can give the new process the entries now.
    std::fs::remove_file(&path).unwrap();

    let listen: SocketAddr = (IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()).into();
    let text = format!(
        "[listen]\naddresses = [\"{listen}\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
         [cache]\nsnapshot = \"{}\"\n{cache}\n{}",
        path.display(),
        zone(".", &[up.addr()], "")
    );
    let cfg = write_config(dir.path(), &text);
    let log = dir.path().join("new.log");
    let started = std::time::Instant::now();
    let mut new = Daemon::start_logged(&cfg, &log);
    let last = format!("n{}.example.test", N - 1);
    let until = started + Duration::from_secs(60);
    loop {
        if let Ok(r) = client::query_udp(listen, &last, RecordType::A, None).await
            && answer_a(&r).contains(&PLANTED)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "the new process never answered from the handed-over cache:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    new.signal("TERM");
    assert!(new.wait_exit(Duration::from_secs(20)).success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("from the serving process") && logged.contains("100000"),
        "{logged}"
    );
    eprintln!(
        "snapshot hand-over: {N} entries; the new process answered from them {took:?} after it was started"
    );
    old.shutdown().await;
}

/// A serving process that does not accept the hand-over within a second (stuck, or not
/// nodedns) costs a start that second, not the warm cache: the file is loaded instead.
#[tokio::test]
async fn a_silent_hand_over_socket_falls_back_to_the_file() {
    let up = upstream().await;
    let dir = private_dir();
    let path = dir.path().join("cache.snap");
    write_snapshot(&path, &[a_entry("one.example.test.", 300)], None);
    let sock = dir.path().join("cache.snap.sock");
    // Connections queue in its backlog; nobody ever answers.
    let silent = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ns = start(&up, &path, "snapshot_interval = \"0s\"").await;
    assert_eq!(ns.handler.cache().len(), 1, "the file was not loaded");
    let r = client::query_udp(ns.addr, "one.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert!(answer_a(&r).contains(&PLANTED));
    ns.shutdown().await;
    drop(silent);
}
