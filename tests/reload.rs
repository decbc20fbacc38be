//! Operator lifecycle: reload under load, refused reloads, watched resolv.conf, and the
//! cache snapshot across a restart of the real binary.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use support::client::{self, answer_a, answer_ttls};
use support::daemon::{Daemon, free_port, wait_ready, write_config};
use support::fake_upstream::FakeUpstream;
use support::nodedns::Nodedns;

const ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);

fn config_forwarding_to(upstream: SocketAddr) -> String {
    format!(
        "[listen]\naddresses = [\"127.0.0.1:0\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
         [[zones]]\nname = \".\"\nupstreams = [\"{upstream}\"]\n"
    )
}

async fn fake_with_hot_name() -> FakeUpstream {
    let up = FakeUpstream::start().await;
    up.add_a("hot.example.test.", ADDR, 300);
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_keeps_the_cache() {
    let old = fake_with_hot_name().await;
    let new = fake_with_hot_name().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_forwarding_to(old.addr()));
    let ns = Nodedns::start_file(&path, Duration::from_secs(3600)).await;
    client::query_udp(ns.addr, "hot.example.test", RecordType::A, None)
        .await
        .unwrap();

    // A client keeps resolving, a cached name and misses, across the reload.
    let failures = Arc::new(AtomicUsize::new(0));
    let (addr, f) = (ns.addr, failures.clone());
    let load = tokio::spawn(async move {
        let mut done = 0;
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until && done < 3000 {
            for name in [
                "hot.example.test".to_string(),
                format!("miss{done}.example.test"),
            ] {
                match client::query_udp(addr, &name, RecordType::A, None).await {
                    Ok(r) if r.metadata.response_code != ResponseCode::ServFail => {}
                    _ => {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            done += 1;
        }
        done
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_config(dir.path(), &config_forwarding_to(new.addr()));
    ns.control.reload().await.unwrap();
    let hits_at_reload = ns.stats().cache_hits(nodedns::HitType::Success);
    let rounds = load.await.unwrap();

    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed lookups during reload"
    );
    assert!(rounds > 10, "the load loop hardly ran: {rounds} rounds");
    // The cache survived: the hot name never went to the new upstream.
    assert!(ns.stats().cache_hits(nodedns::HitType::Success) > hits_at_reload);
    assert_eq!(new.queries_for("hot.example.test."), 0);
    assert_eq!(old.queries_for("hot.example.test."), 1);
    // Misses after the reload went to the new upstream only.
    old.reset_counts();
    client::query_udp(ns.addr, "after.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(new.queries_for("after.example.test."), 1);
    assert_eq!(old.udp_queries(), 0);
    assert_eq!(ns.stats().reloads_ok.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn refused_reload_keeps_the_old_config_and_names_the_line() {
    let up = fake_with_hot_name().await;
    let dir = tempfile::tempdir().unwrap();
    let good = config_forwarding_to(up.addr());
    let path = write_config(dir.path(), &good);
    let ns = Nodedns::start_file(&path, Duration::from_secs(3600)).await;
    let port = ns.addr.port();
    let bad_files = [
        (
            good.replace("workers = 1", "workers = 1\nworkers = 2"),
            ":4:",
            "duplicate",
        ),
        (
            good.replace("[admin]", "[admin]\ncolour = \"red\""),
            ":5:",
            "colour",
        ),
        (
            good.replace("127.0.0.1:0\"]", &format!("127.0.0.1:{port}\"]"))
                .replace(&up.addr().to_string(), &format!("127.0.0.1:{port}")),
            ":8:",
            "loop",
        ),
    ];
    for (i, (text, line, what)) in bad_files.iter().enumerate() {
        write_config(dir.path(), text);
        let err = ns.control.reload().await.unwrap_err().to_string();
        assert!(err.contains(&format!("nodedns.toml{line}")), "{err}");
        assert!(err.to_lowercase().contains(what), "{err}");
        assert_eq!(
            ns.stats().reloads_failed.load(Ordering::Relaxed),
            i as u64 + 1
        );
        let r = client::query_udp(ns.addr, "hot.example.test", RecordType::A, None)
            .await
            .unwrap();
        assert_eq!(answer_a(&r), vec![ADDR], "still serving after: {err}");
    }
    assert_eq!(ns.stats().reloads_ok.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn reload_binds_new_listen_addresses_and_closes_removed_ones() {
    let up = fake_with_hot_name().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_forwarding_to(up.addr()));
    let ns = Nodedns::start_file(&path, Duration::from_secs(3600)).await;
    let second = free_port();
    let moved = config_forwarding_to(up.addr())
        .replace("\"127.0.0.1:0\"", &format!("\"127.0.0.2:{second}\""));
    write_config(dir.path(), &moved);
    ns.control.reload().await.unwrap();
    let now: SocketAddr = (Ipv4Addr::new(127, 0, 0, 2), second).into();
    assert_eq!(ns.control.local_addrs(), vec![now]);
    let r = client::query_udp(now, "hot.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![ADDR]);
    let old = client::exchange_udp_raw_timeout(
        ns.addr,
        &client::QueryBuilder::new("hot.example.test", RecordType::A).build(),
        Duration::from_millis(300),
    )
    .await;
    assert!(old.is_none(), "the removed address still answers");
}

/// resolv.conf has no ports: its upstreams are on port 53, which needs root to bind.
fn can_bind_port_53() -> bool {
    std::net::UdpSocket::bind("127.0.1.53:53").is_ok()
}

#[tokio::test]
async fn rewritten_resolv_conf_switches_upstreams_within_the_watch_interval() {
    if !can_bind_port_53() {
        eprintln!("SKIP rewritten_resolv_conf_switches_upstreams: needs root for port 53");
        return;
    }
    let a = FakeUpstream::start_at("127.0.1.1:53".parse().unwrap()).await;
    let b = FakeUpstream::start_at("127.0.1.2:53".parse().unwrap()).await;
    for up in [&a, &b] {
        for i in 0..10 {
            up.add_a(&format!("n{i}.example.test."), ADDR, 300);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("resolv.conf"), "nameserver 127.0.1.1\n").unwrap();
    let path = write_config(
        dir.path(),
        "[listen]\naddresses = [\"127.0.0.1:0\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
         [[zones]]\nname = \".\"\nresolv_conf = \"resolv.conf\"\n",
    );
    let watch = Duration::from_millis(200);
    let ns = Nodedns::start_file(&path, watch).await;
    client::query_udp(ns.addr, "n0.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(a.queries_for("n0.example.test."), 1);

    // Replaced the way editors and ConfigMaps do it: a new file renamed over the old one.
    let tmp = dir.path().join("resolv.conf.new");
    std::fs::write(&tmp, "# moved\nnameserver 127.0.1.2\noptions ndots:5\n").unwrap();
    std::fs::rename(&tmp, dir.path().join("resolv.conf")).unwrap();
    let deadline = Instant::now() + watch * 10;
    let mut i = 1;
    while b.udp_queries() == 0 {
        assert!(Instant::now() < deadline, "new resolv.conf not picked up");
        tokio::time::sleep(watch / 2).await;
        client::query_udp(ns.addr, &format!("n{i}.example.test"), RecordType::A, None)
            .await
            .unwrap();
        i += 1;
    }
    let a_before = a.udp_queries();
    client::query_udp(ns.addr, "n9.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(
        a.udp_queries(),
        a_before,
        "the old upstream is no longer used"
    );
}

/// A systemd-resolved node: `etc/resolv.conf` names only the stub, and the resolvers behind
/// it are in `run/systemd/resolve/resolv.conf`, which resolved replaces when the network
/// changes. nodedns forwards to those, and follows the replacement.
#[tokio::test]
async fn systemd_resolved_upstream_file_is_used_and_followed() {
    if !can_bind_port_53() {
        eprintln!(
            "SKIP systemd_resolved_upstream_file_is_used_and_followed: needs root for port 53"
        );
        return;
    }
    let a = FakeUpstream::start_at("127.0.1.3:53".parse().unwrap()).await;
    let b = FakeUpstream::start_at("127.0.1.4:53".parse().unwrap()).await;
    for up in [&a, &b] {
        for i in 0..10 {
            up.add_a(&format!("r{i}.example.test."), ADDR, 300);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run/systemd/resolve");
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(
        dir.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
    )
    .unwrap();
    std::fs::write(run.join("resolv.conf"), "nameserver 127.0.1.3\n").unwrap();
    let path = write_config(
        dir.path(),
        "[listen]\naddresses = [\"127.0.0.1:0\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
         [[zones]]\nname = \".\"\nresolv_conf = \"etc/resolv.conf\"\n",
    );
    let watch = Duration::from_millis(200);
    let ns = Nodedns::start_file(&path, watch).await;
    client::query_udp(ns.addr, "r0.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(
        a.queries_for("r0.example.test."),
        1,
        "not forwarded to the resolver behind the stub"
    );

    let tmp = run.join(".resolv.conf.new");
    std::fs::write(&tmp, "nameserver 127.0.1.4\n").unwrap();
    std::fs::rename(&tmp, run.join("resolv.conf")).unwrap();
    let deadline = Instant::now() + watch * 10;
    let mut i = 1;
    while b.udp_queries() == 0 {
        assert!(
            Instant::now() < deadline,
            "resolved's new file not picked up"
        );
        tokio::time::sleep(watch / 2).await;
        client::query_udp(ns.addr, &format!("r{i}.example.test"), RecordType::A, None)
            .await
            .unwrap();
        i += 1;
    }
}

fn snapshot_config(listen: SocketAddr, upstream: SocketAddr, snapshot: &Path) -> String {
    format!(
        "[listen]\naddresses = [\"{listen}\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
         [cache]\nsnapshot = \"{}\"\n[[zones]]\nname = \".\"\nupstreams = [\"{upstream}\"]\n",
        snapshot.display()
    )
}

#[tokio::test]
async fn cache_snapshot_survives_a_restart_and_a_corrupt_one_is_ignored() {
    let up = fake_with_hot_name().await;
    up.add_a("ready.example.test.", ADDR, 300);
    let dir = tempfile::tempdir().unwrap();
    let snap = dir.path().join("cache.snap");
    let listen: SocketAddr = (IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()).into();
    let cfg = write_config(dir.path(), &snapshot_config(listen, up.addr(), &snap));

    let mut first = Daemon::start(&cfg);
    wait_ready(listen, "ready.example.test").await;
    client::query_udp(listen, "hot.example.test", RecordType::A, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(snap.exists(), "no snapshot written on SIGTERM");

    let log = dir.path().join("second.log");
    let _second = Daemon::start_logged(&cfg, &log);
    let asked = up.udp_queries();
    let r = loop_until_answer(listen, "hot.example.test").await;
    assert_eq!(answer_a(&r), vec![ADDR]);
    let ttl = answer_ttls(&r)[0];
    assert!(
        (290..300).contains(&ttl),
        "restored entry must be aged, TTL {ttl}"
    );
    assert_eq!(
        up.udp_queries(),
        asked,
        "the first query after restart reached upstream"
    );
    drop(_second);

    std::fs::write(&snap, b"\x00garbage, not a snapshot").unwrap();
    let log = dir.path().join("third.log");
    let _third = Daemon::start_logged(&cfg, &log);
    let r = loop_until_answer(listen, "hot.example.test").await;
    assert_eq!(answer_a(&r), vec![ADDR]);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cache snapshot") && text.contains("ignored"),
        "{text}"
    );
}

/// The daemon is starting: retry until it answers (at most 5 s).
async fn loop_until_answer(addr: SocketAddr, name: &str) -> hickory_proto::op::Message {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let q = client::QueryBuilder::new(name, RecordType::A).build();
        if let Some(raw) =
            client::exchange_udp_raw_timeout(addr, &q, Duration::from_millis(200)).await
        {
            return hickory_proto::op::Message::from_vec(&raw).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nodedns never answered on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Opens `fifo` for writing after a while, which releases a reader stuck opening it: a
/// failing test then ends instead of hanging.
fn release_later(fifo: &Path) {
    let fifo = fifo.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(8));
        let _ = std::fs::OpenOptions::new().write(true).open(fifo);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_pointed_at_a_fifo_is_refused_at_once() {
    let up = fake_with_hot_name().await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &config_forwarding_to(up.addr()));
    let ns = Nodedns::start_file(&path, Duration::from_secs(3600)).await;
    std::fs::remove_file(&path).unwrap();
    support::mkfifo(&path);
    release_later(&path);
    let reload = tokio::time::timeout(Duration::from_secs(5), ns.control.reload()).await;
    let err = reload
        .expect("a reload reading a FIFO hung")
        .unwrap_err()
        .to_string();
    assert!(err.contains("FIFO"), "{err}");
    let r = client::query_udp(ns.addr, "hot.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&r), vec![ADDR], "the old config stopped serving");
}

#[tokio::test]
async fn sigterm_ends_the_process_while_a_watched_file_is_a_fifo() {
    let up = fake_with_hot_name().await;
    for fifo_is in ["config", "resolv_conf"] {
        let dir = tempfile::tempdir().unwrap();
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(&resolv, "nameserver 198.18.0.53\n").unwrap();
        let listen: SocketAddr = (IpAddr::V4(Ipv4Addr::LOCALHOST), free_port()).into();
        let text = format!(
            "[listen]\naddresses = [\"{listen}\"]\nworkers = 1\n[admin]\naddress = \"\"\n\
             [[zones]]\nname = \".\"\nupstreams = [\"{}\"]\n\
             [[zones]]\nname = \"corp.test\"\nresolv_conf = \"resolv.conf\"\n",
            up.addr()
        );
        let cfg = write_config(dir.path(), &text);
        let log = dir.path().join("nodedns.log");
        let mut daemon = Daemon::start_logged(&cfg, &log);
        wait_ready(listen, "hot.example.test").await;
        let fifo = if fifo_is == "config" { &cfg } else { &resolv };
        std::fs::remove_file(fifo).unwrap();
        support::mkfifo(fifo);
        release_later(fifo);
        daemon.signal("HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
        daemon.signal("TERM");
        assert_eq!(
            daemon.wait_exit(Duration::from_secs(5)).code(),
            Some(0),
            "{fifo_is} as a FIFO"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("config reload refused") && text.contains("FIFO"),
            "{fifo_is}: {text}"
        );
    }
}
