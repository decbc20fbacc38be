//! `nodedns doctor` on loopback: the built binary checks an in-process nodedns and scripted
//! fake upstreams, and each failure it is shown comes out as the failing line it should be.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use support::fake_upstream::{Behavior, FakeUpstream};
use support::nodedns::{Nodedns, zone};
use tempfile::TempDir;

const REGISTRY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
const NAME: &str = "registry.example.test";

/// What one `nodedns doctor` run printed and returned.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    elapsed: Duration,
}

impl Run {
    /// The verdict line for `check` (the first whose check starts with it).
    fn line(&self, status: &str, check: &str) -> Option<&str> {
        let prefix = format!("{status:<4} {check}");
        self.stdout.lines().find(|l| l.starts_with(&prefix))
    }

    /// (status, check) of every verdict line, in order.
    fn verdicts(&self) -> Vec<(String, String)> {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with(' ') && l.contains(": "))
            .map(|l| {
                let (status, rest) = l.split_once(' ').unwrap();
                let check = rest.trim_start().split(": ").next().unwrap();
                (status.to_owned(), check.to_owned())
            })
            .collect()
    }
}

/// A config file for doctor naming `listen` and `upstreams` (admin disabled).
fn write_config(dir: &TempDir, listen: SocketAddr, upstreams: &[SocketAddr]) -> PathBuf {
    let text = format!(
        "[listen]\naddresses = [\"{listen}\"]\n[admin]\naddress = \"\"\n{}",
        zone(".", upstreams, "")
    );
    let path = dir.path().join("nodedns.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn doctor(config: &Path, extra: &[&str]) -> Run {
    // Run in the config's directory, so the report names the file as an operator would.
    let mut command = Command::new(env!("CARGO_BIN_EXE_nodedns"));
    command
        .current_dir(config.parent().unwrap())
        .arg("--config")
        .arg(config.file_name().unwrap())
        .arg("doctor")
        .args(extra);
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let out = command.output().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            elapsed: start.elapsed(),
        }
    })
    .await
    .unwrap()
}

async fn registry_upstream() -> FakeUpstream {
    let up = FakeUpstream::start().await;
    up.add_a(&format!("{NAME}."), REGISTRY, 300);
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_setup_passes_every_check() {
    let (a, b) = (registry_upstream().await, registry_upstream().await);
    let ups = [a.addr(), b.addr()];
    let ns = Nodedns::forwarding_to(&ups, "").await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, ns.addr, &ups);

    let run = doctor(&config, &["--name", NAME]).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(!run.stdout.contains("\nfail "), "{}", run.stdout);
    let listener = run
        .line("ok", &format!("listener udp {}", ns.addr))
        .unwrap();
    assert!(listener.contains("nodedns "), "{listener}");
    assert!(
        run.line("ok", &format!("listener tcp {}", ns.addr))
            .is_some()
    );
    for up in ups {
        for proto in ["udp", "tcp"] {
            let check = format!("upstream {proto} {up} (zone .)");
            assert!(run.line("ok", &check).is_some(), "{check}:\n{}", run.stdout);
        }
        let answer = run
            .line("ok", &format!("upstream {up} answers {NAME}."))
            .unwrap();
        assert!(answer.contains(&REGISTRY.to_string()), "{answer}");
    }
    let through = run
        .line("ok", &format!("through nodedns {}", ns.addr))
        .unwrap();
    assert!(through.contains("same as upstream"), "{through}");
    // Admin disabled in this config: said, but not a failure.
    assert!(run.line("warn", "daemon admin").is_some(), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_upstream_fails_its_line_with_timeout() {
    let (good, dead) = (registry_upstream().await, registry_upstream().await);
    dead.set_behavior(Behavior::Drop);
    let ups = [good.addr(), dead.addr()];
    let ns = Nodedns::forwarding_to(&ups, "").await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, ns.addr, &ups);

    let run = doctor(&config, &["--name", NAME]).await;
    // The runbook in docs/operations.md shows this run's output.
    if std::env::var_os("NODEDNS_SHOW_DOCTOR").is_some() {
        println!("{}", run.stdout);
    }
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    for proto in ["udp", "tcp"] {
        let line = run
            .line(
                "fail",
                &format!("upstream {proto} {} (zone .)", dead.addr()),
            )
            .unwrap_or_else(|| panic!("no failing {proto} line:\n{}", run.stdout));
        assert!(line.contains("timeout"), "{line}");
    }
    assert!(
        run.line("ok", &format!("upstream udp {} ", good.addr()))
            .is_some()
    );
    // The cache still answers through the good upstream.
    assert!(
        run.line("ok", "through nodedns").is_some(),
        "{}",
        run.stdout
    );
    // Every probe waits at most 1 s and they run at once: bounded, with 5x headroom for a
    // busy machine (a hang would be the dead upstream's silence, for ever).
    assert!(
        run.elapsed < Duration::from_secs(6),
        "took {:?}",
        run.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_refused_and_servfail_are_told_apart() {
    let good = registry_upstream().await;
    let refusing = registry_upstream().await;
    refusing.set_behavior(Behavior::Rcode(ResponseCode::Refused));
    let failing = registry_upstream().await;
    failing.set_behavior(Behavior::Rcode(ResponseCode::ServFail));
    let mut closed = registry_upstream().await;
    closed.stop().await;
    let ups = [good.addr(), refusing.addr(), failing.addr(), closed.addr()];
    let ns = Nodedns::forwarding_to(&ups, "").await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, ns.addr, &ups);

    let run = doctor(&config, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = |verdict: &str, up: &FakeUpstream| {
        run.line(verdict, &format!("upstream udp {} ", up.addr()))
            .unwrap_or_else(|| panic!("no {verdict} line for {}:\n{}", up.addr(), run.stdout))
    };
    // An rcode is an answer: the upstream is up, as nodedns's health sees it, and the
    // warning says what its answer means.
    assert!(line("warn", &refusing).contains("up (it answers), but refused: answered REFUSED"));
    assert!(line("warn", &failing).contains("SERVFAIL"));
    assert!(!line("warn", &failing).contains("refused"));
    assert!(line("fail", &closed).contains("connection refused"));
    assert!(
        run.line("ok", &format!("upstream udp {} ", good.addr()))
            .is_some()
    );
    // Each failure carries its own fix.
    assert!(run.stdout.contains("ACL"), "{}", run.stdout);
    assert!(run.stdout.contains("cannot resolve"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_listener_is_named_and_the_run_stays_short() {
    let dead = registry_upstream().await;
    dead.set_behavior(Behavior::Drop);
    // A port nothing listens on: bound, read, released.
    let vacant = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, vacant, &[dead.addr()]);

    let run = doctor(&config, &["--name", NAME]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let udp = run.line("fail", &format!("listener udp {vacant}")).unwrap();
    assert!(udp.contains("refused"), "{udp}");
    assert!(
        run.line("fail", &format!("listener tcp {vacant}"))
            .is_some()
    );
    assert!(run.stdout.contains("start nodedns"), "{}", run.stdout);
    // Every probe waits at most 1 s and they run at once: bounded, with 5x headroom for a
    // busy machine (a hang would be the dead upstream's silence, for ever).
    assert!(
        run.elapsed < Duration::from_secs(6),
        "took {:?}",
        run.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_dns_server_on_the_listen_address_is_not_nodedns() {
    let impostor = registry_upstream().await;
    let up = registry_upstream().await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, impostor.addr(), &[up.addr()]);

    let run = doctor(&config, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run
        .line("fail", &format!("listener udp {}", impostor.addr()))
        .unwrap();
    assert!(line.contains("another server"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_has_the_same_verdicts_as_text() {
    let (good, dead) = (registry_upstream().await, registry_upstream().await);
    dead.set_behavior(Behavior::Drop);
    let ups = [good.addr(), dead.addr()];
    let ns = Nodedns::forwarding_to(&ups, "").await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, ns.addr, &ups);

    let (text, json) = tokio::join!(
        doctor(&config, &["--name", NAME]),
        doctor(&config, &["--name", NAME, "--json"])
    );
    assert_eq!(json.code, Some(1));
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(doc["passed"], false);
    let from_json: Vec<(String, String)> = doc["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["status"].as_str().unwrap().to_owned(),
                v["check"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(from_json, text.verdicts());
    let failed = doc["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["status"] == "fail")
        .unwrap();
    assert!(
        failed["check"]
            .as_str()
            .unwrap()
            .contains(&dead.addr().to_string())
    );
    assert!(failed["evidence"].as_str().unwrap().contains("timeout"));
    assert!(failed["fix"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolv_conf_pointing_elsewhere_fails() {
    let up = registry_upstream().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, ns.addr, &[up.addr()]);
    let resolv = dir.path().join("pod-resolv.conf");
    // Never queried: doctor only reads it.
    std::fs::write(
        &resolv,
        "nameserver 10.96.0.10\nsearch svc.cluster.local\noptions ndots:5\n",
    )
    .unwrap();

    let run = doctor(&config, &["--resolv-conf", resolv.to_str().unwrap()]).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let line = run.line("fail", "resolv.conf").unwrap();
    assert!(line.contains("10.96.0.10"), "{line}");
}

#[test]
fn a_bad_config_file_exits_64() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[listen]\nadresses = []\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nodedns"))
        .arg("--config")
        .arg(&path)
        .arg("doctor")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("adresses"));
}

/// The runbook's pipe: `kubectl exec POD -- cat /etc/resolv.conf | ... doctor --resolv-conf -`
/// (doctor in the nodedns pod cannot read the job pod's file).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_resolv_conf_piped_on_standard_input_is_checked() {
    use std::io::Write as _;
    use std::process::Stdio;
    let up = registry_upstream().await;
    let ns = Nodedns::forwarding_to(&[up.addr()], "").await;
    let dir = TempDir::new().unwrap();
    let config = write_config(&dir, ns.addr, &[up.addr()]);
    let resolv = format!(
        "nameserver {}\nsearch svc.cluster.local\noptions ndots:2\n",
        ns.addr.ip()
    );
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nodedns"))
            .arg("--config")
            .arg(&config)
            .args(["doctor", "--name", NAME, "--resolv-conf", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(resolv.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The piped file was read: its nameserver, search list and ndots are in the verdicts.
    assert!(
        stdout.contains(&format!(
            "resolv.conf - nameserver: nameserver {}",
            ns.addr.ip()
        )),
        "{stdout}"
    );
    let cost = stdout
        .lines()
        .find(|l| l.contains("resolv.conf lookup cost"))
        .unwrap_or_else(|| panic!("no lookup cost line:\n{stdout}"));
    assert!(cost.contains("ndots:2 with 1 search domain"), "{cost}");
}
