//! Longest-suffix routing of a qname to a zone.
//!
//! Zones are matched on whole labels, case-insensitively: `registry.example.com.` goes to
//! `example.com.` before `com.` before `.`, and never to `ample.com.`. A name no zone covers
//! (possible only when no `.` zone is configured) is answered REFUSED by the caller.
//!
//! Every miss is routed, so a lookup hashes only the suffixes whose length some zone name
//! has: with the usual `.` and `cluster.local.`, a name of five labels costs one or two
//! hash probes, not five.

use hashbrown::HashMap;

/// Maps zone names (lowercased wire form) to values of type `T`.
#[derive(Debug)]
pub struct ZoneTable<T> {
    by_name: HashMap<Vec<u8>, T, foldhash::fast::RandomState>,
    /// Bit `n` is set when some zone name is `n` bytes long in wire form (at most 255).
    lengths: [u64; 4],
}

impl<T> ZoneTable<T> {
    pub fn new() -> ZoneTable<T> {
        ZoneTable {
            by_name: HashMap::default(),
            lengths: [0; 4],
        }
    }

    fn has_length(&self, len: usize) -> bool {
        self.lengths
            .get(len / 64)
            .is_some_and(|bits| bits & (1 << (len % 64)) != 0)
    }

    /// Adds a zone by its presentation name (`"cluster.local."`, `"."`). Returns false when
    /// the name is not a valid domain name.
    pub fn insert(&mut self, name: &str, value: T) -> bool {
        match to_wire(name) {
            Some(wire) => {
                let len = wire.len();
                self.lengths[len / 64] |= 1 << (len % 64);
                self.by_name.insert(wire, value);
                true
            }
            None => false,
        }
    }

    /// The zone covering `qname` (lowercased wire form), the longest match first.
    pub fn route(&self, qname: &[u8]) -> Option<&T> {
        let mut at = 0;
        // Each iteration tries the suffix starting at a label boundary, longest first; the
        // last one tried is the root label.
        while at < qname.len() {
            let suffix = &qname[at..];
            if self.has_length(suffix.len())
                && let Some(v) = self.by_name.get(suffix)
            {
                return Some(v);
            }
            let len = usize::from(qname[at]);
            if len == 0 {
                break;
            }
            at += 1 + len;
        }
        None
    }
}

impl<T> Default for ZoneTable<T> {
    fn default() -> Self {
        ZoneTable::new()
    }
}

/// `"Example.COM."` or `"example.com"` to lowercased wire form; `"."` to the root label.
pub fn to_wire(name: &str) -> Option<Vec<u8>> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    if !trimmed.is_empty() {
        for label in trimmed.split('.') {
            let len = u8::try_from(label.len())
                .ok()
                .filter(|l| (1..=63).contains(l))?;
            out.push(len);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    (out.len() <= 255).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn table() -> ZoneTable<&'static str> {
        let mut t = ZoneTable::new();
        assert!(t.insert(".", "root"));
        assert!(t.insert("cluster.local.", "cluster"));
        assert!(t.insert("svc.cluster.local", "svc"));
        assert!(t.insert("10.in-addr.arpa.", "reverse"));
        t
    }

    fn q(name: &str) -> Vec<u8> {
        to_wire(name).unwrap()
    }

    #[test]
    fn longest_suffix_wins() {
        let t = table();
        assert_eq!(
            t.route(&q("kube-dns.kube-system.svc.cluster.local.")),
            Some(&"svc")
        );
        assert_eq!(t.route(&q("pod.cluster.local.")), Some(&"cluster"));
        assert_eq!(t.route(&q("cluster.local.")), Some(&"cluster"));
        assert_eq!(t.route(&q("registry.example.com.")), Some(&"root"));
        assert_eq!(t.route(&q("4.3.2.10.in-addr.arpa.")), Some(&"reverse"));
        assert_eq!(t.route(&q(".")), Some(&"root"));
    }

    #[test]
    fn matches_whole_labels_only() {
        let mut t = ZoneTable::new();
        t.insert("local.", "local");
        assert_eq!(t.route(&q("cluster.local.")), Some(&"local"));
        assert_eq!(t.route(&q("notlocal.")), None);
        assert_eq!(t.route(&q("example.com.")), None);
    }

    #[test]
    fn names_are_case_insensitive_and_dot_optional() {
        let mut t = ZoneTable::new();
        t.insert("Cluster.LOCAL", "c");
        assert_eq!(t.route(&q("a.cluster.local.")), Some(&"c"));
    }

    #[test]
    fn invalid_names_are_rejected() {
        let mut t: ZoneTable<()> = ZoneTable::new();
        assert!(!t.insert("a..b", ()));
        assert!(!t.insert(&"x".repeat(64), ()));
    }
}
