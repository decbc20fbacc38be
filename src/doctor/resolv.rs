//! A pod's resolv.conf, read the way glibc reads it, and what one lookup through it costs.
//!
//! Two questions: does the pod ask nodedns at all (its `nameserver`), and how many queries does
//! one lookup of an external name send, given `search` and `ndots`. The count is
//! [`lookup_cost`], a pure function of the file's settings.

use std::net::{IpAddr, SocketAddr};

use super::report::Verdict;
use crate::config::resolv::nameservers;

/// glibc's default and ceiling for `ndots` (resolv.conf(5)).
const DEFAULT_NDOTS: u8 = 1;
const MAX_NDOTS: u8 = 15;

/// The settings of a resolv.conf that decide where and how often a lookup asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    /// The search list; `domain` and `search` replace each other, the last one wins.
    pub search: Vec<String>,
    pub ndots: u8,
}

impl ResolvConf {
    /// Parses the text as glibc `res_init` does for the keys that matter here.
    pub fn parse(text: &str) -> ResolvConf {
        let mut search = Vec::new();
        let mut ndots = DEFAULT_NDOTS;
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("search" | "domain") => {
                    search = words.map(|w| w.trim_end_matches('.').to_owned()).collect();
                }
                Some("options") => {
                    for option in words {
                        if let Some(n) = option.strip_prefix("ndots:") {
                            // glibc caps ndots at 15 and ignores what does not parse.
                            if let Ok(n) = n.parse::<u32>() {
                                ndots =
                                    u8::try_from(n.min(u32::from(MAX_NDOTS))).unwrap_or(MAX_NDOTS);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        ResolvConf {
            nameservers: nameservers(text),
            search,
            ndots,
        }
    }
}

/// What one `getaddrinfo` of a name costs when the name exists as given and under no search
/// domain (an external name such as a registry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// The names asked, in order.
    pub names: Vec<String>,
    /// Queries sent: two per name (A and AAAA, as `getaddrinfo` with `AF_UNSPEC` asks).
    pub queries: usize,
}

/// The names glibc's `res_nsearch` tries for `name`, and the queries that makes.
///
/// A trailing dot makes the name absolute: asked once, no search. Otherwise, with fewer dots
/// than `ndots` the search list is tried first and the name as given last; with at least
/// `ndots` dots the name as given is tried first, and as it exists the search list is never
/// reached.
pub fn lookup_cost(name: &str, ndots: u8, search: &[String]) -> Cost {
    let names = if let Some(absolute) = name.strip_suffix('.') {
        vec![format!("{absolute}.")]
    } else {
        let dots = name.matches('.').count();
        let as_given = format!("{name}.");
        if dots >= usize::from(ndots) {
            vec![as_given]
        } else {
            let mut names: Vec<String> = search.iter().map(|d| format!("{name}.{d}.")).collect();
            names.push(as_given);
            names
        }
    };
    Cost {
        queries: names.len() * 2,
        names,
    }
}

/// The verdicts for a pod's resolv.conf: where it points, and what each of `names` costs.
pub fn check(path: &str, text: &str, listen: &[SocketAddr], names: &[String]) -> Vec<Verdict> {
    let conf = ResolvConf::parse(text);
    let mut verdicts = vec![nameserver_verdict(path, &conf, listen)];
    let examples: Vec<String> = if names.is_empty() {
        vec!["registry.example.com".to_owned()]
    } else {
        names.to_vec()
    };
    for name in &examples {
        verdicts.push(cost_verdict(&conf, name));
    }
    verdicts
}

fn nameserver_verdict(path: &str, conf: &ResolvConf, listen: &[SocketAddr]) -> Verdict {
    let check = format!("resolv.conf {path} nameserver");
    let ours: Vec<SocketAddr> = listen.iter().filter(|a| a.port() == 53).copied().collect();
    let shown = |list: &[IpAddr]| {
        let words: Vec<String> = list.iter().map(ToString::to_string).collect();
        if words.is_empty() {
            "none".to_owned()
        } else {
            words.join(", ")
        }
    };
    let servers = shown(&conf.nameservers);
    let listen_ips: Vec<IpAddr> = listen.iter().map(SocketAddr::ip).collect();
    let fix_point = format!(
        "make the pod's first nameserver {} (Kubernetes: dnsPolicy None with dnsConfig \
         nameservers; GitLab Runner: dns_policy = \"none\" and [runners.kubernetes.dns_config] \
         nameservers)",
        shown(&listen_ips)
    );
    if ours.is_empty() {
        return Verdict::fail(
            check,
            format!(
                "nameserver {servers}; nodedns listens on no port-53 address ({}), and \
                 resolv.conf cannot name another port",
                shown(&listen_ips)
            ),
            "listen on port 53 (e.g. 169.254.20.10:53) in [listen] addresses",
        );
    }
    match conf
        .nameservers
        .iter()
        .position(|ip| ours.iter().any(|a| a.ip() == *ip))
    {
        Some(0) => Verdict::ok(check, format!("nameserver {servers}: first is nodedns")),
        Some(_) => Verdict::warn(
            check,
            format!(
                "nameserver {servers}: nodedns is listed but not first, so it is asked only after the others time out"
            ),
            fix_point,
        ),
        None => Verdict::fail(
            check,
            format!("nameserver {servers}: none is a nodedns listen address"),
            fix_point,
        ),
    }
}

fn cost_verdict(conf: &ResolvConf, name: &str) -> Verdict {
    let cost = lookup_cost(name, conf.ndots, &conf.search);
    let check = format!("resolv.conf lookup cost of {name}");
    let search = if conf.search.is_empty() {
        "no search domains".to_owned()
    } else {
        format!("{} search domain(s)", conf.search.len())
    };
    let evidence = format!(
        "ndots:{} with {search}: `{name}` costs {} queries ({} name(s) x A+AAAA: {})",
        conf.ndots,
        cost.queries,
        cost.names.len(),
        cost.names.join(" ")
    );
    if cost.names.len() == 1 {
        return Verdict::ok(check, evidence);
    }
    Verdict::warn(
        check,
        evidence,
        "the search list is tried first because the name has fewer dots than ndots; set \
         options ndots:2 in the pod's dnsConfig, or write the name with a trailing dot",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::doctor::report::Status;

    fn search(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    const K8S: [&str; 3] = [
        "gitlab.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
    ];

    #[test]
    fn query_counts_follow_glibc() {
        // (name, ndots, search list, expected queries, first name asked)
        let table: &[(&str, u8, &[&str], usize, &str)] = &[
            (
                "registry.example.com",
                5,
                &K8S,
                8,
                "registry.example.com.gitlab.svc.cluster.local.",
            ),
            ("registry.example.com", 2, &K8S, 2, "registry.example.com."),
            ("registry.example.com.", 5, &K8S, 2, "registry.example.com."),
            ("a.b.c.d.example.com", 5, &K8S, 2, "a.b.c.d.example.com."),
            (
                "a.b.c.example.com",
                5,
                &K8S,
                8,
                "a.b.c.example.com.gitlab.svc.cluster.local.",
            ),
            ("registry.example.com", 5, &[], 2, "registry.example.com."),
            (
                "registry.example.com",
                5,
                &["corp.example"],
                4,
                "registry.example.com.corp.example.",
            ),
            ("example.com", 2, &["a", "b"], 6, "example.com.a."),
            (
                "localhost",
                1,
                &["svc.cluster.local"],
                4,
                "localhost.svc.cluster.local.",
            ),
            ("registry.example.com", 1, &K8S, 2, "registry.example.com."),
        ];
        for &(name, ndots, list, queries, first) in table {
            let cost = lookup_cost(name, ndots, &search(list));
            assert_eq!(cost.queries, queries, "{name} ndots:{ndots} {list:?}");
            assert_eq!(cost.names[0], first, "{name} ndots:{ndots} {list:?}");
            assert_eq!(cost.queries, cost.names.len() * 2);
        }
    }

    #[test]
    fn below_ndots_the_name_as_given_is_asked_last() {
        let cost = lookup_cost("registry.example.com", 5, &search(&K8S));
        assert_eq!(cost.names.last().unwrap(), "registry.example.com.");
    }

    #[test]
    fn parses_search_ndots_and_the_last_of_domain_or_search() {
        let conf = ResolvConf::parse(
            "domain old.example\nnameserver 169.254.20.10 # node\n\
             search gitlab.svc.cluster.local svc.cluster.local cluster.local\n\
             options timeout:1 ndots:5 attempts:2\nnameserver 10.96.0.10\n",
        );
        assert_eq!(conf.search, search(&K8S));
        assert_eq!(conf.ndots, 5);
        assert_eq!(conf.nameservers.len(), 2);
        let capped = ResolvConf::parse("options ndots:40\n");
        assert_eq!(capped.ndots, 15);
        assert_eq!(ResolvConf::parse("").ndots, 1);
    }

    #[test]
    fn nameserver_must_be_a_listen_address_first() {
        let listen: Vec<SocketAddr> = vec!["169.254.20.10:53".parse().unwrap()];
        let at = |text: &str| check("pod", text, &listen, &[])[0].status;
        assert_eq!(at("nameserver 169.254.20.10\n"), Status::Ok);
        assert_eq!(
            at("nameserver 10.96.0.10\nnameserver 169.254.20.10\n"),
            Status::Warn
        );
        assert_eq!(at("nameserver 10.96.0.10\n"), Status::Fail);
        let high: Vec<SocketAddr> = vec!["127.0.0.1:5353".parse().unwrap()];
        assert_eq!(
            check("pod", "nameserver 127.0.0.1\n", &high, &[])[0].status,
            Status::Fail
        );
    }

    #[test]
    fn the_cost_line_explains_the_count() {
        let text = "nameserver 169.254.20.10\nsearch gitlab.svc.cluster.local svc.cluster.local \
                    cluster.local\noptions ndots:5\n";
        let listen: Vec<SocketAddr> = vec!["169.254.20.10:53".parse().unwrap()];
        let names = vec!["registry.example.com".to_owned()];
        let v = &check("pod", text, &listen, &names)[1];
        assert_eq!(v.status, Status::Warn);
        assert!(
            v.evidence.starts_with(
                "ndots:5 with 3 search domain(s): `registry.example.com` costs 8 queries"
            ),
            "{}",
            v.evidence
        );
        let two = text.replace("ndots:5", "ndots:2");
        let v = &check("pod", &two, &listen, &names)[1];
        assert_eq!(v.status, Status::Ok);
        assert!(v.evidence.contains("costs 2 queries"), "{}", v.evidence);
    }
}
