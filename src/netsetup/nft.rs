//! The nftables tables nodedns owns: what they hold, built by pure functions, and loaded over
//! netlink ([`super::nfnl`]) so the image needs no `nft` binary.
//!
//! - `inet nodedns` (`[interface] notrack = true`): DNS to a node-local cache is many short
//!   flows; tracking each one fills the conntrack table (and UDP entries racing between two
//!   sockets are a known source of lost replies), so NodeLocal DNSCache skips conntrack for
//!   its address. `notrack` for DNS to and from each listen address, and `accept` for the
//!   same traffic just before the usual filter priority. Nothing depends on it: without it
//!   DNS still works, tracked.
//! - `inet nodedns-intercept` (`[interface] intercept`): `notrack` in the raw hooks for DNS
//!   to and from each intercepted address (the kube-dns ClusterIP). kube-proxy's DNAT, in
//!   iptables or nftables mode, needs conntrack, so it never sees these packets, and the
//!   kernel delivers them to nodedns, which carries the address. Without this table the
//!   ClusterIP goes to kube-dns through kube-proxy again.
//!
//! Each table is replaced whole in one transaction, so applying twice gives the same state.
//! In nftables an `accept` ends only this table's evaluation of the hook; another table's
//! `drop` still wins.

use std::net::{IpAddr, SocketAddr};

pub use super::nfnl::Table;
use super::nfnl::{self, Chain, End, Hook, PRIORITY_FILTER, PRIORITY_RAW, Rule, Verdict};

/// The NOTRACK table for the listen addresses.
pub const TABLE: &str = "nodedns";
/// The interception table.
pub const INTERCEPT_TABLE: &str = "nodedns-intercept";

/// The port intercepted addresses are served on: the kube-dns Service's.
pub const DNS_PORT: u16 = 53;

const PROTOCOLS: [u8; 2] = [libc::IPPROTO_UDP as u8, libc::IPPROTO_TCP as u8];

/// One rule per protocol for `ip`/`port` at `end`.
fn rules(end: End, ip: IpAddr, port: u16, verdict: Verdict) -> impl Iterator<Item = Rule> {
    PROTOCOLS.into_iter().map(move |l4proto| Rule {
        end,
        ip,
        l4proto,
        port,
        verdict,
    })
}

fn chain(name: &str, hook: Hook, priority: i32, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_owned(),
        hook,
        priority,
        rules,
    }
}

/// The `notrack = true` table for `listen`: pods and hostNetwork clients alike.
pub fn notrack_table(listen: &[SocketAddr]) -> Table {
    let mut pre = Vec::new();
    let mut out = Vec::new();
    let mut input = Vec::new();
    let mut output = Vec::new();
    for a in listen {
        let (ip, port) = (a.ip(), a.port());
        pre.extend(rules(End::To, ip, port, Verdict::NoTrack));
        out.extend(rules(End::From, ip, port, Verdict::NoTrack));
        out.extend(rules(End::To, ip, port, Verdict::NoTrack));
        input.extend(rules(End::To, ip, port, Verdict::Accept));
        output.extend(rules(End::From, ip, port, Verdict::Accept));
    }
    Table {
        name: TABLE.to_owned(),
        chains: vec![
            chain("prerouting", Hook::Prerouting, PRIORITY_RAW, pre),
            chain("output", Hook::Output, PRIORITY_RAW, out),
            chain("input-accept", Hook::Input, PRIORITY_FILTER - 10, input),
            chain("output-accept", Hook::Output, PRIORITY_FILTER - 10, output),
        ],
    }
}

/// The interception table for `ips`: queries to them (from pods, in prerouting, and from
/// the node, in output) and the replies from them skip conntrack, and so kube-proxy's DNAT.
pub fn intercept_table(ips: &[IpAddr]) -> Table {
    let mut pre = Vec::new();
    let mut out = Vec::new();
    for &ip in ips {
        pre.extend(rules(End::To, ip, DNS_PORT, Verdict::NoTrack));
        out.extend(rules(End::To, ip, DNS_PORT, Verdict::NoTrack));
        out.extend(rules(End::From, ip, DNS_PORT, Verdict::NoTrack));
    }
    Table {
        name: INTERCEPT_TABLE.to_owned(),
        chains: vec![
            chain("prerouting", Hook::Prerouting, PRIORITY_RAW, pre),
            chain("output", Hook::Output, PRIORITY_RAW, out),
        ],
    }
}

/// Loads `table` (replacing it). Blocking: call from `spawn_blocking`.
pub fn apply(table: &Table) -> anyhow::Result<()> {
    nfnl::replace(table)
        .map_err(|e| anyhow::anyhow!("loading nftables table inet {}: {e}", table.name))
}

/// Removes table `name`; already gone is success. Blocking.
pub fn remove(name: &str) -> anyhow::Result<()> {
    nfnl::remove(name).map_err(|e| anyhow::anyhow!("removing nftables table inet {name}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn summary(table: &Table) -> Vec<String> {
        table
            .chains
            .iter()
            .flat_map(|c| {
                c.rules.iter().map(move |r| {
                    format!(
                        "{} {:?} {:?} {} {} {}:{}",
                        c.name,
                        c.hook,
                        r.verdict,
                        r.l4proto,
                        matches!(r.end, End::To),
                        r.ip,
                        r.port
                    )
                })
            })
            .collect()
    }

    #[test]
    fn notrack_covers_queries_and_replies_of_each_listen_address() {
        let listen = [
            "169.254.20.10:53".parse().unwrap(),
            "[fd00::a]:5353".parse().unwrap(),
        ];
        let table = notrack_table(&listen);
        assert_eq!(table.name, "nodedns");
        let raw: Vec<i32> = table.chains.iter().map(|c| c.priority).collect();
        assert_eq!(raw, [-300, -300, -10, -10]);
        let s = summary(&table);
        // 2 addresses x 2 protocols: prerouting 4, output 8, input 4, output-accept 4.
        assert_eq!(s.len(), 20);
        assert!(s.contains(&"prerouting Prerouting NoTrack 17 true 169.254.20.10:53".to_owned()));
        assert!(s.contains(&"output Output NoTrack 6 false fd00::a:5353".to_owned()));
        assert!(s.contains(&"input-accept Input Accept 6 true fd00::a:5353".to_owned()));
    }

    #[test]
    fn interception_skips_conntrack_for_port_53_of_each_address_in_the_raw_hooks() {
        let table = intercept_table(&["10.96.0.10".parse().unwrap()]);
        assert_eq!(table.name, "nodedns-intercept");
        assert!(table.chains.iter().all(|c| c.priority == -300));
        let s = summary(&table);
        assert_eq!(
            s,
            [
                "prerouting Prerouting NoTrack 17 true 10.96.0.10:53",
                "prerouting Prerouting NoTrack 6 true 10.96.0.10:53",
                "output Output NoTrack 17 true 10.96.0.10:53",
                "output Output NoTrack 6 true 10.96.0.10:53",
                "output Output NoTrack 17 false 10.96.0.10:53",
                "output Output NoTrack 6 false 10.96.0.10:53",
            ]
        );
    }
}
