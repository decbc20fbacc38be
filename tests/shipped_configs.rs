//! What ships beside the binary stays valid: the DaemonSet's config and every nodedns
//! config in the docs pass the same validation as `nodedns check-config`, and the
//! manifests agree with the config (files referenced, probes, grace period, memory).
//!
//! A fenced block whose info string is exactly `toml` is a nodedns config and is checked;
//! TOML for other programs is fenced with a second word (```` ```toml gitlab-runner ````).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nodedns::config::{self, Transport};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The value after `key:` on the first line that has it (YAML read as lines: the
/// manifests are plain, one key per line).
fn yaml_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().trim_matches('"'))
}

/// The `name` of the volumeMount whose `mountPath` is `path` (the line before it).
fn mount_name(ds: &str, path: &str) -> Option<String> {
    let lines: Vec<&str> = ds.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == format!("mountPath: {path}"))?;
    let before = lines.get(at.checked_sub(1)?)?.trim();
    Some(before.strip_prefix("- name:")?.trim().to_owned())
}

/// The nodedns configs in a Markdown file: fenced blocks opened by exactly ```` ```toml ````.
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match current.as_mut() {
            None if line.trim() == "```toml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    blocks
}

#[test]
fn daemonset_config_is_valid_and_routes_cluster_zones_to_kube_dns_over_tcp() {
    let cfg = config::load_file(&root().join("daemonset/nodedns.toml")).unwrap();
    assert!(cfg.interface.manage);
    assert!(
        !cfg.interface.teardown_on_exit,
        "a rollout would remove the successor's address"
    );
    assert_eq!(cfg.listen.addresses, ["169.254.20.10:53".parse().unwrap()]);
    for name in ["cluster.local.", "in-addr.arpa.", "ip6.arpa."] {
        let zone = cfg
            .zones
            .iter()
            .find(|z| z.name == name)
            .unwrap_or_else(|| panic!("no zone {name}"));
        assert_eq!(zone.transport, Transport::Tcp, "{name}");
    }
    assert!(cfg.zones.iter().any(|z| z.name == "."), "no root zone");
    assert_eq!(cfg.admin.address.map(|a| a.port()), Some(9253));
    assert!(
        cfg.admin.socket.is_some(),
        "the exec probes need [admin] socket"
    );
}

#[test]
fn daemonset_agrees_with_its_config() {
    let cfg = config::load_file(&root().join("daemonset/nodedns.toml")).unwrap();
    let ds = read("daemonset/daemonset.yaml");
    // The pod gets time to drain before the kubelet's SIGKILL.
    let grace: u64 = yaml_value(&ds, "terminationGracePeriodSeconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(Duration::from_secs(grace) > cfg.listen.drain_timeout + Duration::from_secs(5));
    // The memory limit leaves room beyond the cache's own bound.
    let limits = &ds[ds.find("limits:").expect("resource limits")..];
    let limit_mi: u64 = yaml_value(limits, "memory")
        .and_then(|m| m.strip_suffix("Mi")?.parse().ok())
        .expect("a memory limit in Mi");
    let limit = limit_mi << 20;
    assert!(
        limit >= 3 * cfg.cache.max_bytes,
        "limit {limit} for max_bytes {}",
        cfg.cache.max_bytes
    );
    // Probes: `nodedns probe live|ready`, over the socket the config names, in a volume of
    // the pod's own (an emptyDir) mounted where the socket lives.
    let socket = cfg
        .admin
        .socket
        .expect("[admin] socket for the exec probes");
    assert_eq!(socket, Path::new(nodedns::admin::probe::DEFAULT_SOCKET));
    for (probe, what) in [("livenessProbe:", "live"), ("readinessProbe:", "ready")] {
        let at = &ds[ds.find(probe).unwrap_or_else(|| panic!("no {probe}"))..];
        let command = yaml_value(at, "command").unwrap_or_else(|| panic!("{probe}: no command"));
        assert_eq!(
            command,
            format!("[\"/nodedns\", \"probe\", \"{what}\"]"),
            "{probe}"
        );
    }
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("ENTRYPOINT [\"/nodedns\"]"),
        "the probes exec /nodedns"
    );
    let dir = socket.parent().unwrap().to_str().unwrap();
    let name = mount_name(&ds, dir).expect("the socket's volumeMount has a name");
    let volumes = &ds[ds.find("      volumes:").expect("volumes")..];
    let volume = &volumes[volumes
        .find(&format!("- name: {name}"))
        .expect("the socket's volume")..];
    let next = volume.lines().nth(1).unwrap_or_default();
    assert_eq!(next.trim(), "emptyDir: {}", "the socket's volume: {volume}");
    for must in [
        "hostNetwork: true",
        "dnsPolicy: Default",
        "priorityClassName: system-node-critical",
        "maxSurge: 1",
        "maxUnavailable: 0",
        "readOnlyRootFilesystem: true",
        "- operator: Exists",
    ] {
        assert!(ds.contains(must), "daemonset.yaml lacks `{must}`");
    }
    // A declared port is a hostPort under hostNetwork: the surge pod could not schedule.
    assert!(
        !ds.contains("containerPort"),
        "containerPort would block maxSurge"
    );
}

#[test]
fn kustomization_references_files_that_exist() {
    let dir = root().join("daemonset");
    let k = read("daemonset/kustomization.yaml");
    let listed: Vec<&str> = k
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|v| v.ends_with(".yaml") || v.ends_with(".toml"))
        .collect();
    assert!(listed.len() >= 4, "{listed:?}");
    for file in &listed {
        assert!(
            Path::new(&dir.join(file)).is_file(),
            "kustomization.yaml lists missing {file}"
        );
    }
    for file in [
        "serviceaccount.yaml",
        "daemonset.yaml",
        "service-metrics.yaml",
        "nodedns.toml",
    ] {
        assert!(
            listed.contains(&file),
            "kustomization.yaml does not list {file}"
        );
    }
    // The generated ConfigMap is the one the DaemonSet mounts.
    let ds = read("daemonset/daemonset.yaml");
    let volume = &ds[ds.find("configMap:").unwrap()..];
    assert_eq!(
        yaml_value(volume, "name"),
        yaml_value(&k[k.find("configMapGenerator:").unwrap()..], "- name")
    );
}

#[test]
fn every_nodedns_config_in_the_docs_is_valid() {
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.extend(["README.md", "daemonset/README.md"].map(|f| root().join(f)));
    let mut checked = 0;
    for file in files {
        let text = fs::read_to_string(&file).unwrap();
        for (line, block) in toml_blocks(&text) {
            let origin = format!("{}:{line}", file.display());
            if let Err(e) = config::parse_str(&block, &origin) {
                panic!("{origin}: invalid config:\n{e}\n---\n{block}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 1, "no ```toml block found in the docs");
}

#[test]
fn toml_blocks_are_found_only_when_fenced_as_plain_toml() {
    let md = "a\n```toml\n[listen]\n```\n```toml gitlab-runner\n[[runners]]\n```\n```\nx\n```\n";
    let blocks = toml_blocks(md);
    assert_eq!(blocks, [(2, "[listen]\n".to_owned())]);
}

/// Warm rollouts need the snapshot on a volume that outlives the pod and that the next pod
/// on the node sees: a hostPath mounted at the snapshot's directory.
#[test]
fn daemonset_keeps_the_cache_snapshot_on_a_host_path_and_runs_on_linux_only() {
    let cfg = config::load_file(&root().join("daemonset/nodedns.toml")).unwrap();
    let ds = read("daemonset/daemonset.yaml");
    let snapshot = cfg
        .cache
        .snapshot
        .expect("[cache] snapshot in the shipped config");
    assert!(
        !cfg.cache.snapshot_interval.is_zero(),
        "periodic snapshots are on"
    );
    let dir = snapshot.parent().unwrap().to_str().unwrap();
    let name = mount_name(&ds, dir).expect("a volumeMount at the snapshot's directory");
    let volumes = &ds[ds.find("      volumes:").expect("volumes")..];
    let volume = &volumes[volumes
        .find(&format!("- name: {name}"))
        .expect("the snapshot's volume")..];
    let mut lines = volume.lines().skip(1).map(str::trim);
    assert_eq!(lines.next(), Some("hostPath:"), "{volume}");
    assert_eq!(
        lines.next(),
        Some(format!("path: {dir}").as_str()),
        "{volume}"
    );
    assert!(
        ds.contains("nodeSelector:\n        kubernetes.io/os: linux"),
        "daemonset.yaml lacks the linux nodeSelector"
    );
}
