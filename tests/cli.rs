//! The built binary, black-box: `check-config`, `print-default-config`, and a real daemon
//! resolving through a fake upstream, reloading on SIGHUP and draining on SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Output};
use std::time::Duration;

use hickory_proto::rr::RecordType;
use support::client::{self, answer_a};
use support::daemon::{BIN, Daemon, free_port, wait_ready, write_config};
use support::fake_upstream::{Behavior, FakeUpstream};

fn nodedns(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn daemon_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    // The slow query below must not be given up by the adaptive attempt timeout.
    format!(
        "[forward]\nmin_attempt_timeout = \"1s\"\ninitial_attempt_timeout = \"1s\"\n[listen]\naddresses = [\"{listen}\"]\nworkers = 1\ndrain_timeout = \"3s\"\n\
         [admin]\naddress = \"\"\n[[zones]]\nname = \".\"\nupstreams = [\"{upstream}\"]\n"
    )
}

#[test]
fn print_default_config_is_accepted_by_check_config() {
    let out = nodedns(&["print-default-config"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("127.0.0.1:5353"));
    assert!(text.contains("/etc/resolv.conf"));
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), &text);
    let check = nodedns(&["check-config", path.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn check_config_reports_file_line_and_key_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[listen]\naddresses = [\"127.0.0.1:5353\"]\n\n[cache]\nmax_ttl = \"forever\"\n\n\
         [[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:53\"]\n",
    );
    let out = nodedns(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:5:", path.display())), "{err}");
    assert!(err.contains("max_ttl"), "{err}");
}

#[test]
fn check_config_reports_unknown_keys_wrong_types_and_bad_values_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[listen]\nworkers = \"two\"\nbogus = 1\n\n[cache]\nmax_ttl = \"forever\"\n\n\
         [[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:53\"]\npolicy = \"best\"\n",
    );
    let out = nodedns(&["check-config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display();
    for (at, what) in [
        ("2:11: listen.workers:", "invalid type"),
        ("3:1: listen:", "unknown field `bogus`"),
        ("6:11: cache.max_ttl:", "forever"),
        ("11:10: zones[0].policy:", "best"),
    ] {
        let line = format!("{file}:{at}");
        assert!(
            err.lines()
                .any(|l| l.starts_with(&line) && l.contains(what)),
            "no `{line} ... {what}` in:\n{err}"
        );
    }
}

#[test]
fn refuses_to_start_on_a_forwarding_loop() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\noptions ndots:5\n").unwrap();
    let path = write_config(
        dir.path(),
        &format!(
            "[listen]\naddresses = [\"127.0.0.1:53\"]\n[[zones]]\nname = \".\"\nresolv_conf = \"{}\"\n",
            resolv.display()
        ),
    );
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["--config", path.to_str().unwrap()],
    ] {
        let out = nodedns(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("loop"), "{err}");
    }
}

#[tokio::test]
async fn daemon_resolves_through_its_upstream_and_exits_cleanly_on_sigterm() {
    let up = FakeUpstream::start().await;
    up.add_a("registry.example.test.", Ipv4Addr::new(198, 18, 0, 10), 300);
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let mut daemon = Daemon::start(&write_config(dir.path(), &daemon_config(listen, up.addr())));
    wait_ready(listen, "registry.example.test").await;

    let udp = client::query_udp(listen, "registry.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(answer_a(&udp), vec![Ipv4Addr::new(198, 18, 0, 10)]);
    let tcp = client::query_tcp(listen, "registry.example.test", RecordType::A)
        .await
        .unwrap();
    assert_eq!(answer_a(&tcp), vec![Ipv4Addr::new(198, 18, 0, 10)]);

    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_query_finish() {
    let up = FakeUpstream::start().await;
    up.add_a("slow.example.test.", Ipv4Addr::new(198, 18, 0, 11), 300);
    up.add_a("ready.example.test.", Ipv4Addr::new(198, 18, 0, 12), 300);
    up.set_behavior_for(
        "slow.example.test.",
        Behavior::Delay(Duration::from_millis(400)),
    );
    let dir = tempfile::tempdir().unwrap();
    let listen: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let mut daemon = Daemon::start(&write_config(dir.path(), &daemon_config(listen, up.addr())));
    wait_ready(listen, "ready.example.test").await;

    let pending = tokio::spawn(client::query_udp(
        listen,
        "slow.example.test",
        RecordType::A,
        None,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    daemon.signal("TERM");
    let reply = pending.await.unwrap().unwrap();
    assert_eq!(
        answer_a(&reply),
        vec![Ipv4Addr::new(198, 18, 0, 11)],
        "{reply:?}"
    );
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn probe_exits_0_when_the_answer_is_200_1_when_not_and_2_when_nothing_answers() {
    // An upstream that never answers: live, but never ready.
    let up = FakeUpstream::start().await;
    up.set_behavior(support::fake_upstream::Behavior::Drop);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("admin.sock");
    let listen: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let config = daemon_config(listen, up.addr()).replace(
        "[admin]\naddress = \"\"",
        &format!("[admin]\naddress = \"\"\nsocket = \"{}\"", socket.display()),
    );
    let path = write_config(dir.path(), &config);
    let log = dir.path().join("nodedns.log");
    let _daemon = Daemon::start_logged(&path, &log);
    let sock = socket.to_str().unwrap();
    let mut live = nodedns(&["probe", "live", "--socket", sock]);
    for _ in 0..200 {
        if live.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        live = nodedns(&["probe", "live", "--socket", sock]);
    }
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(live.status.code(), Some(0), "{live:?}\n{log}");
    assert_eq!(String::from_utf8_lossy(&live.stdout), "ok\n");

    // The socket named in --config, when --socket is not given.
    let ready = nodedns(&["--config", path.to_str().unwrap(), "probe", "ready"]);
    assert_eq!(ready.status.code(), Some(1), "{ready:?}");
    let err = String::from_utf8_lossy(&ready.stderr);
    assert!(err.contains("503") && err.lines().count() == 1, "{err}");

    let missing = dir.path().join("nobody.sock");
    let none = nodedns(&["probe", "ready", "--socket", missing.to_str().unwrap()]);
    assert_eq!(none.status.code(), Some(2), "{none:?}");
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        err.contains("cannot connect") && err.lines().count() == 1,
        "{err}"
    );
}

/// Waits (up to 10 s) until the daemon's log has `line` after `after`, and returns the log.
fn wait_log(log: &std::path::Path, after: &str, line: &str) -> String {
    for _ in 0..200 {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.find(after).is_some_and(|at| text[at..].contains(line)) {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "no {line:?} after {after:?} in the log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

#[tokio::test]
async fn sighup_reloads_the_config_file() {
    let (old, new) = (Ipv4Addr::new(198, 18, 0, 21), Ipv4Addr::new(198, 18, 0, 22));
    let first = FakeUpstream::start().await;
    first.add_a("ready.example.test.", old, 300);
    first.add_a("moved.example.test.", old, 300);
    let second = FakeUpstream::start().await;
    second.add_a("moved.example.test.", new, 300);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("nodedns.log");
    let listen: SocketAddr = (Ipv4Addr::LOCALHOST, free_port()).into();
    let path = write_config(dir.path(), &daemon_config(listen, first.addr()));
    let mut daemon = Daemon::start_logged(&path, &log);
    wait_ready(listen, "ready.example.test").await;

    write_config(dir.path(), &daemon_config(listen, second.addr()));
    daemon.signal("HUP");
    wait_log(&log, "SIGHUP received", "config reloaded");
    let r = client::query_udp(listen, "moved.example.test", RecordType::A, None)
        .await
        .unwrap();
    assert_eq!(
        answer_a(&r),
        vec![new],
        "answered by the new config's upstream"
    );
    assert_eq!(second.udp_queries(), 1);

    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(5)).code(), Some(0));
}
