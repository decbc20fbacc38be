//! The optional NOTRACK ruleset: rendered as `nft` text by a pure function, applied with
//! `nft -f -`.
//!
//! DNS to a node-local cache is many short flows; tracking each one fills the conntrack
//! table (and UDP entries racing between two sockets are a known source of lost replies), so
//! NodeLocal DNSCache skips conntrack for its address. nodedns owns one table,
//! `inet nodedns`, and replaces it whole in one transaction: creating the table first makes
//! the `delete` valid when it does not exist yet, so applying twice gives the same state.
//! Nothing depends on these rules being present: without them DNS still works, tracked.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The table nodedns owns; nothing else is touched.
pub const TABLE: &str = "nodedns";

/// The ruleset for `listen`: `notrack` for DNS to and from each listen address (pods and
/// hostNetwork clients alike), and `accept` for the same traffic in the filter hooks.
///
/// The accept chains run just before the usual filter priority. In nftables an `accept`
/// ends only this table's evaluation of the hook, so they document intent and let DNS
/// through any later rule of this table; another table's `drop` still wins.
pub fn render(listen: &[SocketAddr]) -> String {
    let mut pre = String::new();
    let mut out = String::new();
    let mut input = String::new();
    let mut output = String::new();
    for addr in listen {
        let (fam, ip, port) = match addr {
            SocketAddr::V4(a) => ("ip", a.ip().to_string(), a.port()),
            SocketAddr::V6(a) => ("ip6", a.ip().to_string(), a.port()),
        };
        let to = format!("{fam} daddr {ip} meta l4proto {{ tcp, udp }} th dport {port}");
        let from = format!("{fam} saddr {ip} meta l4proto {{ tcp, udp }} th sport {port}");
        let _ = writeln!(pre, "\t\t{to} notrack");
        let _ = writeln!(out, "\t\t{from} notrack");
        let _ = writeln!(out, "\t\t{to} notrack");
        let _ = writeln!(input, "\t\t{to} accept");
        let _ = writeln!(output, "\t\t{from} accept");
    }
    format!(
        "table inet {TABLE}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         {pre}\t}}\n\
         \tchain output {{\n\
         \t\ttype filter hook output priority raw; policy accept;\n\
         {out}\t}}\n\
         \tchain input-accept {{\n\
         \t\ttype filter hook input priority filter - 10; policy accept;\n\
         {input}\t}}\n\
         \tchain output-accept {{\n\
         \t\ttype filter hook output priority filter - 10; policy accept;\n\
         {output}\t}}\n\
         }}\n"
    )
}

/// The transaction that removes the table, and succeeds when it is already gone.
pub fn render_teardown() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// Runs `nft -f -` with `ruleset` on stdin. Blocking: call from `spawn_blocking`.
pub fn apply(ruleset: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run `nft`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        anyhow::bail!(
            "`nft -f -` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn renders_notrack_and_accept_for_each_listen_address() {
        let listen = [
            "169.254.20.10:53".parse().unwrap(),
            "[fd00::a]:5353".parse().unwrap(),
        ];
        let expected = "\
table inet nodedns
delete table inet nodedns
table inet nodedns {
\tchain prerouting {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tip daddr 169.254.20.10 meta l4proto { tcp, udp } th dport 53 notrack
\t\tip6 daddr fd00::a meta l4proto { tcp, udp } th dport 5353 notrack
\t}
\tchain output {
\t\ttype filter hook output priority raw; policy accept;
\t\tip saddr 169.254.20.10 meta l4proto { tcp, udp } th sport 53 notrack
\t\tip daddr 169.254.20.10 meta l4proto { tcp, udp } th dport 53 notrack
\t\tip6 saddr fd00::a meta l4proto { tcp, udp } th sport 5353 notrack
\t\tip6 daddr fd00::a meta l4proto { tcp, udp } th dport 5353 notrack
\t}
\tchain input-accept {
\t\ttype filter hook input priority filter - 10; policy accept;
\t\tip daddr 169.254.20.10 meta l4proto { tcp, udp } th dport 53 accept
\t\tip6 daddr fd00::a meta l4proto { tcp, udp } th dport 5353 accept
\t}
\tchain output-accept {
\t\ttype filter hook output priority filter - 10; policy accept;
\t\tip saddr 169.254.20.10 meta l4proto { tcp, udp } th sport 53 accept
\t\tip6 saddr fd00::a meta l4proto { tcp, udp } th sport 5353 accept
\t}
}
";
        assert_eq!(render(&listen), expected);
    }

    #[test]
    fn the_ruleset_replaces_the_table_in_one_transaction() {
        let text = render(&["169.254.20.10:53".parse().unwrap()]);
        let lines: Vec<&str> = text.lines().collect();
        // Create-if-missing, delete, recreate: valid whether or not the table exists.
        assert_eq!(
            lines[..3],
            [
                "table inet nodedns",
                "delete table inet nodedns",
                "table inet nodedns {"
            ]
        );
        assert_eq!(text.matches("notrack").count(), 3);
        assert_eq!(
            render_teardown(),
            "table inet nodedns\ndelete table inet nodedns\n"
        );
    }
}
