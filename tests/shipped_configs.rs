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

/// What the kubelet gives nodedns: the `kube-dns-upstream` Service's ClusterIP (any
/// `<SERVICE>_SERVICE_HOST` of the docs' examples gets the same stand-in).
fn kubelet_env(name: &str) -> Option<String> {
    match name {
        // The kube-dns Service itself, which transparent mode takes over.
        "KUBE_DNS_SERVICE_HOST" => Some("198.19.96.10".to_owned()),
        _ => name
            .ends_with("_SERVICE_HOST")
            .then(|| "198.19.0.53".to_owned()),
    }
}

/// The DaemonSet's config as the pod sees it: the kubelet's variables set, and the node's
/// files (mounted under `/host/`) in a temporary root: a systemd-resolved node, whose
/// resolv.conf names the stub and whose resolved file names 192.0.2.1.
fn load_daemonset_config() -> config::Config {
    load_shipped("daemonset/nodedns.toml")
}

/// [`load_daemonset_config`] for the config at `rel`.
fn load_shipped(rel: &str) -> config::Config {
    let node = tempfile::tempdir().unwrap();
    let host = node.path();
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::create_dir_all(host.join("run/systemd/resolve")).unwrap();
    fs::write(host.join("etc/resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    fs::write(
        host.join("run/systemd/resolve/resolv.conf"),
        "nameserver 192.0.2.1\n",
    )
    .unwrap();
    let text = read(rel).replace("\"/host/", &format!("\"{}/", host.display()));
    config::parse_str_with_env(&text, rel, &root().join("daemonset"), &kubelet_env)
        .unwrap_or_else(|e| panic!("{rel}:\n{e}"))
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
    let cfg = load_daemonset_config();
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
        // Through the kube-dns-upstream Service, found by the kubelet's variable.
        assert_eq!(
            zone.upstreams,
            ["198.19.0.53:53".parse().unwrap()],
            "{name}"
        );
    }
    let root_zone = cfg
        .zones
        .iter()
        .find(|z| z.name == ".")
        .expect("no root zone");
    // The node's resolvers, through the mounted resolv.conf and systemd-resolved's file.
    assert_eq!(root_zone.upstreams, ["192.0.2.1:53".parse().unwrap()]);
    assert_eq!(cfg.admin.address.map(|a| a.port()), Some(9253));
    assert!(
        cfg.admin.socket.is_some(),
        "the exec probes need [admin] socket"
    );
}

#[test]
fn daemonset_agrees_with_its_config() {
    let cfg = load_daemonset_config();
    let ds = read("daemonset/daemonset.yaml");
    // The node's resolv.conf and systemd-resolved's directory, read-only, where the config
    // reads them (the test above resolves through exactly these paths).
    for (mount, host_path) in [
        ("/host/etc/resolv.conf", "/etc/resolv.conf"),
        ("/host/run/systemd/resolve", "/run/systemd/resolve"),
    ] {
        let name = mount_name(&ds, mount).unwrap_or_else(|| panic!("no volumeMount at {mount}"));
        let at = &ds[ds.find(&format!("mountPath: {mount}")).unwrap()..];
        assert_eq!(
            at.lines().nth(1).map(str::trim),
            Some("readOnly: true"),
            "{mount}"
        );
        let volumes = &ds[ds.find("      volumes:").expect("volumes")..];
        let volume = &volumes[volumes.find(&format!("- name: {name}")).unwrap()..];
        assert_eq!(yaml_value(volume, "path"), Some(host_path), "{name}");
    }
    let svc = read("daemonset/service-kube-dns-upstream.yaml");
    assert_eq!(yaml_value(&svc, "name"), Some("kube-dns-upstream"));
    assert_eq!(yaml_value(&svc, "k8s-app"), Some("kube-dns"));
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
    assert_eq!(socket, Path::new(nodedns::admin_client::DEFAULT_SOCKET));
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
        "enableServiceLinks: true",
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
        "service-kube-dns-upstream.yaml",
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
            if let Err(e) = config::parse_str_with_env(&block, &origin, Path::new(""), &kubelet_env)
            {
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

#[test]
fn the_transparent_component_is_the_base_config_plus_interception() {
    let base = read("daemonset/nodedns.toml");
    let transparent = read("daemonset/transparent/nodedns.toml");
    // Every line of the base is there, in order; what is added is comments and the two keys.
    let mut base_lines = base.lines().peekable();
    let mut added = Vec::new();
    for line in transparent.lines() {
        if base_lines.peek() == Some(&line) {
            base_lines.next();
        } else {
            added.push(line);
        }
    }
    assert_eq!(
        base_lines.next(),
        None,
        "transparent/nodedns.toml lost a base line"
    );
    let keys: Vec<&&str> = added
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        keys,
        [
            &"intercept = [\"${KUBE_DNS_SERVICE_HOST}\"]",
            &"instance_lock = \"/run/nodedns-node/instances.lock\""
        ]
    );
    let cfg = load_shipped("daemonset/transparent/nodedns.toml");
    assert_eq!(
        cfg.interface.intercept,
        ["198.19.96.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(
        cfg.listen
            .addresses
            .contains(&"198.19.96.10:53".parse().unwrap())
    );
    // The lock's directory is the host directory the component mounts.
    let patch = read("daemonset/transparent/daemonset-patch.yaml");
    let dir = cfg
        .interface
        .instance_lock
        .parent()
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(yaml_value(&patch, "mountPath"), Some(dir));
    assert_eq!(yaml_value(&patch, "path"), Some(dir));
    let k = read("daemonset/transparent/kustomization.yaml");
    assert!(k.contains("kind: Component") && k.contains("behavior: replace"));
}

/// Warm rollouts need the snapshot on a volume that outlives the pod and that the next pod
/// on the node sees: a hostPath mounted at the snapshot's directory.
#[test]
fn daemonset_keeps_the_cache_snapshot_on_a_host_path_and_runs_on_linux_only() {
    let cfg = load_shipped("daemonset/nodedns.toml");
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
