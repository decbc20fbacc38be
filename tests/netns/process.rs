//! Processes the netns suite starts: one-shot clients run with a time bound
//! ([`run_in`]) and long-running daemons ([`Daemon`]) killed by a drop guard.
//!
//! Every process is started in its own process group so that one `kill` reaches
//! the daemons' children too (nsd forks a server and an xfrd process). Nothing
//! here knows about DNS; `topology` decides what runs where.

use std::fs::File;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// What a bounded one-shot command did.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code; `None` when killed (time bound hit or signal).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `program args` inside network namespace `ns` (`ip netns exec`, which also
/// bind-mounts `/etc/netns/<ns>/*` over `/etc`), killing it after `limit`.
pub fn run_in(ns: &str, program: &str, args: &[&str], limit: Duration) -> Outcome {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns, program]).args(args);
    run_bounded(command, limit)
}

/// Runs a command on the host (not inside a namespace), killing it after `limit`.
pub fn run_host(program: &str, args: &[&str], limit: Duration) -> Outcome {
    let mut command = Command::new(program);
    command.args(args);
    run_bounded(command, limit)
}

/// Runs `ip args` on the host and panics with its stderr when it fails: the suite
/// cannot go on with half a topology (the caller's drop guard removes the rest).
pub fn ip(args: &[&str]) {
    let out = run_host("ip", args, Duration::from_secs(10));
    assert!(
        out.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        out.stderr.trim()
    );
}

fn run_bounded(mut command: Command, limit: Duration) -> Outcome {
    let start = Instant::now();
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pgid = child.id();
    let (tx, rx) = mpsc::channel();
    // wait_with_output drains both pipes; it runs on a thread so the caller can
    // enforce the time bound with recv_timeout.
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    // A client killed at the bound shows as `code: None` with `elapsed` >= limit.
    let result = match rx.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => {
            kill_group(pgid);
            rx.recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{command:?} outlived SIGKILL by 10 s"))
        }
    };
    let output = result.unwrap_or_else(|e| panic!("waiting for {command:?}: {e}"));
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// SIGKILL to a whole process group (`kill -KILL -- -PGID`).
fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A long-running process (nsd, the forwarder) in its own process group, its
/// stdout and stderr in a log file. Dropping it kills the group and reaps it.
pub struct Daemon {
    pub name: String,
    child: Child,
    log: PathBuf,
    killed: bool,
}

impl Daemon {
    /// Starts `program args` inside `ns`, logging to `log`.
    pub fn start(name: &str, ns: &str, program: &str, args: &[&str], log: &Path) -> Daemon {
        let file = File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = file.try_clone().unwrap_or_else(|e| panic!("dup log: {e}"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({program}): {e}"));
        Daemon {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            killed: false,
        }
    }

    /// The process id (`ip netns exec` execs the program, so this is the daemon's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) until the log contains `text`, failing early if the process exits.
    pub fn wait_for_log(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_tail(1 << 20).contains(text) {
            assert!(
                self.is_running(),
                "{} exited:\n{}",
                self.name,
                self.log_tail(3000)
            );
            assert!(
                Instant::now() < deadline,
                "{} did not log {text:?} within {limit:?}:\n{}",
                self.name,
                self.log_tail(3000)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running (false once it exited or was killed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process group (children too, even when the leader already
    /// exited) and waits until the leader is reaped.
    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            kill_group(self.child.id());
        }
        let _ = self.child.wait();
    }

    /// Sends SIGTERM to the process itself (`ip netns exec` execs it, so the
    /// child is the daemon) and waits up to `limit` for it to exit; `None` when
    /// it is still running then.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The last `max` bytes of the daemon's log, for failure messages.
    pub fn log_tail(&self, max: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let cut = text.len().saturating_sub(max);
        let start = (cut..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}
