//! The config check: the file loaded and validated, and what it says (listen addresses, zones
//! and their upstreams, the admin address), so every later line can be read against it.

use super::report::Verdict;
use crate::config::{Config, Policy, Transport};

/// One line summing up a validated config. (A config that does not validate never gets here:
/// `doctor` prints its diagnostics and exits 64, as `check-config` does.)
pub fn check(cfg: &Config, source: &str) -> Verdict {
    let listen: Vec<String> = cfg
        .listen
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    let zones: Vec<String> = cfg
        .zones
        .iter()
        .map(|z| {
            let upstreams: Vec<String> = z.upstreams.iter().map(ToString::to_string).collect();
            format!(
                "{} -> {} ({}, {})",
                z.name,
                upstreams.join(" "),
                match z.transport {
                    Transport::Udp => "udp",
                    Transport::Tcp => "tcp",
                },
                match z.policy {
                    Policy::Sequential => "sequential",
                    Policy::Random => "random",
                    Policy::RoundRobin => "round_robin",
                    Policy::Fastest => "fastest",
                }
            )
        })
        .collect();
    let admin = cfg
        .admin
        .address
        .map_or_else(|| "disabled".to_owned(), |a| a.to_string());
    Verdict::ok(
        format!("config {source}"),
        format!(
            "valid; listen {}; zones: {}; admin {admin}",
            listen.join(" "),
            zones.join("; ")
        ),
    )
}
