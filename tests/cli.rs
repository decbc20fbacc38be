//! The built binary, black-box: `check-config`, `print-default-config`, and a real daemon
//! resolving through a fake upstream and draining on SIGTERM.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use support::client::{self, answer_a};
use support::fake_upstream::{Behavior, FakeUpstream};

const BIN: &str = env!("CARGO_BIN_EXE_nodedns");

fn nodedns(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("nodedns.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

/// A loopback port that was free a moment ago (UDP and TCP are both checked by the daemon).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the daemon if a test fails before it stops it.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "nodedns did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn daemon_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    // The slow query below must not be given up by the adaptive attempt timeout.
    format!(
        "[forward]\nmin_attempt_timeout = \"1s\"\ninitial_attempt_timeout = \"1s\"\n[listen]\naddresses = [\"{listen}\"]\nworkers = 1\ndrain_timeout = \"3s\"\n\
         [admin]\naddress = \"\"\n[[zones]]\nname = \".\"\nupstreams = [\"{upstream}\"]\n"
    )
}

/// Polls until the daemon answers `name`, at most 5 s.
async fn wait_ready(addr: SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while client::query_udp(addr, name, RecordType::A, None)
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "nodedns never answered on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
