//! `nodedns doctor`: the DNS troubleshooting checklist as one command.
//!
//! This module owns the checks a person walks by hand when a pod cannot resolve a name, layer
//! by layer: the config (`config_check`), nodedns's own listeners (`listener`), each upstream
//! from this node (`upstreams`), a name through the cache against the upstream's answer
//! (`through`), a pod's resolv.conf (`resolv`), and the running daemon's counters (`daemon`).
//! Each check yields verdicts (`report`): status, evidence and, when not ok, the fix.
//!
//! Every probe has a short timeout and all run at once, so a run ends within a few seconds
//! even when nothing answers. It reads the config but never the daemon's memory: what it knows
//! of the daemon comes over the wire.

mod config_check;
mod daemon;
mod listener;
pub mod probe;
pub mod report;
pub mod resolv;
mod through;
mod upstreams;

use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::RecordType;

use crate::config::Config;
pub use report::{Report, Verdict};

/// How long one probe waits for its reply.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a query through nodedns may wait: its own upstream deadline, plus a margin for
/// the reply, capped so the run stays short.
const THROUGH_MAX: Duration = Duration::from_secs(3);

/// What to check besides the config's own addresses.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Names to resolve via each upstream and via nodedns (`--name`).
    pub names: Vec<String>,
    /// A pod's resolv.conf to analyse (`--resolv-conf`).
    pub resolv_conf: Option<PathBuf>,
}

/// Runs every check against `cfg` (loaded from `source`, for the report) and returns the
/// verdicts in checklist order.
pub async fn run(cfg: &Config, source: &str, opts: &Options) -> Report {
    let mut report = Report::default();
    report.extend([config_check::check(cfg, source)]);
    let mut questions = Vec::new();
    for name in &opts.names {
        match probe::Question::internet(name, RecordType::A) {
            Some(q) => questions.push(q),
            None => report.extend([Verdict::fail(
                format!("name {name}"),
                "not a domain name",
                "pass --name a domain name such as registry.example.com",
            )]),
        }
    }
    let listen = &cfg.listen.addresses;
    let through_wait = (cfg.forward.deadline + Duration::from_millis(500)).min(THROUGH_MAX);
    let (listeners, found, through, daemon) = tokio::join!(
        listener::check(listen, PROBE_TIMEOUT),
        upstreams::check(&cfg.zones, &questions, PROBE_TIMEOUT),
        through::ask(listen, &questions, through_wait),
        daemon::check(cfg.admin.address, PROBE_TIMEOUT),
    );
    report.extend(listeners);
    report.extend(found.verdicts);
    report.extend(through::compare(
        listen,
        &questions,
        &through,
        &found.references,
    ));
    if let Some(path) = &opts.resolv_conf {
        report.extend(resolv_conf(path, cfg, &opts.names));
    }
    report.extend(daemon);
    report
}

/// Checks the resolv.conf at `path`; `-` reads it from standard input, as piped from the pod
/// (`kubectl exec POD -- cat /etc/resolv.conf | ... doctor --resolv-conf -`): doctor in the
/// nodedns pod cannot read another pod's files.
fn resolv_conf(path: &std::path::Path, cfg: &Config, names: &[String]) -> Vec<Verdict> {
    let shown = path.display().to_string();
    let text = if path.as_os_str() == "-" {
        read_stdin()
    } else {
        std::fs::read_to_string(path)
    };
    match text {
        Ok(text) => resolv::check(&shown, &text, &cfg.listen.addresses, names),
        Err(e) => vec![Verdict::fail(
            format!("resolv.conf {shown}"),
            format!("cannot read: {e}"),
            "copy it out of the pod first: `kubectl exec POD -- cat /etc/resolv.conf > pod-resolv.conf`",
        )],
    }
}

/// Standard input as text, at most [`crate::config::MAX_FILE`] bytes (a resolv.conf is a few
/// lines).
fn read_stdin() -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::io::stdin()
        .take(crate::config::MAX_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}
