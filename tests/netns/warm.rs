//! Warm rollouts: the process that replaces another takes over its cache, fresh, through
//! the hand-over socket beside the snapshot file, before it reports ready.

use std::time::{Duration, Instant};

use crate::process::{Daemon, run_in};
use crate::topology::{NODE_DNS, Topology};
use crate::underlay::WILD_V4;
use crate::{CONFIG, report, root_or_skip};

/// How many names the old process caches.
const NAMES: usize = 1000;
/// Names per `dig` run.
const BATCH: usize = 100;

/// The `*.wild.example.test` names of this test.
fn names() -> Vec<String> {
    (0..NAMES)
        .map(|i| format!("warm{i}.wild.example.test"))
        .collect()
}

/// Asks for every name in `names` (A, one try each) from the pod; returns how many were
/// answered with the wildcard's address.
fn answered(pod: &str, names: &[String]) -> usize {
    let server = format!("@{NODE_DNS}");
    let wild = WILD_V4.to_string();
    let mut count = 0;
    for chunk in names.chunks(BATCH) {
        let mut args = vec![
            "+tries=1", "+time=2", "+noall", "+answer", "+notcp", &server,
        ];
        for name in chunk {
            args.extend([name.as_str(), "A"]);
        }
        let out = run_in(pod, "dig", &args, Duration::from_secs(120));
        count += chunk
            .iter()
            .filter(|name| {
                let owner = format!("{name}.");
                out.stdout.lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.first() == Some(&owner.as_str()) && f.last() == Some(&wild.as_str())
                })
            })
            .count();
    }
    count
}

/// `text` without ANSI colour sequences (`ESC [ ... m`), as the log writes them.
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_escape = false;
    for ch in text.chars() {
        match (in_escape, ch) {
            (false, '\x1b') => in_escape = true,
            (false, ch) => out.push(ch),
            (true, 'm') => in_escape = false,
            (true, _) => {}
        }
    }
    out
}

/// The `restored=N` of the log line saying where the snapshot came from.
fn restored_from_peer(log: &str) -> Option<usize> {
    let log = plain(log);
    let line = log
        .lines()
        .find(|l| l.contains("cache snapshot loaded from the serving process"))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("restored="))
        .and_then(|n| n.parse().ok())
}

#[test]
fn a_new_process_answers_from_the_cache_of_the_one_it_replaces() {
    if !root_or_skip("a_new_process_answers_from_the_cache_of_the_one_it_replaces") {
        return;
    }
    // The state directory, as the DaemonSet's hostPath: root's, 0700 (tempdir's mode).
    let state = tempfile::tempdir().unwrap();
    let snapshot = state.path().join("cache.snapshot");
    // No periodic write: the new process can only get the entries over the socket.
    let config = CONFIG.replace(
        "[cache]\n",
        &format!(
            "[cache]\nsnapshot = \"{}\"\nsnapshot_interval = \"0s\"\n",
            snapshot.display()
        ),
    );
    assert!(config.contains("snapshot_interval"));
    let mut net = Topology::build(5, env!("CARGO_BIN_EXE_nodedns"), &config);
    let mut old = net.take_forwarder().unwrap();
    let names = names();
    let cached = answered(&net.pod, &names);
    assert_eq!(cached, NAMES, "the old process did not cache every name");
    assert!(
        !snapshot.exists(),
        "no file may exist before the old one stops"
    );

    let conf = net.forwarder_config().to_string_lossy().into_owned();
    let log = net.dir.path().join("nodedns-new.log");
    let started = Instant::now();
    let mut new = Daemon::start(
        "nodedns (new)",
        &net.node,
        env!("CARGO_BIN_EXE_nodedns"),
        &["--config", &conf],
        &log,
    );
    new.wait_for_log("nodedns serving", Duration::from_secs(30));
    let to_ready = started.elapsed();
    let status = old.terminate(Duration::from_secs(15));
    assert!(
        status.is_some_and(|s| s.success()),
        "old: {status:?}\n{}",
        old.log_tail(3000)
    );
    net.kill_resolver(0);
    net.kill_resolver(1);

    let restored = restored_from_peer(&new.log_tail(1 << 20));
    assert!(
        restored.is_some_and(|n| n >= NAMES),
        "restored {restored:?} from the serving process\n{}",
        logs(&old, &new)
    );
    let warm = answered(&net.pod, &names);
    report(&format!(
        "netns warm rollout: {warm}/{NAMES} names answered by the new process with both \
         upstreams stopped; {} entries handed over; start to ready {to_ready:?}",
        restored.unwrap_or(0)
    ));
    assert!(
        new.is_running(),
        "the new process exited\n{}",
        logs(&old, &new)
    );
    assert!(
        warm * 100 >= NAMES * 99,
        "only {warm} of {NAMES} answered from the cache\n{}",
        logs(&old, &new)
    );
    // The old one wrote its snapshot at SIGTERM, after the hand-over.
    assert!(
        snapshot.exists(),
        "no snapshot written at SIGTERM\n{}",
        logs(&old, &new)
    );
    // And a name nobody asked before gets no answer: the upstreams really are gone.
    let cold = answered(&net.pod, &["never-asked.wild.example.test".to_owned()]);
    assert_eq!(
        cold,
        0,
        "a name never cached was answered\n{}",
        logs(&old, &new)
    );
}

fn logs(old: &Daemon, new: &Daemon) -> String {
    format!(
        "--- old ---\n{}\n--- new ---\n{}",
        old.log_tail(3000),
        new.log_tail(3000)
    )
}
