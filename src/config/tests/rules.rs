//! Rules checked on small TOML texts: addresses, zone names, TTL overrides, ordering, log.
#![allow(clippy::unwrap_used)]

use super::super::*;
use std::path::Path;

use super::{ZONE, addr, errors};

#[test]
fn loopback_port_zero_listener_forwards_to_loopback_upstream() {
    let text = format!(
        "[listen]\naddresses = [\"127.0.0.1:0\"]\n[admin]\naddress = \"127.0.0.1:0\"\n{ZONE}"
    );
    let config = parse_str(&text, "t").unwrap();
    assert_eq!(config.listen.addresses, [addr("127.0.0.1:0")]);
    assert_eq!(config.zones[0].upstreams, [addr("127.0.0.1:5300")]);
}

#[test]
fn empty_admin_address_disables_admin() {
    let config = parse_str(&format!("[admin]\naddress = \"\"\n{ZONE}"), "t").unwrap();
    assert_eq!(config.admin.address, None);
}

#[test]
fn admin_socket_is_off_unless_set_and_checked_where_written() {
    assert_eq!(parse_str(ZONE, "t").unwrap().admin.socket, None);
    let text = format!("[admin]\nsocket = \"/run/nodedns/admin.sock\"\n{ZONE}");
    let config = parse_str(&text, "t").unwrap();
    assert_eq!(
        config.admin.socket.as_deref(),
        Some(Path::new("/run/nodedns/admin.sock"))
    );
    for bad in [String::new(), format!("/{}", "a".repeat(107))] {
        let text = format!("[log]\nlevel = \"info\"\n[admin]\nsocket = \"{bad}\"\n{ZONE}");
        let d = &errors(&text)[0];
        assert_eq!(
            (d.line, d.column, d.key.as_str()),
            (4, 10, "admin.socket"),
            "{d:?}"
        );
    }
}

#[test]
fn search_suffixes_default_to_the_cluster_s_and_a_bad_one_is_named() {
    let wire = |name: &str| {
        let mut w = Vec::new();
        for label in name.trim_end_matches('.').split('.') {
            w.push(label.len() as u8);
            w.extend_from_slice(label.as_bytes());
        }
        w.push(0);
        w
    };
    let expansion = wire("registry.example.com.gitlab.svc.cluster.local.");
    let default = parse_str(ZONE, "t").unwrap().stats.search_suffixes;
    assert!(default.is_expansion(&expansion));
    let text = format!("[stats]\nsearch_suffixes = [\"corp.example\"]\n{ZONE}");
    let own = parse_str(&text, "t").unwrap().stats.search_suffixes;
    assert!(!own.is_expansion(&expansion));
    assert!(own.is_expansion(&wire("registry.example.com.corp.example.")));
    let text = format!("[stats]\nsearch_suffixes = [\"ok.example\", \"cluster..local\"]\n{ZONE}");
    let d = &errors(&text)[0];
    assert_eq!(
        (d.line, d.key.as_str()),
        (2, "stats.search_suffixes"),
        "{d:?}"
    );
    assert!(d.reason.contains("cluster..local"), "{d:?}");
}

#[test]
fn zone_names_are_lowercased_and_fully_qualified() {
    let text = "[[zones]]\nname = \"Cluster.Local\"\nupstreams = [\"127.0.0.1:5300\"]\n\
                [[zones]]\nname = \"10.in-addr.arpa.\"\nupstreams = [\"::1\"]\n";
    let config = parse_str(text, "t").unwrap();
    assert_eq!(config.zones[0].name, "cluster.local.");
    assert_eq!(config.zones[1].name, "10.in-addr.arpa.");
    assert_eq!(config.zones[1].upstreams, [addr("[::1]:53")]);
    for bad in ["", "..", "a..b", "a b", "é.example", &"a".repeat(64)] {
        assert!(normalize_zone_name(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn more_than_sixteen_upstreams_are_refused() {
    let list: Vec<String> = (1..=17).map(|i| format!("\"127.0.0.{i}\"")).collect();
    let text = format!(
        "[[zones]]\nname = \".\"\nupstreams = [{}]\n",
        list.join(", ")
    );
    let diags = errors(&text);
    assert_eq!(diags[0].key, "zones[0].upstreams");
    assert!(diags[0].reason.contains("17 upstreams"), "{:?}", diags[0]);
}

#[test]
fn resolv_conf_skips_own_listen_address_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.conf"),
        "nameserver 127.0.0.1\nnameserver ::1\n",
    )
    .unwrap();
    let text = "[listen]\naddresses = [\"127.0.0.1:53\"]\n\
                [[zones]]\nname = \".\"\nresolv_conf = \"r.conf\"\n";
    let config = parse_str_in(text, "t", dir.path()).unwrap();
    assert_eq!(config.zones[0].upstreams, [addr("[::1]:53")]);
}

#[test]
fn zone_ttl_overrides_are_checked_like_global_ones() {
    let text = format!("{ZONE}cache = {{ min_ttl = \"1.5s\", servfail_ttl = \"6m\" }}\n");
    let keys: Vec<String> = errors(&text).into_iter().map(|d| d.key).collect();
    assert_eq!(
        keys,
        ["zones[0].cache.min_ttl", "zones[0].cache.servfail_ttl"]
    );
}

#[test]
fn attempt_timeouts_must_be_ordered() {
    let text = format!("[forward]\nmin_attempt_timeout = \"2s\"\n{ZONE}");
    let d = &errors(&text)[0];
    assert_eq!((d.line, d.key.as_str()), (2, "forward.min_attempt_timeout"));
    assert!(
        d.reason
            .contains("above forward.initial_attempt_timeout (500ms)"),
        "{d:?}"
    );
}

#[test]
fn log_settings_are_checked() {
    let text = format!("[log]\nformat = \"xml\"\nlevel = \"info,==\"\nqueries = 1.5\n{ZONE}");
    let keys: Vec<String> = errors(&text).into_iter().map(|d| d.key).collect();
    assert_eq!(keys, ["log.format", "log.level", "log.queries"]);
    let ok = format!("[log]\nlevel = \"nodedns=debug,warn\"\nqueries = 1\n{ZONE}");
    assert_eq!(parse_str(&ok, "t").unwrap().log.queries, 1.0);
}

/// Found by the `config` fuzz target: a level with a multi-byte character inside a target's
/// brackets panicked in tracing-subscriber's directive parser, so `check-config` crashed and
/// a reload took the process down.
#[test]
fn a_log_level_outside_ascii_is_an_error_not_a_panic() {
    let level = " Ev`r:[zo:::::::::::::\u{190}]:[}::{=::::_:\u{190}`:=:}[{:::check_int:0(_=";
    let text = format!("[log]\nlevel = \"{level}\"\n{ZONE}");
    let d = &errors(&text)[0];
    assert_eq!(d.key, "log.level");
    assert!(d.reason.contains("ASCII"), "{d:?}");
}

/// Also found by the `config` fuzz target: a field filter whose pattern took tracing-subscriber
/// over a minute to build, so `check-config` and a reload hung.
#[test]
fn a_log_level_with_span_or_field_filters_is_refused_before_it_is_parsed() {
    let dots = ".".repeat(69);
    let level = format!(" Ev`r:[zo::::::'Q::{{Q=:VQN{dots}Q/QPQQQQQQQQzQQQQQQ`:=:}}[{{::::0(_=");
    for level in [level.as_str(), "[span{field=x}]=debug", "info warn"] {
        let text = format!("[log]\nlevel = \"{level}\"\n{ZONE}");
        let d = &errors(&text)[0];
        assert_eq!(d.key, "log.level", "{level}");
        assert!(d.reason.contains("span and field filters"), "{d:?}");
    }
    for ok in ["info", "nodedns=debug,warn", "nodedns::forward=trace,info"] {
        let text = format!("[log]\nlevel = \"{ok}\"\n{ZONE}");
        assert_eq!(parse_str(&text, "t").unwrap().log.level, ok);
    }
}

#[test]
fn wrong_types_and_missing_names_point_at_the_zone() {
    let d = &errors("[[zones]]\nupstreams = [\"127.0.0.1\"]\n")[0];
    assert_eq!((d.line, d.key.as_str()), (1, "zones[0].name"));
    assert!(d.reason.contains("missing field `name`"), "{d:?}");
    let d = &errors(&format!("[cache]\ncapacity = \"lots\"\n{ZONE}"))[0];
    assert_eq!(
        (d.line, d.column, d.key.as_str()),
        (2, 12, "cache.capacity")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Any text, however broken, gives a config or diagnostics, never a panic.
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_str(&text, "fuzz");
    }

    /// The embedded default with a byte range cut out or replaced still never panics, and every
    /// diagnostic points inside the text.
    #[test]
    fn damaged_default_never_panics(start in 0usize..4000, len in 0usize..40, with in "[ =\"\\[\\]a-z0-9.,{}\n]{0,4}") {
        let mut text = DEFAULT_TOML.to_owned();
        let start = start.min(text.len());
        let end = (start + len).min(text.len());
        if text.is_char_boundary(start) && text.is_char_boundary(end) {
            text.replace_range(start..end, &with);
        }
        if let Err(e) = parse_str(&text, "fuzz") {
            proptest::prop_assert!(!e.0.is_empty());
            let lines = text.lines().count() + 1;
            for d in &e.0 {
                proptest::prop_assert!(d.line >= 1 && d.line <= lines && d.column >= 1, "{d:?}");
            }
        }
    }
}

#[test]
fn interface_fallback_is_a_link_name_or_empty() {
    let with = |v: &str| parse_str(&format!("[interface]\nfallback = {v:?}\n{ZONE}"), "t");
    assert_eq!(with("eth0").unwrap().interface.fallback, "eth0");
    assert_eq!(with("").unwrap().interface.fallback, "");
    let diags = errors(&format!("[interface]\nfallback = \"no such/link\"\n{ZONE}"));
    assert_eq!(diags[0].key, "interface.fallback", "{diags:?}");
}

#[test]
fn zone_probe_defaults_to_the_apex_and_takes_name_and_type() {
    let text = "[[zones]]\nname = \"Cluster.Local\"\nupstreams = [\"127.0.0.1:5300\"]\n\
                [[zones]]\nname = \".\"\nupstreams = [\"::1\"]\n\
                [[zones]]\nname = \"svc.test\"\nupstreams = [\"::1\"]\n\
                probe = \"Kubernetes.Default.svc.cluster.local aaaa\"\n";
    let config = parse_str(text, "t").unwrap();
    let probes: Vec<String> = config.zones.iter().map(|z| z.probe.to_string()).collect();
    assert_eq!(
        probes,
        [
            "cluster.local. SOA",
            ". NS",
            "kubernetes.default.svc.cluster.local. AAAA"
        ]
    );
}

#[test]
fn a_bad_probe_names_its_line_and_what_is_wrong() {
    for (probe, reason) in [
        ("example.com", "not `NAME TYPE`"),
        ("example.com. A extra", "not `NAME TYPE`"),
        ("example.com. BOGUS", "not a record type"),
        ("example.com. AXFR", "not a record type"),
        ("a..b A", "empty label"),
    ] {
        let text = format!("[[zones]]\nname = \".\"\nupstreams = [\"::1\"]\nprobe = \"{probe}\"\n");
        let diags = errors(&text);
        assert_eq!(diags.len(), 1, "{probe}: {diags:?}");
        assert_eq!(diags[0].key, "zones[0].probe");
        assert_eq!(diags[0].line, 4);
        assert!(diags[0].reason.contains(reason), "{probe}: {:?}", diags[0]);
    }
}

#[test]
fn zone_max_qps_is_off_by_default_and_a_positive_number() {
    let text = "[[zones]]\nname = \".\"\nupstreams = [\"::1\"]\nmax_qps = 900\n\
                [[zones]]\nname = \"test\"\nupstreams = [\"::1\"]\nmax_qps = 2.5\n\
                [[zones]]\nname = \"cluster.local\"\nupstreams = [\"::1\"]\n";
    let config = parse_str(text, "t").unwrap();
    let budgets: Vec<Option<f64>> = config.zones.iter().map(|z| z.max_qps).collect();
    assert_eq!(budgets, [Some(900.0), Some(2.5), None]);
    for bad in ["0", "-5", "nan", "inf", "2e9", "\"900\""] {
        let text = format!("[[zones]]\nname = \".\"\nupstreams = [\"::1\"]\nmax_qps = {bad}\n");
        let diags = errors(&text);
        assert_eq!(diags.len(), 1, "{bad}: {diags:?}");
        assert_eq!(diags[0].key, "zones[0].max_qps", "{bad}: {diags:?}");
        assert_eq!(diags[0].line, 4, "{bad}");
    }
}

#[test]
fn intercepted_addresses_are_listened_on_at_port_53() {
    let cfg = parse_str(
        "[listen]\naddresses = [\"169.254.20.10:53\"]\n\
         [interface]\nmanage = true\nintercept = [\"198.19.0.10\", \"fd00::10\"]\n\
         instance_lock = \"/run/test/lock\"\n\
         [[zones]]\nname = \".\"\nupstreams = [\"198.18.0.1\"]\n",
        "test.toml",
    )
    .unwrap();
    assert_eq!(
        cfg.listen.addresses,
        [
            addr("169.254.20.10:53"),
            addr("198.19.0.10:53"),
            addr("[fd00::10]:53")
        ]
    );
    assert_eq!(cfg.interface.intercept.len(), 2);
    assert_eq!(
        cfg.interface.instance_lock,
        std::path::PathBuf::from("/run/test/lock")
    );
}

#[test]
fn forwarding_to_an_intercepted_address_is_refused_with_the_fix() {
    let errs = errors(
        "[interface]\nmanage = true\nintercept = [\"198.19.0.10\"]\n\
         [[zones]]\nname = \"cluster.local\"\nupstreams = [\"198.19.0.10:53\"]\n\
         [[zones]]\nname = \".\"\nupstreams = [\"198.19.0.10:5353\"]\n",
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    for (e, line) in errs.iter().zip([6, 9]) {
        assert_eq!(e.line, line, "{e:?}");
        assert!(e.key.ends_with(".upstreams"), "{e:?}");
        assert!(e.reason.contains("kube-dns-upstream"), "{e:?}");
    }
}

#[test]
fn intercept_is_refused_without_manage_or_with_a_port() {
    let errs = errors(&format!(
        "[interface]\nintercept = [\"198.19.0.10:53\", \"127.0.0.1\"]\n{ZONE}"
    ));
    let reasons: Vec<&str> = errs.iter().map(|e| e.reason.as_str()).collect();
    assert_eq!(errs.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("give the address alone")));
    assert!(reasons.iter().any(|r| r.contains("not a Service address")));
    assert!(reasons.iter().any(|r| r.contains("needs `manage = true`")));
}

#[test]
fn an_upstream_names_an_environment_variable_and_a_missing_one_is_located() {
    let text = "[[zones]]\nname = \"cluster.local\"\n\
                upstreams = [\"${KUBE_DNS_UPSTREAM_SERVICE_HOST}:53\"]\n";
    let env =
        |name: &str| (name == "KUBE_DNS_UPSTREAM_SERVICE_HOST").then(|| "198.19.0.53".to_owned());
    let cfg =
        super::super::parse_str_with_env(text, "t.toml", std::path::Path::new(""), &env).unwrap();
    assert_eq!(cfg.zones[0].upstreams, [addr("198.19.0.53:53")]);
    let none = |_: &str| None;
    let err = super::super::parse_str_with_env(text, "t.toml", std::path::Path::new(""), &none)
        .unwrap_err()
        .0;
    assert_eq!((err[0].line, err[0].column), (3, 14), "{err:?}");
    assert_eq!(err[0].key, "zones[0].upstreams");
    assert!(
        err[0]
            .reason
            .contains("KUBE_DNS_UPSTREAM_SERVICE_HOST` is not set")
    );
}
