//! What `GET /top` answers and `nodedns top` prints: each board's heaviest keys, with the
//! window actually covered and the sampling rate, as JSON (the same structure both ways) and
//! as aligned tables.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{QUERY_SAMPLE, SLICE_SECS, Slice};
use crate::sketch::{Counted, SpaceSaving};
use crate::wire;

/// One key's estimate: the true count lies in `[count - error, count]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// A client IP address, or a name in dotted form without the trailing dot.
    pub key: String,
    pub count: u64,
    pub error: u64,
}

/// The heaviest keys of every board over one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The window asked for, in seconds.
    pub window_seconds: u64,
    /// The seconds the merged slices actually cover (whole slices, and no more than the
    /// process has run; a second begun counts).
    pub covered_seconds: u64,
    /// The resolution of a window.
    pub slice_seconds: u64,
    /// One in this many (on average) of the queries and of the NXDOMAIN replies is recorded
    /// in `clients_by_queries`, `names_by_nxdomain` and `search_bases`, with this weight.
    pub query_sample: u32,
    pub clients_by_queries: Vec<Entry>,
    pub clients_by_misses: Vec<Entry>,
    pub names_by_nxdomain: Vec<Entry>,
    pub names_by_servfail: Vec<Entry>,
    pub search_bases: Vec<Entry>,
}

impl Report {
    pub(super) fn of(s: &Slice, window: u64, covered: u64, n: usize) -> Report {
        Report {
            window_seconds: window,
            covered_seconds: covered,
            slice_seconds: SLICE_SECS,
            query_sample: QUERY_SAMPLE,
            clients_by_queries: clients(&s.clients_by_queries, n),
            clients_by_misses: clients(&s.clients_by_misses, n),
            names_by_nxdomain: names(&s.names_by_nxdomain, n),
            names_by_servfail: names(&s.names_by_servfail, n),
            search_bases: names(&s.search_bases, n),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The boards as aligned tables, heaviest first.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "nodedns top: last {} s asked, {} s covered ({} s slices); \
             queries and NXDOMAIN replies sampled 1 in {} per worker\n",
            self.window_seconds, self.covered_seconds, self.slice_seconds, self.query_sample
        );
        let sampled = format!("(sampled, x{})", self.query_sample);
        let boards: [(&str, &str, &[Entry]); 5] = [
            ("Clients by queries", &sampled, &self.clients_by_queries),
            ("Clients by misses", "", &self.clients_by_misses),
            ("Names by NXDOMAIN", &sampled, &self.names_by_nxdomain),
            ("Names by SERVFAIL", "", &self.names_by_servfail),
            (
                "NXDOMAIN search-list expansions by base name",
                &sampled,
                &self.search_bases,
            ),
        ];
        for (title, note, entries) in boards {
            table(&mut out, title, note, entries);
        }
        out
    }
}

fn table(out: &mut String, title: &str, note: &str, entries: &[Entry]) {
    let _ = writeln!(
        out,
        "\n{title}{}{note}",
        if note.is_empty() { "" } else { " " }
    );
    if entries.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let width = entries
        .iter()
        .map(|e| e.count.to_string().len())
        .max()
        .unwrap_or(0)
        .max("COUNT".len());
    let _ = writeln!(out, "  {:>width$}  {:>6}  KEY", "COUNT", "±");
    for e in entries {
        let _ = writeln!(out, "  {:>width$}  {:>6}  {}", e.count, e.error, e.key);
    }
}

fn clients(s: &SpaceSaving<IpAddr>, n: usize) -> Vec<Entry> {
    entries(s, n, |ip| ip.to_canonical().to_string())
}

fn names(s: &SpaceSaving<Box<[u8]>>, n: usize) -> Vec<Entry> {
    entries(s, n, |name| wire::name_text(name))
}

fn entries<K: std::hash::Hash + Eq + Clone>(
    s: &SpaceSaving<K>,
    n: usize,
    text: impl Fn(&K) -> String,
) -> Vec<Entry> {
    s.top(n)
        .into_iter()
        .map(|Counted { key, count, error }| Entry {
            key: text(&key),
            count,
            error,
        })
        .collect()
}
