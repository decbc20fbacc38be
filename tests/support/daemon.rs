//! The built `nodedns` binary as a child process, for black-box tests.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::client;

pub const BIN: &str = env!("CARGO_BIN_EXE_nodedns");

pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("nodedns.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path
}

/// A loopback port that was free a moment ago (UDP and TCP are both checked by the daemon).
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the daemon if a test fails before it stops it.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Daemon::spawn(config, Stdio::null())
    }

    /// Starts with its log (stderr) written to `log`.
    pub fn start_logged(config: &Path, log: &Path) -> Daemon {
        Daemon::spawn(config, std::fs::File::create(log).unwrap().into())
    }

    fn spawn(config: &Path, stderr: Stdio) -> Daemon {
        let child = Command::new(BIN)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Daemon(child)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for exit, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
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

/// Polls until the daemon answers `name`, at most 30 s: a debug build starting while
/// the other tests load both cores has been seen to need more than 5 s, and the bound only
/// decides how long a real failure takes to report.
pub async fn wait_ready(addr: SocketAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
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
