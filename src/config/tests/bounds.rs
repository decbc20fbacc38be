//! The range of every numeric and duration key, and the upstream addresses no resolver can
//! have, each refused where it is written.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::super::*;
use super::{ZONE, errors};

/// `section.key = value` at line 2: the value starts at column `key.len() + 4`.
fn refused_at(section: &str, key: &str, value: &str) -> Diagnostic {
    let text = format!("[{section}]\n{key} = {value}\n{ZONE}");
    let diags = errors(&text);
    assert_eq!(diags.len(), 1, "{value}: {diags:?}");
    let d = diags.into_iter().next().unwrap();
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (2, key.len() + 4, format!("{section}.{key}").as_str()),
        "{section}.{key} = {value}: {d:?}"
    );
    d
}

fn accepted(section: &str, key: &str, value: &str) {
    let text = format!("[{section}]\n{key} = {value}\n{ZONE}");
    if let Err(e) = parse_str(&text, "test.toml") {
        panic!("{section}.{key} = {value} refused: {e}");
    }
}

/// Each key with the most it accepts and the least it refuses above that.
const BOUNDS: &[(&str, &str, &str, &str)] = &[
    ("listen", "workers", "1024", "1025"),
    ("listen", "tcp_max_connections", "100000", "100001"),
    ("listen", "tcp_idle_timeout", "\"10m\"", "\"601s\""),
    ("listen", "tcp_max_pipelined", "65535", "65536"),
    ("listen", "max_inflight", "1000000", "1000001"),
    ("listen", "max_inflight_per_client", "1000000", "1000001"),
    ("listen", "client_miss_rate", "1000000", "1000001"),
    ("listen", "client_miss_burst", "1000000", "1000001"),
    (
        "listen",
        "tcp_max_connections_per_client",
        "100000",
        "100001",
    ),
    ("listen", "drain_timeout", "\"10m\"", "\"601s\""),
    ("interface", "check_interval", "\"1h\"", "\"3601s\""),
    ("cache", "capacity", "100000000", "100000001"),
    ("cache", "max_bytes", "\"64GiB\"", "\"65GiB\""),
    ("cache", "min_ttl", "\"1d\"", "\"86401s\""),
    ("cache", "max_ttl", "\"7d\"", "\"604801s\""),
    ("cache", "negative_max_ttl", "\"1d\"", "\"86401s\""),
    ("cache", "servfail_ttl", "\"5m\"", "\"301s\""),
    ("cache", "stale_max", "\"7d\"", "\"604801s\""),
    ("cache", "stale_client_timeout", "\"1m\"", "\"61s\""),
    ("cache", "max_waiters_per_key", "65536", "65537"),
    ("forward", "attempts", "16", "17"),
    ("forward", "deadline", "\"1m\"", "\"61s\""),
    ("forward", "min_attempt_timeout", "\"50ms\"", "\"61s\""),
    ("forward", "initial_attempt_timeout", "\"500ms\"", "\"61s\""),
    ("forward", "max_attempt_timeout", "\"1m\"", "\"61s\""),
    ("forward", "down_after", "1000", "1001"),
    ("forward", "probe_interval", "\"1s\"", "\"3601s\""),
    ("forward", "probe_max_interval", "\"1h\"", "\"3601s\""),
    ("forward", "tcp_idle_timeout", "\"1h\"", "\"3601s\""),
];

#[test]
fn every_number_and_duration_has_an_upper_bound_reported_where_written() {
    for &(section, key, most, too_much) in BOUNDS {
        accepted(section, key, most);
        let d = refused_at(section, key, too_much);
        assert!(
            d.reason.contains("out of range") || d.reason.contains("above"),
            "{section}.{key}: {d:?}"
        );
    }
}

#[test]
fn the_in_flight_limit_per_client_defaults_to_a_tenth_of_the_total() {
    let text = format!("[listen]\nmax_inflight = 55\n{ZONE}");
    let config = parse_str(&text, "test.toml").unwrap();
    assert_eq!(config.listen.clients.max_inflight, 5);
    let text = format!("[listen]\nmax_inflight = 5\n{ZONE}");
    let config = parse_str(&text, "test.toml").unwrap();
    assert_eq!(config.listen.clients.max_inflight, 1);
    let text = format!("[listen]\nmax_inflight = 55\nmax_inflight_per_client = 55\n{ZONE}");
    let config = parse_str(&text, "test.toml").unwrap();
    assert_eq!(config.listen.clients.max_inflight, 55);
    // 0 turns the rate limit off; nothing else may be 0.
    accepted("listen", "client_miss_rate", "0");
    for key in [
        "max_inflight_per_client",
        "client_miss_burst",
        "tcp_max_connections_per_client",
    ] {
        refused_at("listen", key, "0");
    }
}

#[test]
fn a_zones_ttl_overrides_have_the_same_bounds() {
    let text = "[[zones]]\nname = \".\"\nupstreams = [\"127.0.0.1:5300\"]\n\
                cache = { max_ttl = \"8d\" }\n";
    let d = &errors(text)[0];
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (4, 21, "zones[0].cache.max_ttl"),
        "{d:?}"
    );
    assert_eq!(d.reason, "8d is above the most allowed, 7d");
}

fn upstream_refused(upstream: &str) -> Diagnostic {
    let text = format!(
        "[listen]\naddresses = [\"127.0.0.1:53\", \"[::1]:5353\"]\n\
         [[zones]]\nname = \".\"\nupstreams = [\"10.0.0.2\", \"{upstream}\"]\n"
    );
    let diags = errors(&text);
    assert_eq!(diags.len(), 1, "{upstream}: {diags:?}");
    let d = diags.into_iter().next().unwrap();
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (5, 26, "zones[0].upstreams"),
        "{upstream}: {d:?}"
    );
    d
}

#[test]
fn upstreams_that_name_no_resolver_are_refused() {
    let cases = [
        ("255.255.255.255", "broadcast"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250:1900", "multicast"),
        ("ff02::fb", "multicast"),
        ("[ff05::1:3]:547", "multicast"),
        ("::ffff:224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "0.0.0.0/8"),
    ];
    for (upstream, why) in cases {
        let d = upstream_refused(upstream);
        assert!(d.reason.contains(why), "{upstream}: {d:?}");
    }
}

#[test]
fn the_loop_guard_sees_an_own_address_in_any_spelling() {
    for upstream in [
        "127.0.0.1",
        "127.0.0.1:53",
        "::ffff:127.0.0.1",
        "[::1]:5353",
    ] {
        let d = upstream_refused(upstream);
        assert!(d.reason.contains("forwarding loop"), "{upstream}: {d:?}");
    }
    // Another loopback address, or another port, is another socket: not a loop.
    let text = "[listen]\naddresses = [\"127.0.0.1:53\"]\n\
                [[zones]]\nname = \".\"\nupstreams = [\"127.0.0.53\", \"127.0.0.1:5353\", \"::1\"]\n";
    parse_str(text, "t").unwrap();
}

#[test]
fn an_unspecified_listen_address_would_receive_every_loopback_upstream() {
    let listen = ["0.0.0.0:53".parse().unwrap(), "[::]:5353".parse().unwrap()];
    for upstream in [
        "127.0.0.1:53",
        "127.9.9.9:53",
        "[::1]:5353",
        "[::ffff:127.0.0.2]:5353",
    ] {
        assert!(
            units::is_own_address(upstream.parse().unwrap(), &listen),
            "{upstream}"
        );
    }
    for upstream in ["127.0.0.1:54", "10.0.0.2:53"] {
        assert!(
            !units::is_own_address(upstream.parse().unwrap(), &listen),
            "{upstream}"
        );
    }
}

#[test]
fn resolv_conf_skips_nameservers_that_name_no_host() {
    let text = "nameserver 0.0.0.0\nnameserver 224.0.0.1\nnameserver 255.255.255.255\n\
                nameserver 10.0.0.2\n";
    let got = resolv::upstreams_from_text(text, &[]).unwrap();
    assert_eq!(got.upstreams, ["10.0.0.2:53".parse().unwrap()]);
}

#[test]
fn a_config_file_must_be_a_bounded_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let err = load_file(&fifo).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}:1:1: ", fifo.display())) && err.contains("FIFO"),
        "{err}"
    );
    let big = dir.path().join("big.toml");
    let mut text = ZONE.to_owned();
    text.push_str(&"#".repeat(usize::try_from(MAX_FILE).unwrap()));
    std::fs::write(&big, text).unwrap();
    let err = load_file(&big).unwrap_err().to_string();
    assert!(err.contains("larger than"), "{err}");
    // A ConfigMap mount: the file is reached through symlinks.
    let real = dir.path().join("real.toml");
    std::fs::write(&real, ZONE).unwrap();
    let link = dir.path().join("link.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    load_file(&link).unwrap();
    assert!(load_file(Path::new(dir.path())).is_err());
}
