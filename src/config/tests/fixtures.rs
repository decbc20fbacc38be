//! The fixture files, the embedded default, and the defaults every omitted key takes.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use super::super::*;
use super::{ZONE, addr, fixtures, toml_files};

#[test]
fn every_good_fixture_loads() {
    let files = toml_files("good");
    assert!(files.len() >= 3, "fixtures missing: {files:?}");
    for path in files {
        if let Err(e) = load_file(&path) {
            panic!("{} was refused:\n{e}", path.display());
        }
    }
}

#[test]
fn kubernetes_fixture_routes_cluster_local_over_tcp_with_short_ttls() {
    let config = load_file(&fixtures("good").join("kubernetes.toml")).unwrap();
    assert_eq!(
        config.listen.addresses,
        [addr("169.254.20.10:53"), addr("10.96.0.10:53")]
    );
    let names: Vec<&str> = config.zones.iter().map(|z| z.name.as_str()).collect();
    assert_eq!(names, ["cluster.local.", "in-addr.arpa.", "ip6.arpa.", "."]);
    let cluster = &config.zones[0];
    assert_eq!(cluster.upstreams, [addr("198.18.0.10:53")]);
    assert_eq!(cluster.transport, Transport::Tcp);
    // Overridden keys change; the rest come from [cache].
    assert_eq!(cluster.cache.max_ttl, Duration::from_secs(30));
    assert_eq!(cluster.cache.negative_max_ttl, Duration::from_secs(5));
    assert_eq!(cluster.cache.servfail_ttl, Duration::from_secs(5));
    let root = &config.zones[3];
    assert_eq!(
        root.upstreams,
        [
            addr("198.18.1.251:53"),
            addr("198.18.1.252:53"),
            addr("[::1]:5353")
        ]
    );
    assert_eq!(
        (root.transport, root.policy),
        (Transport::Udp, Policy::Sequential)
    );
    assert_eq!(root.cache, config.cache.ttl);
    assert!(config.interface.manage);
    assert_eq!(config.listen.drain_timeout, Duration::from_secs(10));
    assert_eq!(config.log.format, LogFormat::Json);
    assert!((config.log.queries - 0.01).abs() < 1e-9);
}

#[test]
fn omitted_keys_take_their_documented_defaults() {
    let config = load_file(&fixtures("good").join("minimal.toml")).unwrap();
    let secs = Duration::from_secs;
    let listen = &config.listen;
    assert_eq!(listen.addresses, [addr("169.254.20.10:53")]);
    assert_eq!((listen.workers, listen.udp_max_payload), (0, 1232));
    assert_eq!(
        (listen.tcp_max_connections, listen.tcp_max_pipelined),
        (1000, 64)
    );
    assert_eq!(listen.max_inflight, 10_000);
    let clients = ClientLimits {
        max_inflight: 1000,
        miss_rate: 200,
        miss_burst: 1000,
        tcp_max_connections: 32,
    };
    assert_eq!(listen.clients, clients);
    assert_eq!(
        (listen.tcp_idle_timeout, listen.drain_timeout),
        (secs(10), secs(5))
    );
    let interface = &config.interface;
    assert_eq!(
        (
            interface.manage,
            interface.notrack,
            interface.teardown_on_exit
        ),
        (false, false, false)
    );
    assert_eq!(
        (
            interface.name.as_str(),
            interface.fallback.as_str(),
            interface.check_interval
        ),
        ("nodedns", "lo", secs(60))
    );
    let cache = &config.cache;
    assert_eq!(
        (cache.capacity, cache.max_bytes),
        (100_000, 64 * 1024 * 1024)
    );
    let ttl = CacheTtl {
        min_ttl: secs(0),
        max_ttl: secs(86_400),
        negative_max_ttl: secs(3_600),
        servfail_ttl: secs(5),
    };
    assert_eq!(cache.ttl, ttl);
    assert_eq!(cache.stale_max, secs(3_600));
    assert_eq!(cache.stale_client_timeout, Duration::from_millis(1_800));
    assert_eq!(
        (cache.prefetch, cache.max_waiters_per_key, &cache.snapshot),
        (true, 256, &None)
    );
    let forward = &config.forward;
    assert_eq!(
        (forward.attempts, forward.deadline, forward.down_after),
        (3, secs(2), 3)
    );
    assert_eq!(forward.min_attempt_timeout, Duration::from_millis(50));
    assert_eq!(forward.initial_attempt_timeout, Duration::from_millis(500));
    assert_eq!(forward.max_attempt_timeout, secs(1));
    assert_eq!(
        (forward.probe_interval, forward.probe_max_interval),
        (secs(1), secs(30))
    );
    assert_eq!(forward.tcp_idle_timeout, secs(10));
    let zone = &config.zones[0];
    assert_eq!(
        (zone.transport, zone.policy, zone.cache),
        (Transport::Udp, Policy::Sequential, ttl)
    );
    assert_eq!(zone.resolv_conf, None);
    assert_eq!(config.admin.address, Some(addr("127.0.0.1:9253")));
    assert_eq!(
        (config.log.format, config.log.level.as_str()),
        (LogFormat::Text, "info")
    );
    assert_eq!(config.log.queries, 0.0);
}

#[test]
fn relative_resolv_conf_is_read_beside_the_config_file() {
    let dir = fixtures("good");
    let config = load_file(&dir.join("resolv_conf_beside.toml")).unwrap();
    let zone = &config.zones[0];
    assert_eq!(zone.resolv_conf, Some(dir.join("resolv.conf")));
    // 127.0.0.1:53 is not 127.0.0.1:5353, the listen address, so it is kept.
    assert_eq!(
        zone.upstreams,
        [addr("198.18.1.251:53"), addr("127.0.0.1:53")]
    );
}

/// Each bad fixture: its first problem's line, column, key and a piece of its reason.
const BAD: &[(&str, usize, usize, &str, &str)] = &[
    (
        "bad_duration.toml",
        2,
        11,
        "cache.max_ttl",
        "unknown unit `week`",
    ),
    (
        "bare_number_duration.toml",
        2,
        12,
        "forward.deadline",
        "durations need a unit",
    ),
    (
        "duplicate_zone.toml",
        6,
        8,
        "zones[1].name",
        "already defined at line 2",
    ),
    ("many_errors.toml", 3, 14, "listen.addresses", "has no port"),
    (
        "min_ttl_above_max_ttl.toml",
        7,
        21,
        "zones[0].cache.max_ttl",
        "(1h) is above",
    ),
    (
        "missing_upstreams.toml",
        4,
        1,
        "zones[0]",
        "needs `upstreams`",
    ),
    ("no_zones.toml", 1, 1, "zones", "at least one [[zones]]"),
    (
        "resolv_conf_loop.toml",
        6,
        15,
        "zones[0].resolv_conf",
        "only nodedns's own listen addresses",
    ),
    (
        "servfail_ttl_too_big.toml",
        2,
        16,
        "cache.servfail_ttl",
        "RFC 2308 §7.1",
    ),
    (
        "structural_and_semantic.toml",
        3,
        34,
        "listen.addresses[1]",
        "invalid type: integer `7`, expected a string",
    ),
    ("syntax.toml", 5, 12, "cache.capacity", "extra `=`"),
    (
        "unknown_key.toml",
        3,
        1,
        "cache",
        "unknown field `capacty`, expected one of",
    ),
    (
        "upstream_loop.toml",
        7,
        14,
        "zones[0].upstreams",
        "own listen address: forwarding loop",
    ),
    (
        "upstreams_and_resolv_conf.toml",
        4,
        15,
        "zones[0].resolv_conf",
        "not both",
    ),
    (
        "wildcard_listen.toml",
        2,
        14,
        "listen.addresses",
        "bind a specific address",
    ),
];

#[test]
fn bad_fixtures_name_line_column_key_and_reason() {
    let dir = fixtures("bad");
    for (file, line, column, key, reason) in BAD {
        let path = dir.join(file);
        let diags = load_file(&path).unwrap_err().0;
        let d = &diags[0];
        let seen = (d.line, d.column, d.key.as_str());
        assert_eq!(seen, (*line, *column, *key), "{file}: {diags:?}");
        assert!(
            d.reason.contains(reason),
            "{file}: {:?} lacks {reason:?}",
            d.reason
        );
        assert_eq!(d.file, path.display().to_string());
    }
    let listed: Vec<&str> = BAD.iter().map(|b| b.0).collect();
    for path in toml_files("bad") {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(listed.contains(&name), "{name} has no expectation in BAD");
    }
}

#[test]
fn every_problem_in_a_file_is_reported_at_once_in_file_order() {
    let diags = load_file(&fixtures("bad").join("many_errors.toml"))
        .unwrap_err()
        .0;
    let found: Vec<(usize, &str)> = diags.iter().map(|d| (d.line, d.key.as_str())).collect();
    let expected = [
        (3, "listen.addresses"),
        (6, "cache.max_bytes"),
        (9, "forward.attempts"),
        (12, "zones[0].name"),
        (13, "zones[0].upstreams"),
        (14, "zones[0].policy"),
        (17, "log.level"),
    ];
    assert_eq!(found, expected);
}

#[test]
fn errors_print_as_file_line_column_key_reason() {
    let text = format!("[cache]\nmax_ttl = \"1w\"\n{ZONE}");
    let shown = parse_str(&text, "node.toml").unwrap_err().to_string();
    assert_eq!(
        shown,
        "node.toml:2:11: cache.max_ttl: unknown unit `w` in `1w`: use ms, s, m, h or d"
    );
}

#[test]
fn unreadable_config_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_file(&dir.path().join("absent.toml")).unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert!(
        err.to_string().contains("absent.toml:1:1: cannot read"),
        "{err}"
    );
}

#[test]
fn embedded_default_listens_unprivileged_and_reads_resolv_conf() {
    let config = embedded_default().unwrap();
    assert_eq!(config.listen.addresses, [addr("127.0.0.1:5353")]);
    assert_eq!(config.cache.capacity, 10_000);
    assert_eq!(config.zones.len(), 1);
    assert_eq!(config.zones[0].name, ".");
    assert_eq!(
        config.zones[0].resolv_conf,
        Some(PathBuf::from("/etc/resolv.conf"))
    );
    assert_eq!(config.admin.address, Some(addr("127.0.0.1:9253")));
    assert_eq!(
        (config.log.format, config.log.level.as_str()),
        (LogFormat::Text, "info")
    );
}

/// The embedded default with every commented-out `key = value` and `[table]` switched on,
/// except the alternatives and examples that are not defaults.
fn uncommented_default() -> String {
    const EXAMPLES: [&str; 5] = ["upstreams", "cache", "snapshot", "socket", "max_qps"];
    let mut out = String::new();
    for line in DEFAULT_TOML.lines() {
        let body = line.strip_prefix("# ").unwrap_or("");
        let key = body.split(" = ").next().unwrap_or("");
        let is_setting = body.contains(" = ")
            && !key.is_empty()
            && key.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_');
        let is_table = body.starts_with('[') && body.ends_with(']') && !body.contains(' ');
        if (is_setting && !EXAMPLES.contains(&key)) || is_table {
            out.push_str(body);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn embedded_default_documents_the_real_defaults() {
    let text = uncommented_default();
    for switched_on in [
        "\n[forward]\n",
        "\nattempts = 3\n",
        "\nteardown_on_exit = false\n",
    ] {
        assert!(text.contains(switched_on), "{switched_on:?} not in\n{text}");
    }
    let documented = parse_str(&text, "uncommented").unwrap();
    assert_eq!(documented, embedded_default().unwrap());
}

#[test]
fn unknown_keys_and_wrong_types_are_reported_with_every_other_problem() {
    let diags = load_file(&fixtures("bad").join("structural_and_semantic.toml"))
        .unwrap_err()
        .0;
    let found: Vec<(usize, usize, &str)> = diags
        .iter()
        .map(|d| (d.line, d.column, d.key.as_str()))
        .collect();
    let expected = [
        (3, 34, "listen.addresses[1]"),
        (4, 11, "listen.workers"),
        (5, 1, "listen"),
        (8, 11, "cache.max_ttl"),
        (9, 1, "cache"),
        (12, 8, "zones[0].name"),
        (18, 28, "zones[1].cache"),
        (19, 10, "zones[1].policy"),
    ];
    assert_eq!(found, expected, "{diags:#?}");
    assert!(diags[2].reason.contains("unknown field `bogus`"));
    assert!(diags[4].reason.contains("unknown field `typo_key`"));
    assert!(diags[6].reason.contains("unknown field `nope`"));
}
